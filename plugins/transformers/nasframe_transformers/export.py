"""Save a pruned transformers model so plain transformers can load it.

A model with the same sizes in every layer (FFN width, heads, KV heads; any hidden size and
depth) is a standard model of a smaller config: ``save_pretrained`` with the updated config,
loadable by ``AutoModelForCausalLM.from_pretrained`` without nasframe. Per-layer sizes are not
expressible in a transformers config; those models are saved with ``nasframe.save``
(architecture ``"transformers"``) and restored by ``nasframe.load``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import nn

from nasframe.errors import UserInputError
from nasframe.io.atomic import atomic_write_directory
from nasframe_transformers.families.registry import family_of
from nasframe_transformers.plain_biases import expressed

# Keys a loaded config may carry that must not be written back: a GGUF file's
# quantization_config makes save_pretrained refuse (the weights are dequantized by then).
_DROPPED_CONFIG_KEYS = ("quantization_config", "_name_or_path")


def clean_config_dict(config: Any) -> dict[str, Any]:
    """The model config as plain JSON data, without loading-time artefacts."""
    data = json.loads(config.to_json_string(use_diff=False))
    for key in _DROPPED_CONFIG_KEYS:
        data.pop(key, None)
    return data


def save_pretrained_pruned(model: nn.Module, directory: str | os.PathLike) -> Path:
    """Write an exported (plain) pruned model as a standard transformers model directory.

    Only a model with the same sizes in every layer has a transformers config; the export
    already wrote those sizes into ``model.config``. Biases reconstruction added are written
    with the config flags that make a plain model have them (Llama's ``mlp_bias``,
    ``attention_bias``); a family without such a flag is refused with the projection's name.
    The files are written to a temporary sibling directory and swapped in whole, so an
    interrupted save never leaves a half-written or mixed model.
    """
    from transformers import AutoConfig

    family = family_of(model)
    if family is None:
        raise UserInputError(
            f"{type(model).__name__} is not a supported transformers model; save it with "
            "nasframe.save instead."
        )
    sizes, problems = family.config_sizes(model)
    if problems:
        per_layer = any("between layers" in problem for problem in problems)
        hint = " (or search with --uniform)" if per_layer else ""
        raise UserInputError(
            f"this pruned model has no plain transformers config ({'; '.join(problems)}); save "
            f"it with nasframe.save and load it with nasframe.load{hint}."
        )
    data = clean_config_dict(model.config) | sizes
    model_type = data.pop("model_type")
    model.config = AutoConfig.for_model(model_type, **data)
    # Biases reconstruction added: flags for them, zeros for the projections they also cover.
    flags, zero = family.bias_flags(model)
    with expressed(model.config, flags, zero):
        return atomic_write_directory(directory, model.save_pretrained)


# The model classes a saved architecture may name: a fixed list, so nothing in a metadata
# file can make nasframe.load import or call anything else.
AUTO_CLASSES = ("AutoModelForCausalLM", "AutoModelForMaskedLM", "AutoModel")


def build_from_config(
    config: dict[str, Any], auto_class: str = "AutoModelForCausalLM"
) -> nn.Module:
    """An untrained model of ``config`` (how ``nasframe.load`` rebuilds the architecture)."""
    import transformers

    if auto_class not in AUTO_CLASSES:
        raise UserInputError(
            f"unknown model class {auto_class!r} in the saved architecture; expected one of "
            f"{', '.join(AUTO_CLASSES)} (re-export the model)."
        )
    data = dict(config)
    model_type = data.pop("model_type")
    auto = getattr(transformers, auto_class)
    return auto.from_config(transformers.AutoConfig.for_model(model_type, **data))

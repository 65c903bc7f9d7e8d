"""Save a pruned transformers model so plain transformers can load it.

A model whose FFN width is the same in every layer is a standard model of a smaller
``intermediate_size``: ``save_pretrained`` with an updated config, loadable by
``AutoModelForCausalLM.from_pretrained`` without nasframe. Per-layer widths are not expressible
in a transformers config; those models are saved with ``nasframe.save`` (architecture
``"transformers"``) and restored by ``nasframe.load``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from nasframe.errors import UserInputError

# Keys a loaded config may carry that must not be written back: a GGUF file's
# quantization_config makes save_pretrained refuse (the weights are dequantized by then).
_DROPPED_CONFIG_KEYS = ("quantization_config", "_name_or_path")


def clean_config_dict(config: Any) -> dict[str, Any]:
    """The model config as plain JSON data, without loading-time artefacts."""
    data = json.loads(config.to_json_string(use_diff=False))
    for key in _DROPPED_CONFIG_KEYS:
        data.pop(key, None)
    return data


def uniform_intermediate_size(model: nn.Module) -> int | None:
    """The FFN width if every layer has the same one, else None."""
    from nasframe_transformers.llama import _decoder_layers

    widths = {layer.mlp.down_proj.in_features for layer in _decoder_layers(model)}
    return widths.pop() if len(widths) == 1 else None


def save_pretrained_pruned(model: nn.Module, directory: str | os.PathLike) -> Path:
    """Write an exported (plain) pruned model as a standard transformers model directory.

    The files are written to a temporary sibling directory first and moved into place, so an
    interrupted save never leaves a half-written model.
    """
    from transformers import AutoConfig

    width = uniform_intermediate_size(model)
    if width is None:
        raise UserInputError(
            "the FFN width differs between layers, which a transformers config cannot express; "
            "save it with nasframe.save and load it with nasframe.load, or search with "
            "--uniform."
        )
    data = clean_config_dict(model.config)
    data["intermediate_size"] = width
    model_type = data.pop("model_type")
    model.config = AutoConfig.for_model(model_type, **data)
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(staging)
        for file in staging.iterdir():
            os.replace(file, target / file.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def build_from_config(config: dict[str, Any]) -> nn.Module:
    """An untrained causal LM of ``config`` (how ``nasframe.load`` rebuilds the architecture)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    data = dict(config)
    model_type = data.pop("model_type")
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **data))

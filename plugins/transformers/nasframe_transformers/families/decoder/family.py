"""The standard decoder, recognised from its module structure and config (any class name).

Asked after the hand-written families: a transformers model with a stack of layers that no
other family claims is this family's. ``describe`` recognises it
(:mod:`~nasframe_transformers.families.decoder.structure`) or stops with one sentence naming
the module it does not understand, never with a torch.fx trace error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from nasframe.space.family import ModelFamily
from nasframe.space.ties import TieAnalysis
from nasframe_transformers.families.decoder.describe import describe_decoder
from nasframe_transformers.families.decoder.probe import find_post_norms
from nasframe_transformers.families.decoder.rows_probe import check_fused_rows
from nasframe_transformers.families.decoder.scaled_embedding import fold_embedding_scale
from nasframe_transformers.families.decoder.sizes import config_sizes, states_head_dim
from nasframe_transformers.families.decoder.structure import find_stack, recognise
from nasframe_transformers.families.protocol import write_config_sizes
from nasframe_transformers.modules import decoder_layers
from nasframe_transformers.modules.decoder_attention import (
    DynamicDecoderAttention,
    plain_config,
    setup_decoder_heads,
)
from nasframe_transformers.plain_biases import bias_flags as _bias_flags


def bias_flag_names(config: Any) -> tuple[str, ...]:
    """The config's boolean flags that switch projection biases on (``attention_bias``,
    ``mlp_bias``, OPT's ``enable_bias``)."""
    return tuple(
        key
        for key, value in vars(config).items()
        if "bias" in key and isinstance(value, bool) and not key.startswith("_")
    )


class DecoderFamily:
    """Any transformers decoder the structure description recognises; or, with
    ``model_types``, the decoders of those model types only (a named family that is this
    description plus what its configs' code says and their fields do not)."""

    def __init__(
        self,
        before: Sequence[ModelFamily] = (),
        *,
        name: str = "decoder",
        model_types: frozenset[str] = frozenset(),
        head_dim_in_config: bool = False,
    ) -> None:
        #: A short name for messages and listings.
        self.name = name
        #: Families asked first: a model they claim is not this family's.
        self.before = tuple(before)
        #: The model types this family claims (empty: any).
        self.model_types = frozenset(model_types)
        #: Whether the family's attention reads a ``head_dim`` written into its config even
        #: when the config class has no such field (Qwen2's), so a plain config can state a
        #: head width apart from hidden_size / num_attention_heads.
        self.head_dim_in_config = head_dim_in_config

    def matches(self, model: nn.Module) -> bool:
        """A transformers model with a config and a stack of layers no other family claims
        (of one of ``model_types``, where the family names them)."""
        if not type(model).__module__.startswith("transformers."):
            return False
        config = getattr(model, "config", None)
        if config is None:
            return False
        if self.model_types and getattr(config, "model_type", None) not in self.model_types:
            return False
        if find_stack(model) is None:
            return False
        return not any(family.matches(model) for family in self.before)

    def head_dim_free(self, config: Any) -> bool:
        """Whether ``config`` can state the head width apart from the hidden size."""
        return self.head_dim_in_config or states_head_dim(config)

    def describe(self, model: nn.Module) -> TieAnalysis:
        """Tied slots of the recognised decoder (the model is left as it was)."""
        layout = recognise(model)
        check_fused_rows(model, layout)
        return describe_decoder(
            model, layout, find_post_norms(model, layout), self.head_dim_free(model.config)
        )

    def prepare(self, model: nn.Module) -> None:
        """Let the base model see only its kept layers while it runs."""
        base, stack = find_stack(model)
        base_model = model.get_submodule(base.rstrip("."))
        layers = list(getattr(base_model, stack))
        attention = next(
            (
                name
                for name, module in (layers[0].named_modules() if layers else ())
                if isinstance(module, DynamicDecoderAttention)
            ),
            "",
        )
        decoder_layers.install(base_model, stack, attention)

    def config_sizes(self, model: nn.Module) -> tuple[dict[str, Any], list[str]]:
        """The config fields an exported decoder's sizes set, and why no plain config can."""
        return config_sizes(model, recognise(model), self.head_dim_free(model.config))

    def bias_flags(self, model: nn.Module) -> tuple[dict[str, bool], list[nn.Linear]]:
        """Config flags for the biases reconstruction added (see ``plain_biases``)."""
        layout = recognise(model)
        layers = list(model.get_submodule(layout.stack_path))
        return _bias_flags(model, layers, bias_flag_names(model.config))

    def finalize_export(self, model: nn.Module) -> None:
        """Drop the kept-layer view, number the kept layers 0..n-1 (their ``layer_types``
        following), keep a scaled embedding's outputs for a plain reload, write the sizes,
        and give each attention the model's own config where it states its head counts."""
        layout = recognise(model)
        base = model.get_submodule(layout.base.rstrip("."))
        decoder_layers.remove(base)
        layers = list(model.get_submodule(layout.stack_path))
        if layout.layers:
            decoder_layers.renumber(layers, layout.layers[0].attention.path, model.config)
        final_norm = model.get_submodule(layout.final_norms[-1]) if layout.final_norms else None
        embedding = model.get_submodule(layout.embeddings[0])
        fold_embedding_scale(model, embedding, model.config.hidden_size, final_norm)
        write_config_sizes(self, model)
        for layer, recognised in zip(layers, layout.layers, strict=True):
            plain_config(layer.get_submodule(recognised.attention.path), model.config)

    def gradient_setups(self) -> dict[type, Any]:
        """gradnas masks the KV groups and query heads per group on the output projection."""
        return {DynamicDecoderAttention: setup_decoder_heads}

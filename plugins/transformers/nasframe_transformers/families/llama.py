"""The search space of a Llama-style decoder (Llama, Mistral, Qwen2), described directly.

transformers 5 models are not torch.fx-traceable, so the family's dimensions are listed here:

- ``model.hidden_size``: the residual stream — the embeddings, every norm, every projection's
  input, the attention and FFN output projections and the LM head; tied embeddings stay tied
  (one parameter, one hparam). Its writes are the embeddings, each attention and each
  ``down_proj``, which is where gradnas masks it.
- ``model.layers.{i}.mlp.intermediate_size``: the SwiGLU width (gate/up outputs, down input);
  gradnas masks it on ``down_proj``'s input, after the gated product.
- ``model.layers.{i}.self_attn.num_key_value_heads`` and ``.query_heads_per_group``: see
  :mod:`nasframe_transformers.modules.attention`.
- ``model.layers.depth``: whole decoder layers, gated on their residual contribution.
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from nasframe.modules.depth import DynamicLayerList
from nasframe.modules.embedding import DynamicEmbedding
from nasframe.modules.linear import DynamicLinear
from nasframe.space.ties import TieAnalysis
from nasframe_transformers.families.protocol import write_config_sizes
from nasframe_transformers.families.tie_builder import TieBuilder
from nasframe_transformers.modules.attention import (
    DynamicGQAttention,
    dynamic_attention_class,
    dynamic_rmsnorm_class,
    setup_gqa_heads,
)
from nasframe_transformers.modules.kept_layers import (
    install_kept_layer_view,
    remove_kept_layer_view,
)
from nasframe_transformers.plain_biases import bias_flags as _bias_flags

LLAMA_STYLE_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2"})
# Config flags that give projections biases (Llama has both; Mistral and Qwen2 neither).
BIAS_FLAGS = ("attention_bias", "mlp_bias")


def _decoder_layers(model: nn.Module) -> nn.ModuleList | None:
    """The decoder layers of a Llama-style model (bare or with an LM head), else None."""
    base = getattr(model, "model", model)
    layers = getattr(base, "layers", None)
    return layers if isinstance(layers, nn.ModuleList) else None


def _every_head_count_divides(model: nn.Module) -> int:
    """The least common multiple of every query-head count pruning can reach: transformers
    requires the hidden size to be a multiple of the number of heads."""
    multiple = 1
    for layer in _decoder_layers(model):
        attention = layer.self_attn
        kv_heads = attention.k_proj.out_features // attention.head_dim
        per_group = attention.q_proj.out_features // (attention.head_dim * kv_heads)
        for groups in range(1, kv_heads + 1):
            for heads in range(1, per_group + 1):
                multiple = math.lcm(multiple, groups * heads)
    return multiple


class LlamaFamily:
    """Llama-style decoders: Llama, Mistral and Qwen2 (see the module docstring)."""

    name = "llama"

    def matches(self, model: nn.Module) -> bool:
        """A Llama, Mistral or Qwen2 model of transformers (with or without an LM head)."""
        config = getattr(model, "config", None)
        if getattr(config, "model_type", None) not in LLAMA_STYLE_MODEL_TYPES:
            return False
        if not type(model).__module__.startswith("transformers."):
            return False
        layers = _decoder_layers(model)
        return layers is not None and all(
            isinstance(getattr(layer.mlp, name, None), nn.Linear)
            for layer in layers
            for name in ("gate_proj", "up_proj", "down_proj")
        )

    def describe(self, model: nn.Module) -> TieAnalysis:
        """Tied slots of a Llama-style model (the model is not changed: :meth:`prepare`
        installs the kept-layer view once it is converted)."""
        prefix = "model." if hasattr(model, "model") else ""
        base = getattr(model, "model", model)
        groups: list[list[tuple[str, str]]] = []
        names: list[str] = []
        frozen: list[tuple[str, str]] = []
        build = TieBuilder()
        use = build.use

        embed = use(f"{prefix}embed_tokens", DynamicEmbedding)
        build.hidden.append((embed, "embedding_dim"))
        build.writers.append(embed)
        layers = use(f"{prefix}layers", DynamicLayerList)
        for index, layer in enumerate(_decoder_layers(model)):
            path = f"{prefix}layers.{index}"
            norm_class = dynamic_rmsnorm_class(type(layer.input_layernorm))
            attention = use(f"{path}.self_attn", dynamic_attention_class(type(layer.self_attn)))
            gate = use(f"{path}.mlp.gate_proj", DynamicLinear)
            up = use(f"{path}.mlp.up_proj", DynamicLinear)
            down = use(f"{path}.mlp.down_proj", DynamicLinear)
            norms = [
                use(f"{path}.input_layernorm", norm_class),
                use(f"{path}.post_attention_layernorm", norm_class),
            ]
            build.hidden += [(norm, "hidden_size") for norm in norms]
            build.hidden += [(attention, "hidden_size"), (gate, "in_features"), (up, "in_features")]
            build.hidden.append((down, "out_features"))
            build.writers += [attention, down]
            groups += [
                [(gate, "out_features"), (up, "out_features"), (down, "in_features")],
                [(attention, "num_key_value_heads")],
                [(attention, "query_heads_per_group")],
            ]
            names += [
                f"{path}.mlp.intermediate_size",
                f"{path}.self_attn.num_key_value_heads",
                f"{path}.self_attn.query_heads_per_group",
            ]
        final_norm = use(f"{prefix}norm", dynamic_rmsnorm_class(type(base.norm)))
        build.hidden.append((final_norm, "hidden_size"))
        lm_head = getattr(model, "lm_head", None)
        if isinstance(lm_head, nn.Linear):
            use("lm_head", DynamicLinear)
            build.hidden.append(("lm_head", "in_features"))
            frozen.append(("lm_head", "out_features"))
        return build.analysis(
            groups,
            names,
            frozen,
            prefix,
            layers,
            uniform_multiples={f"{prefix}hidden_size": _every_head_count_divides(model)},
        )

    def config_sizes(self, model: nn.Module) -> tuple[dict[str, Any], list[str]]:
        """The config fields an exported Llama-style model's sizes set, and why no plain config
        can describe it (sizes that differ between layers, sizes transformers rejects)."""
        layers = list(_decoder_layers(model))
        per_layer = {
            "intermediate_size": {layer.mlp.down_proj.in_features for layer in layers},
            "num_attention_heads": {
                layer.self_attn.q_proj.out_features // layer.self_attn.head_dim for layer in layers
            },
            "num_key_value_heads": {
                layer.self_attn.k_proj.out_features // layer.self_attn.head_dim for layer in layers
            },
        }
        problems = [
            f"{key} differs between layers" for key, values in per_layer.items() if len(values) > 1
        ]
        sizes: dict[str, Any] = {
            key: next(iter(values)) for key, values in per_layer.items() if len(values) == 1
        }
        base = getattr(model, "model", model)
        sizes["hidden_size"] = base.embed_tokens.embedding_dim
        sizes["num_hidden_layers"] = len(layers)
        if layers:
            sizes["head_dim"] = layers[0].self_attn.head_dim
        heads = sizes.get("num_attention_heads")
        if heads and sizes["hidden_size"] % heads:
            problems.append(
                f"hidden_size {sizes['hidden_size']} is not a multiple of num_attention_heads "
                f"{heads}, which transformers' config validation requires"
            )
        return sizes, problems

    def bias_flags(self, model: nn.Module) -> tuple[dict[str, bool], list[nn.Linear]]:
        """The config flags a plain model needs for the biases reconstruction added to this
        exported model, and the projections to save with zero biases (see ``plain_biases``)."""
        return _bias_flags(model, list(_decoder_layers(model)), BIAS_FLAGS)

    def finalize_export(self, model: nn.Module) -> None:
        """Renumber the kept layers and write the sizes into the exported model's config.

        Layer indices select each layer's cache slot and attention type, so after layers are
        removed they must count 0..n-1 again, with ``config.layer_types`` following them. Sizes
        that differ between layers cannot be written; ``nasframe.load`` restores such models.
        """
        remove_kept_layer_view(getattr(model, "model", model))
        config = model.config
        layer_types = getattr(config, "layer_types", None)
        kept_types = []
        for new_index, layer in enumerate(_decoder_layers(model)):
            old_index = layer.self_attn.layer_idx
            if layer_types is not None:
                kept_types.append(layer_types[old_index])
            layer.self_attn.layer_idx = new_index
            if hasattr(layer, "layer_idx"):
                layer.layer_idx = new_index
        if layer_types is not None:
            config.layer_types = kept_types
        write_config_sizes(self, model)

    def prepare(self, model: nn.Module) -> None:
        """Let the base model see only its kept layers while it runs (see
        :mod:`nasframe_transformers.modules.kept_layers`)."""
        install_kept_layer_view(getattr(model, "model", model))

    def gradient_setups(self) -> dict[type, Any]:
        """gradnas masks the KV groups and the query heads per group on ``o_proj``'s input."""
        return {DynamicGQAttention: setup_gqa_heads}


LLAMA = LlamaFamily()


def describe_ties(model: nn.Module) -> TieAnalysis | None:
    """Tied slots of a Llama-style model, or None when ``model`` is not one."""
    return LLAMA.describe(model) if LLAMA.matches(model) else None

"""What an exported decoder's sizes write into its config, and what a plain config cannot say.

Sizes are read from the exported modules and written under the names the config uses:
``hidden_size``, ``num_hidden_layers``, ``num_attention_heads``, ``num_key_value_heads``,
``head_dim`` and the FFN width as ``intermediate_size``, ``ffn_dim`` or ``n_inner`` (configs
map their own spellings, such as GPT-J's ``n_embd``, onto these). A config that has no
``head_dim`` derives it as ``hidden_size // num_attention_heads``, so only a model whose
hidden size is its heads times their width is plain there, unless its family declares that
a ``head_dim`` written into the config is read back (Qwen2's, in
:mod:`nasframe_transformers.families.llama`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from nasframe_transformers.families.decoder.structure import DecoderLayout

FFN_KEYS = ("intermediate_size", "ffn_dim", "n_inner")


def ffn_key(config: Any) -> str | None:
    """The config field that states the FFN width."""
    return next((key for key in FFN_KEYS if hasattr(config, key)), None)


def states_head_dim(config: Any) -> bool:
    """Whether the config states the head width apart from the hidden size."""
    return isinstance(getattr(config, "head_dim", None), int)


def config_sizes(
    model: nn.Module, layout: DecoderLayout, head_dim_free: bool
) -> tuple[dict[str, Any], list[str]]:
    """The config fields the exported ``model``'s sizes set, and why no plain config can
    describe it (empty when one can); ``head_dim_free`` says whether the config can state
    the head width (:func:`states_head_dim`, or a family that declares it)."""
    config = model.config
    layers = list(model.get_submodule(layout.stack_path))
    ffn = ffn_key(config)
    # The FFN width first, then the head counts: the order sizes and problems are listed in.
    per_layer: dict[str, set[int]] = {ffn: set()} if ffn is not None else {}
    per_layer |= {"num_attention_heads": set(), "num_key_value_heads": set()}
    head_dims: set[int] = set()
    for layer, recognised in zip(layers, layout.layers, strict=True):
        attention = recognised.attention  # counts read from the exported shapes
        head_dims.add(attention.head_dim)
        per_layer["num_attention_heads"].add(attention.heads)
        per_layer["num_key_value_heads"].add(attention.kv_heads)
        if ffn is not None:
            per_layer[ffn].add(layer.get_submodule(recognised.mlp_output).in_features)
    problems = [
        f"{key} differs between layers" for key, values in per_layer.items() if len(values) > 1
    ]
    sizes: dict[str, Any] = {key: next(iter(v)) for key, v in per_layer.items() if len(v) == 1}
    sizes["hidden_size"] = model.get_submodule(layout.embeddings[0]).embedding_dim
    sizes["num_hidden_layers"] = len(layers)
    heads, kv = sizes.get("num_attention_heads"), sizes.get("num_key_value_heads")
    if not hasattr(config, "num_key_value_heads"):
        sizes.pop("num_key_value_heads", None)
        if heads is not None and kv is not None and heads != kv:
            problems.append("the config has no num_key_value_heads to state fewer KV heads")
    if ffn is None and layers:
        problems.append("the config names no FFN width (intermediate_size, ffn_dim, n_inner)")
    head_dim = next(iter(head_dims)) if len(head_dims) == 1 else None
    if head_dim_free and head_dim is not None:
        sizes["head_dim"] = head_dim
    elif heads and head_dim is not None and sizes["hidden_size"] != heads * head_dim:
        problems.append(
            f"the config derives head_dim as hidden_size // num_attention_heads, so hidden_size "
            f"{sizes['hidden_size']} must equal {heads} heads x head_dim {head_dim}"
        )
    if heads and sizes["hidden_size"] % heads:
        problems.append(
            f"hidden_size {sizes['hidden_size']} is not a multiple of num_attention_heads "
            f"{heads}, which transformers' config validation requires"
        )
    return sizes, problems

"""Recognise a standard decoder from what its modules are and the sizes its config names.

A decoder is a stack of layers (the ``nn.ModuleList`` of identical layers holding most
parameters); around it sit embeddings of the hidden width (tokens, learned positions), final
norms and heads that read the hidden size. Each layer holds an attention block (separate
query/key/value projections of ``num_attention_heads``/``num_key_value_heads`` heads of
``head_dim``, or one fused projection: Phi-3's ``qkv_proj`` of query rows, then key rows,
then value rows, or GPT-NeoX's ``query_key_value`` of [query, key, value] rows per head; and
an output projection; norms over one head, or over all heads, which keep the heads whole), an
MLP (one or two input projections to the FFN width, or one fused gate/up projection of twice
the width, and one output projection back) and norms over the hidden size. Whatever holds
parameters and fits none of these (a mixture-of-experts block among them) stops the
description with one sentence naming it.
"""

from __future__ import annotations

from torch import nn

from nasframe_transformers.families.decoder.attention_layout import recognise_attention
from nasframe_transformers.families.decoder.experts import find_experts
from nasframe_transformers.families.decoder.layout import (
    AttentionLayout,
    DecoderLayout,
    LayerLayout,
    is_norm,
    leaves,
    not_understood,
)

__all__ = [
    "AttentionLayout",
    "DecoderLayout",
    "LayerLayout",
    "find_stack",
    "is_norm",
    "not_understood",
    "recognise",
    "recognise_layer",
]


def find_stack(model: nn.Module) -> tuple[str, str] | None:
    """(base path with a trailing dot or "", attribute) of the layer stack, or None: the
    ``ModuleList`` of same-type parameterised layers holding the most parameters."""
    best, best_count = None, 0
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or not len(module):
            continue
        layers = list(module._modules.values())
        if len({type(layer) for layer in layers}) != 1:
            continue
        count = sum(p.numel() for p in module.parameters())
        if count > best_count:
            best, best_count = name, count
    if best is None:
        return None
    parent, _, attribute = best.rpartition(".")
    return (f"{parent}." if parent else ""), attribute


def recognise_layer(layer: nn.Module, path: str, hidden: int) -> LayerLayout:
    """The attention, MLP and norms of one decoder layer."""
    experts = find_experts(layer, path)
    if experts is not None:
        raise not_understood(*experts)
    attention = recognise_attention(layer, path, hidden)
    inside = f"{attention.path}."
    linears: list[tuple[str, nn.Linear]] = []
    norms: list[str] = []
    for name, module in leaves(layer, hidden):
        if name.startswith(inside):
            continue
        if type(module) is nn.Linear:
            linears.append((name, module))
        elif is_norm(module, hidden):
            norms.append(name)
        else:
            raise not_understood(f"{path}.{name}", module, "neither a projection nor a norm")
    outputs = [name for name, linear in linears if linear.out_features == hidden]
    if not outputs:
        raise not_understood(path, layer, "no MLP projection back to the hidden size")
    output = outputs[-1]
    width = layer.get_submodule(output).in_features
    inputs = [(name, linear) for name, linear in linears if name != output]
    packed = [
        name
        for name, linear in inputs
        if len(inputs) == 1 and (linear.in_features, linear.out_features) == (hidden, 2 * width)
    ]
    for name, linear in inputs:
        if name not in packed and (linear.in_features, linear.out_features) != (hidden, width):
            raise not_understood(
                f"{path}.{name}",
                linear,
                f"a projection that is not {hidden} -> {width} (the MLP's input)",
            )
    if len(inputs) not in (1, 2):
        raise not_understood(path, layer, f"{len(inputs)} MLP input projections (1 or 2 expected)")
    return LayerLayout(attention, [name for name, _ in inputs], output, width, norms, packed)


def _input_embedding(model: nn.Module) -> nn.Embedding | None:
    try:
        embedding = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    return embedding if isinstance(embedding, nn.Embedding) else None


def recognise(model: nn.Module) -> DecoderLayout:
    """The layout of ``model``, or a ``UserInputError`` naming what does not fit it."""
    found = find_stack(model)
    if found is None:
        raise not_understood("", model, "no stack of decoder layers (an nn.ModuleList)")
    base, stack = found
    hidden = getattr(model.config, "hidden_size", None)
    embedding = _input_embedding(model)
    if embedding is not None:
        hidden = embedding.embedding_dim  # an exported model's config may still be unpruned
    if not isinstance(hidden, int):
        raise not_understood("", model, "a config without an integer hidden_size")
    stack_path = f"{base}{stack}"
    layers = [
        recognise_layer(layer, f"{stack_path}.{index}", hidden)
        for index, layer in enumerate(model.get_submodule(stack_path))
    ]
    embeddings, final_norms, heads = [], [], []
    for name, module in leaves(model, hidden):
        if name.startswith(f"{stack_path}."):
            continue
        if isinstance(module, nn.Embedding) and module.embedding_dim == hidden:
            embeddings.append(name)
        elif is_norm(module, hidden):
            final_norms.append(name)
        elif type(module) is nn.Linear and module.in_features == hidden:
            heads.append(name)
        else:
            raise not_understood(
                name,
                module,
                f"a module outside the layers that does not read "
                f"or write the hidden size {hidden} as an embedding, norm or head",
            )
    if not embeddings:
        raise not_understood("", model, f"no token embedding of the hidden size {hidden}")
    return DecoderLayout(base, stack, hidden, embeddings, final_norms, heads, layers)

"""Recognise a standard decoder from what its modules are and the sizes its config names.

A decoder is a stack of layers (the ``nn.ModuleList`` of identical layers holding most
parameters); around it sit embeddings of the hidden width (tokens, learned positions), final
norms and heads that read the hidden size. Each layer holds an attention block (separate
query/key/value projections of ``num_attention_heads``/``num_key_value_heads`` heads of
``head_dim``, or one fused projection of query rows, then key rows, then value rows, as
Phi-3's ``qkv_proj``; and an output projection), an MLP (one or two input projections to the
FFN width, or one fused gate/up projection of twice the width, and one output projection
back) and norms over the hidden size. Whatever holds
parameters and fits none of these stops the description with one sentence naming it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from nasframe.errors import UserInputError
from nasframe_transformers.modules.swapped import has_only_sliceable_state

QUERY, KEY, VALUE = ("q_proj", "query", "q"), ("k_proj", "key", "k"), ("v_proj", "value", "v")
OUTPUT = ("o_proj", "out_proj", "dense", "o")
ROLE_NAMES = (QUERY, KEY, VALUE, OUTPUT)
FUSED_QKV = ("qkv_proj", "query_key_value", "c_attn", "Wqkv", "qkv", "W_pack")
#: Fused projections whose rows are all query heads, then all KV heads' keys, then values.
FUSED_CONTIGUOUS = ("qkv_proj",)


@dataclass
class AttentionLayout:
    """An attention block: its path in the layer and its projections by role."""

    path: str
    roles: dict[str, str]
    head_dim: int
    heads: int
    kv_heads: int
    #: Fused projections: name -> sections (roles, in row order); empty when separate.
    fused: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass
class LayerLayout:
    """One decoder layer: attention, MLP projections (paths in the layer), hidden norms."""

    attention: AttentionLayout
    mlp_inputs: list[str]
    mlp_output: str
    mlp_width: int
    norms: list[str]
    #: MLP inputs that fuse the gate and up projections (rows: gate, then up).
    mlp_packed: list[str] = field(default_factory=list)
    #: Block ("attention" / "mlp") -> the norm its output passes through before the residual.
    post_norms: dict[str, str] = field(default_factory=dict)

    @property
    def mlp_container(self) -> str:
        """The MLP's module path in the layer (``"mlp."``), or "" when inline (OPT)."""
        parent = self.mlp_output.rpartition(".")[0]
        return f"{parent}." if parent else ""


@dataclass
class DecoderLayout:
    """The recognised decoder: paths from the model root."""

    base: str  # "" or "model." (with the dot)
    stack: str  # the layer list's attribute in the base model
    hidden: int
    embeddings: list[str]
    final_norms: list[str]
    heads: list[str]
    layers: list[LayerLayout]

    @property
    def stack_path(self) -> str:
        return f"{self.base}{self.stack}"


def not_understood(path: str, module: nn.Module, what: str) -> UserInputError:
    """The one-line error for a module the decoder description cannot express."""
    return UserInputError(
        f"nasframe's decoder description does not understand {path or 'the model'} "
        f"({type(module).__name__}): {what}; only standard decoder layers (attention with "
        "separate or qkv_proj-fused q/k/v projections, a gated, gate/up-fused or two-matrix "
        "MLP, norms) can be pruned."
    )


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


def is_norm(module: nn.Module, size: int) -> bool:
    """A norm over ``size`` channels: a LayerNorm of that shape, or a module whose only
    parameters are vectors of that size (an RMSNorm of any formula)."""
    if isinstance(module, nn.LayerNorm):
        return tuple(module.normalized_shape) == (size,)
    if isinstance(module, nn.Linear | nn.Embedding) or list(module.children()):
        return False
    return has_only_sliceable_state(module, size)


def _parameterised_leaves(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    return [
        (f"{prefix}{name}", m)
        for name, m in module.named_modules()
        if name and any(True for _ in m.parameters(recurse=False))
    ]


def _child(module: nn.Module, names: tuple[str, ...]) -> str | None:
    return next((n for n in names if isinstance(getattr(module, n, None), nn.Linear)), None)


def _fused_roles(module: nn.Module, where: str) -> tuple[dict[str, str | None], dict]:
    """The roles of an attention with a fused q/k/v projection, and its fused sections."""
    fused = next((n for n in FUSED_QKV if isinstance(getattr(module, n, None), nn.Module)), "")
    if not fused:
        return {}, {}
    child = getattr(module, fused)
    if fused not in FUSED_CONTIGUOUS or type(child) is not nn.Linear:
        raise not_understood(
            f"{where}.{fused}",
            child,
            "a fused query/key/value projection of an unknown row layout (only separate "
            "q/k/v projections and qkv_proj's query, key, value rows are understood so far)",
        )
    roles = {r: f"{fused}.{r}" for r in "qkv"} | {"o": _child(module, OUTPUT)}
    return roles, {fused: ("q", "k", "v")}


def _sections(module: nn.Module, fused: dict[str, tuple[str, ...]], head_dim: int) -> list:
    """Stand-ins with the q/k/v sections' shapes (query rows are the output's inputs)."""
    name = next(iter(fused))
    linear, o = getattr(module, name), getattr(module, _child(module, OUTPUT) or "")
    rest = linear.out_features - o.in_features
    if rest <= 0 or rest % (2 * head_dim):
        return [nn.Linear(linear.in_features, 0, device="meta")] * 3
    rows = (o.in_features, rest // 2, rest // 2)
    return [nn.Linear(linear.in_features, n, bias=False, device="meta") for n in rows]


def recognise_attention(layer: nn.Module, path: str, hidden: int) -> AttentionLayout:
    """The attention block of ``layer``: the submodule with q/k/v (separate or fused) and
    output projections."""
    for name, module in layer.named_modules():
        if not name:
            continue
        where = f"{path}.{name}"
        roles, fused = _fused_roles(module, where)
        if not fused:
            roles = {r: _child(module, n) for r, n in zip("qkvo", ROLE_NAMES, strict=True)}
        if None in roles.values():
            continue
        head_dim = vars(module).get("head_dim")
        if not isinstance(head_dim, int):
            raise not_understood(where, module, "an attention without an integer head_dim")
        if fused:
            q, k, v = _sections(module, fused, head_dim)
            o = getattr(module, roles["o"])
        else:
            q, k, v, o = (getattr(module, roles[r]) for r in "qkvo")
        ok = (
            q.in_features == k.in_features == v.in_features == o.out_features == hidden
            and k.out_features == v.out_features
            and k.out_features % head_dim == 0
            and q.out_features % k.out_features == 0
            and o.in_features == q.out_features
        )
        if not ok:
            raise not_understood(
                where,
                module,
                f"projection shapes that are not heads x head_dim {head_dim} "
                f"over hidden size {hidden}",
            )
        heads, kv = q.out_features // head_dim, k.out_features // head_dim
        for inner, child in _parameterised_leaves(module):
            if inner in roles.values() or inner in fused:
                continue
            size = next(iter(child.parameters())).shape[0]
            if not has_only_sliceable_state(child, head_dim):
                what = (
                    "a norm across all heads"
                    if size in (q.out_features, k.out_features)
                    else ("a parameterised module inside the attention")
                )
                raise not_understood(f"{where}.{inner}", child, what)
        return AttentionLayout(name, roles, head_dim, heads, kv, fused)  # type: ignore[arg-type]
    raise not_understood(path, layer, "no attention block with q/k/v and output projections")


def recognise_layer(layer: nn.Module, path: str, hidden: int) -> LayerLayout:
    """The attention, MLP and norms of one decoder layer."""
    attention = recognise_attention(layer, path, hidden)
    inside = f"{attention.path}."
    linears: list[tuple[str, nn.Linear]] = []
    norms: list[str] = []
    for name, module in _parameterised_leaves(layer):
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
    for name, module in _parameterised_leaves(model):
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

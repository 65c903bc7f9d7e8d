"""Recognise a decoder layer's attention block: its q/k/v (separate or fused) and output
projections, the head width and counts, and the norms inside it (over one head, or over
all heads, which keep the heads whole)."""

from __future__ import annotations

from torch import nn

from nasframe_transformers.families.decoder.layout import (
    AttentionLayout,
    is_norm,
    leaves,
    not_understood,
)
from nasframe_transformers.modules.decoder_attention import head_dim_of
from nasframe_transformers.modules.swapped import has_only_sliceable_state

QUERY, KEY, VALUE = ("q_proj", "query", "q"), ("k_proj", "key", "k"), ("v_proj", "value", "v")
OUTPUT = ("o_proj", "out_proj", "dense", "o")
ROLE_NAMES = (QUERY, KEY, VALUE, OUTPUT)
FUSED_QKV = ("qkv_proj", "query_key_value", "c_attn", "Wqkv", "qkv", "W_pack")
#: Fused projections whose rows are all query heads, then all KV heads' keys, then values.
FUSED_CONTIGUOUS = ("qkv_proj",)
#: Fused projections whose rows are per head: head 0's query, key and value rows, then head
#: 1's (GPT-NeoX reshapes the output to (heads, 3 * head_dim) and chunks it); every head is
#: its own KV group. The probe (:mod:`.rows_probe`) confirms either layout on the model.
FUSED_PER_HEAD = ("query_key_value",)


def _child(module: nn.Module, names: tuple[str, ...]) -> str | None:
    return next((n for n in names if isinstance(getattr(module, n, None), nn.Linear)), None)


def _fused_roles(module: nn.Module, where: str) -> tuple[dict[str, str | None], dict, str]:
    """The roles of an attention with a fused q/k/v projection, its fused sections (a
    contiguous layout) and the name of a per-head layout's projection."""
    fused = next((n for n in FUSED_QKV if isinstance(getattr(module, n, None), nn.Module)), "")
    if not fused:
        return {}, {}, ""
    child = getattr(module, fused)
    if fused not in FUSED_CONTIGUOUS + FUSED_PER_HEAD or type(child) is not nn.Linear:
        raise not_understood(
            f"{where}.{fused}",
            child,
            "a fused query/key/value projection of an unknown row layout (only separate "
            "q/k/v projections, qkv_proj's query, key, value rows and query_key_value's "
            "query, key, value rows per head are understood so far)",
        )
    if fused in FUSED_PER_HEAD:
        return {r: fused for r in "qkv"} | {"o": _child(module, OUTPUT)}, {}, fused
    roles = {r: f"{fused}.{r}" for r in "qkv"} | {"o": _child(module, OUTPUT)}
    return roles, {fused: ("q", "k", "v")}, ""


def _sections(module: nn.Module, name: str, per_head: bool, head_dim: int) -> list:
    """Stand-ins with the q/k/v sections' shapes: query rows are the output's inputs; keys
    and values share the rest (a per-head layout has as many of each as of queries)."""
    linear, o = getattr(module, name), getattr(module, _child(module, OUTPUT) or "")
    rest = linear.out_features - o.in_features
    if rest <= 0 or rest % (2 * head_dim) or (per_head and rest != 2 * o.in_features):
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
        roles, fused, per_head = _fused_roles(module, where)
        if not roles:
            roles = {r: _child(module, n) for r, n in zip("qkvo", ROLE_NAMES, strict=True)}
        if None in roles.values():
            continue
        head_dim = head_dim_of(module)
        if head_dim is None:
            raise not_understood(
                where, module, "an attention without an integer head_dim (or head_size)"
            )
        if fused or per_head:
            q, k, v = _sections(module, per_head or next(iter(fused)), bool(per_head), head_dim)
            o = getattr(module, roles["o"])
        else:
            q, k, v, o = (getattr(module, roles[r]) for r in "qkvo")
        ok = (
            q.in_features == k.in_features == v.in_features == o.out_features == hidden
            and k.out_features == v.out_features
            and k.out_features % head_dim == 0
            # an exported layer may keep no heads at all (no keys and no queries)
            and (q.out_features % k.out_features == 0 if k.out_features else not q.out_features)
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
        head_norms = []
        for inner, child in leaves(module):
            if inner in roles.values() or inner in fused:
                continue
            if has_only_sliceable_state(child, head_dim):
                continue  # a norm over one head (Qwen3's q_norm), shared by every head
            if is_norm(child, q.out_features) or is_norm(child, k.out_features):
                head_norms.append(inner)
                continue
            raise not_understood(
                f"{where}.{inner}", child, "a parameterised module inside the attention"
            )
        return AttentionLayout(
            name,
            roles,  # type: ignore[arg-type]
            head_dim,
            heads,
            kv,
            fused,
            per_head,
            tuple(head_norms),
        )
    raise not_understood(path, layer, "no attention block with q/k/v and output projections")

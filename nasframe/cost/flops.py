"""FLOP counting with ``torch.utils.flop_counter``, plus the CPU kernels it does not know.

``FlopCounterMode`` counts the CUDA attention kernels but, in torch 2.13, not the ones CPU
runs: ``F.scaled_dot_product_attention`` dispatches to
``_scaled_dot_product_flash_attention_for_cpu`` and an ``nn.MultiheadAttention`` in eval mode
without gradients takes the fused ``_native_multi_head_attention`` path — both counted as 0.
We register formulas for them (built on torch's own ``sdpa_flop_count``), once, and only where
torch has none, so a newer torch's formulas win. The registration happens on the first
:func:`count_flops`, not at import: importing nasframe changes nothing in torch.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.flop_counter import (
    FlopCounterMode,
    flop_registry,
    register_flop_formula,
    sdpa_flop_count,
)

aten = torch.ops.aten


def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _native_mha_flop(
    query_shape, key_shape, value_shape, embed_dim, num_heads, *args, out_shape=None, **kwargs
) -> int:
    """q/k/v projections + attention + output projection of the fused MHA kernel."""
    *lead, target, _ = query_shape
    source = key_shape[-2]
    batch = 1
    for size in lead:
        batch *= size
    head_dim = embed_dim // num_heads
    projections = 2 * batch * embed_dim * embed_dim * (target + 2 * source + target)
    heads = (batch, num_heads, target, head_dim)
    keys = (batch, num_heads, source, head_dim)
    return projections + sdpa_flop_count(heads, keys, keys)


_registered = False
_register_lock = threading.Lock()


def _register_missing_formulas() -> None:
    """Add the CPU formulas to torch's registry where it has none (once per process; the
    lock makes concurrent first calls register once)."""
    global _registered
    if _registered:
        return
    with _register_lock:
        if _registered:
            return
        missing = {
            aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop,
            aten._native_multi_head_attention: _native_mha_flop,
        }
        for op, formula in missing.items():
            if op not in flop_registry:
                register_flop_formula(op)(formula)
        _registered = True


def count_flops(model: torch.nn.Module, inputs: Any) -> tuple[int, dict[str, int]]:
    """Forward FLOPs of ``model(inputs)``: the total and per-module totals.

    ``inputs`` is a tensor, a tuple of positional arguments or a mapping of keyword arguments.
    Module names are relative to ``model`` ("" is the model itself).
    """
    _register_missing_formulas()
    root = type(model).__name__
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        if isinstance(inputs, Mapping):
            model(**inputs)
        elif isinstance(inputs, tuple):
            model(*inputs)
        else:
            model(inputs)
    per_module = {
        name.removeprefix(root + ".") if name != root else "": sum(counts.values())
        for name, counts in counter.get_flop_counts().items()
        if name != "Global"
    }
    return counter.get_total_flops(), per_module

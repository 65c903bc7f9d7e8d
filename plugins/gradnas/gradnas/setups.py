"""Where gradnas puts each mask: at the point where a unit's contribution leaves it.

A hidden width between two Linears is masked on the *consuming* Linear's input (after the
activation, after a SwiGLU gate's product): that is exactly "this neuron's output is removed".
Masking the producing Linear's output before the nonlinearity measures something else and
ranks units far worse on real language models. An attention head, which owns no tensor of
its own, is masked on its output before the output projection, whatever kernel computed it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.hooks import RemovableHandle

from gradnas.data_manager import GradientDataManager
from nasframe.attention import DynamicMultiheadAttention
from nasframe.dynamic import DynamicLinear

SetupResult = tuple[GradientDataManager, RemovableHandle] | None


def setup_linear_input(module: DynamicLinear) -> SetupResult:
    """Gate each input feature of the Linear (the units of its ``in_features`` hparam)."""
    hparam = module.get_hparam("in_features")
    if hparam is None:
        return None
    manager = GradientDataManager(hparam.max, module)
    manager.hparam = hparam

    def gate_input(_: Any, args: tuple[Any, ...], kwargs: dict[str, Any]):
        if args:
            x = args[0]
            return (x * manager.mask.to(x.dtype), *args[1:]), kwargs
        x = kwargs["input"]  # called as linear(input=x)
        return args, {**kwargs, "input": x * manager.mask.to(x.dtype)}

    return manager, module.register_forward_pre_hook(gate_input, with_kwargs=True)


def setup_attention_heads(module: DynamicMultiheadAttention) -> SetupResult:
    """Gate each head's output (batch, heads, target, head_dim) before the output projection."""
    hparam = module.get_hparam("num_heads")
    if hparam is None:
        return None
    manager = GradientDataManager(hparam.max, module)
    manager.hparam = hparam

    def gate_heads(_: Any, __: Any, output: torch.Tensor) -> torch.Tensor:
        return output * manager.mask.to(output.dtype).view(1, -1, 1, 1)

    return manager, module.head_outputs.register_forward_hook(gate_heads)

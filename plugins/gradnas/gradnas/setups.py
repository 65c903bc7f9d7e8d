"""Where gradnas puts each mask: at the point where a unit's contribution leaves it.

A hidden width between two Linears is masked on the *consuming* Linear's input (after the
activation, after a SwiGLU gate's product): that is exactly "this neuron's output is removed".
Masking the producing Linear's output before the nonlinearity measures something else and
ranks units far worse on real language models. An attention head, which owns no tensor of
its own, is masked on its output before the output projection, whatever kernel computed it.
A layer is masked on its residual contribution (``x + m * (layer(x) - x)``), and a residual
stream on every write into it, with one mask, so that ``m = 0`` removes the channel
everywhere at once.

The Linear-input, residual-write and layer masks go through :mod:`gradnas.gates`, which
rebuild what the mask gradients read in backward where they can instead of keeping it (a
SwiGLU product, a projection's output, a layer's output: :mod:`gradnas.rebuild`), so scoring
stores less than a training step.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.hooks import RemovableHandle

from gradnas.data_manager import GradientDataManager
from gradnas.gates import gate, gate_layer
from gradnas.rebuild import plan_for, record_replays, replay_plan
from nasframe.modules.attention import DynamicMultiheadAttention
from nasframe.modules.depth import DynamicLayerList
from nasframe.modules.linear import DynamicLinear
from nasframe.space.hparam import Hparam

#: A setup returns one (manager, handle) pair, a list of them (a module with several
#: scorable hparams), or None when the module has nothing to score.
SetupResult = (
    tuple[GradientDataManager, RemovableHandle]
    | list[tuple[GradientDataManager, RemovableHandle]]
    | None
)


class Handles:
    """Several hook handles removed together (a setup that hooks several modules)."""

    def __init__(self, handles: list[RemovableHandle]) -> None:
        self.handles = handles

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _first_tensor(value: Any) -> torch.Tensor:
    return value[0] if isinstance(value, tuple | list) else value


def _replace_first(value: Any, tensor: torch.Tensor) -> Any:
    if isinstance(value, tuple):
        return (tensor, *value[1:])
    if isinstance(value, list):
        return [tensor, *value[1:]]
    return tensor


def setup_linear_input(module: DynamicLinear) -> SetupResult:
    """Gate each input feature of the Linear (the units of its ``in_features`` hparam)."""
    hparam = module.get_hparam("in_features")
    if hparam is None or getattr(hparam, "is_residual_stream", False):
        return None  # a residual stream is masked on its writes (setup_residual_stream)
    manager = GradientDataManager(hparam.max, module)
    manager.hparam = hparam

    def gate_input(_: Any, args: tuple[Any, ...], kwargs: dict[str, Any]):
        if args:
            x = args[0]
            return (gate(x, manager.mask.to(x.dtype)), *args[1:]), kwargs
        x = kwargs["input"]  # called as linear(input=x)
        return args, {**kwargs, "input": gate(x, manager.mask.to(x.dtype))}

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


def setup_layer_gates(module: DynamicLayerList) -> SetupResult:
    """Gate each layer's residual contribution: ``x + m_i * (layer_i(x) - x)``.

    ``m_i = 0`` is exactly skipping layer ``i``, so the mask gradient is the first-order
    cost of removing the whole layer.
    """
    hparam = module.get_hparam("depth")
    if hparam is None:
        return None
    manager = GradientDataManager(hparam.max, module)
    manager.hparam = hparam
    handles = []
    for position, layer in enumerate(module.unit_modules("depth")):

        def gate(_: Any, args: tuple, kwargs: dict, output: Any, position: int = position) -> Any:
            x = args[0] if args else kwargs["hidden_states"]
            y = _first_tensor(output)
            m = manager.mask[position].to(y.dtype)
            return _replace_first(output, gate_layer(x, y, m))

        handles.append(layer.register_forward_hook(gate, with_kwargs=True))
    return manager, Handles(handles)


def setup_residual_stream(
    model: torch.nn.Module, hparam: Hparam, writers: list[str]
) -> tuple[GradientDataManager, Handles]:
    """One mask on a residual stream's channels, multiplied into every write into it.

    The stream is the sum of its writes (embeddings, attention and FFN outputs), so scaling
    every write of channel ``c`` by ``m_c`` scales the channel everywhere: its gradient is
    the first-order cost of removing the channel from the whole model.

    A write is a projection's output, which nothing else keeps; its gate replays the
    projection in backward instead (:func:`gradnas.rebuild.replay_plan`) when the
    projection's input can be rebuilt. A writer that is not itself a leaf module (an
    attention block) has its leaf modules' replays recorded, so the gate finds the one whose
    output the writer returns (``o_proj``'s).
    """
    manager = GradientDataManager(hparam.max, model)
    manager.hparam = hparam

    def scale(module: Any, args: tuple, kwargs: dict, output: Any) -> Any:
        y = _first_tensor(output)
        plan = plan_for(y) or replay_plan(module, args, kwargs, y)
        return _replace_first(output, gate(y, manager.mask.to(y.dtype), plan))

    handles = []
    for name in writers:
        writer = model.get_submodule(name)
        for leaf in writer.modules():
            if leaf is not writer and next(leaf.children(), None) is None:
                hook = leaf.register_forward_hook(record_replays, with_kwargs=True, prepend=True)
                handles.append(hook)
        handles.append(writer.register_forward_hook(scale, with_kwargs=True))
    return manager, Handles(handles)

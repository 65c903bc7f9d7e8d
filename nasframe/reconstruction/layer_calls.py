"""Run a model's layer stack one layer at a time, for the sequential repair.

A transformer's forward calls its layers in order, each with the hidden states and the other
arguments the model computes once (masks, positions, rotary tables). Recording those calls
from one forward of the pruned model per batch lets :mod:`nasframe.reconstruction.sequential`
run each layer alone on the pruned hidden states, without knowing the model's family.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nasframe.modules.depth import DynamicLayerList
from nasframe.reconstruction.targets import Target
from nasframe.space.search_space import SearchSpace


def layer_stack(space: SearchSpace) -> DynamicLayerList | None:
    """The model's layer stack (the largest dynamic layer list), None when it has none."""
    stacks = [m for m in space.model.modules() if isinstance(m, DynamicLayerList)]
    return max(stacks, key=lambda m: len(m.all_layers()), default=None)


class Unsupported(Exception):
    """The model's layer stack cannot be run layer by layer (the reason is the message)."""


#: Keyword arguments that carry a key/value cache between calls: a layer called again with
#: one would attend to the keys it stored the first time, so they are dropped (as is any
#: argument that is a cache object: one with ``get_seq_length``, Hugging Face's Cache API).
_CACHE_KWARGS = ("cache", "past_key_values", "past_key_value", "layer_past")


@dataclass
class LayerCall:
    """What a layer was called with besides its hidden states: the other positional
    arguments and the keyword arguments, key/value caches dropped."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def __call__(self, layer: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        return layer_output(layer(hidden, *self.args, **self.kwargs))


@dataclass
class BatchState:
    """One calibration batch as the layer walk sees it: the pruned hidden states entering
    the current layer, and how each kept layer is called (by its index in the stack)."""

    pruned: torch.Tensor
    calls: dict[int, LayerCall]


def record_batches(
    space: SearchSpace,
    stack: DynamicLayerList,
    batches: Sequence[Any],
    forward: Callable[[nn.Module, Any], Any],
    config: dict[str, int],
) -> list[BatchState]:
    """Per batch: the pruned model's hidden states entering its first kept layer, and how
    it calls each kept layer (one forward at ``config``, key/value caches dropped)."""
    layers = stack.all_layers()
    states = []
    with space.selected(config):
        kept = [index for index, layer in enumerate(layers) if layer in stack.kept_layers()]
        if not kept:
            raise Unsupported("the selected config keeps none of its layers")
        for batch in batches:
            seen: dict[int, tuple[tuple, dict]] = {}
            handles = [
                layers[i].register_forward_pre_hook(_remember(seen, i), with_kwargs=True)
                for i in kept
            ]
            try:
                forward(space.model, batch)
            finally:
                for handle in handles:
                    handle.remove()
            if sorted(seen) != kept or any(
                not args or not isinstance(args[0], torch.Tensor) for args, _ in seen.values()
            ):
                raise Unsupported(
                    "its layers are not each called once with the hidden states as their "
                    "first positional argument"
                )
            calls = {i: _call_without_cache(*seen[i]) for i in kept}
            states.append(BatchState(seen[kept[0]][0][0], calls))
    return states


def _call_without_cache(args: tuple[Any, ...], kwargs: dict[str, Any]) -> LayerCall:
    rest = tuple(None if _is_cache(arg) else arg for arg in args[1:])
    kwargs = {
        key: None if key in _CACHE_KWARGS or _is_cache(value) else value
        for key, value in kwargs.items()
    }
    if "use_cache" in kwargs:
        kwargs["use_cache"] = False
    return LayerCall(rest, kwargs)


def _is_cache(value: Any) -> bool:
    return callable(getattr(value, "get_seq_length", None))


def _remember(seen: dict[int, tuple[tuple, dict]], index: int) -> Callable[..., None]:
    def hook(_: nn.Module, args: tuple, kwargs: dict) -> None:
        if index not in seen:
            seen[index] = (args, kwargs)

    return hook


def layer_output(output: Any) -> torch.Tensor:
    """The hidden states a layer returns (alone, or first in a tuple)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise Unsupported(f"a layer returned {type(output).__name__}, not hidden states")


@contextlib.contextmanager
def captured_inputs(
    targets: Sequence[Target], order: list[int] | None = None
) -> Iterator[dict[int, torch.Tensor]]:
    """Within: each target's input of the latest call (by position in ``targets``), and the
    positions appended to ``order`` as they run."""
    captured: dict[int, torch.Tensor] = {}

    def recorder(index: int) -> Callable[..., None]:
        def hook(_: nn.Module, args: tuple, kwargs: dict) -> None:
            captured[index] = args[0] if args else next(iter(kwargs.values()))
            if order is not None:
                order.append(index)

        return hook

    handles = [
        target.input_module.register_forward_pre_hook(recorder(i), with_kwargs=True)
        for i, target in enumerate(targets)
    ]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()

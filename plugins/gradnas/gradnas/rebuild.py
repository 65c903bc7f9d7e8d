"""Rebuilding a gated activation in backward instead of keeping it from the forward pass.

The gradient of a gate ``x * m`` with respect to its mask is ``sum(grad * x)``, so a plain
multiplication keeps ``x`` for backward. With the weights frozen, most gated activations are
kept by nothing else: a frozen projection keeps no input, and a SwiGLU product
(``act(gate) * up``) or a residual write (a projection's output) is an intermediate result.
Kept, they made scoring peak above a training step (``benchmarks/scoring_memory.py``). A
*plan* rebuilds such an activation in backward, bit for bit, from tensors the graph keeps
anyway:

- the output of a product, GELU, SiLU or ReLU whose inputs autograd keeps for its own
  backward (a SwiGLU's multiplication keeps both factors), or a contiguous view of one;
- the output of a gradnas gate: its input's plan times the mask;
- a sum of tensors that have plans (a decoder layer's output: its input plus its gated
  residual writes);
- the output of a leaf module (a projection, an embedding) whose tensor arguments have plans
  or are small and need no gradient (token ids): its ``forward`` runs again.

A plan is called only in the backward of a node that lies downstream of every tensor the
plan reads, so those are still kept then (autograd frees a node's saved tensors once the
node has run). What it replays is the very computation of the forward pass, on equal inputs
in the same layout, so the mask gradients equal those of the kept activations exactly; the
price is one more run of each replayed projection in backward.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.weak import WeakIdKeyDictionary

#: Rebuilds one tensor in backward: returns it, contiguous, with the forward pass's values.
Plan = Callable[[], torch.Tensor]

# The plans of tensors made in the forward pass now running (gate outputs, replayable module
# outputs), keyed weakly: an entry goes when its tensor does.
_PLANS: WeakIdKeyDictionary = WeakIdKeyDictionary()
_VIEWS = frozenset({"ViewBackward0", "UnsafeViewBackward0"})
_ENABLED = [True]
# How many nodes deep a plan may reach (a layer's output: a sum of a sum and a gate).
_MAX_DEPTH = 3
# A held argument (token ids) may take at most 1 / _HELD_FRACTION of the replayed output's bytes.
_HELD_FRACTION = 4


@contextmanager
def keeping_activations() -> Iterator[None]:
    """Gates keep what they multiply, as plain multiplications do (no plans): the memory a
    scoring pass needs without rebuilding (``benchmarks/scoring_memory.py`` compares)."""
    _ENABLED.append(False)
    try:
        yield
    finally:
        _ENABLED.pop()


def enabled() -> bool:
    return _ENABLED[-1]


def remember(tensor: torch.Tensor, plan: Plan) -> None:
    """Record how ``tensor`` (made in this forward pass) is rebuilt, for the gates after it."""
    _PLANS[tensor] = plan


def plan_for(tensor: torch.Tensor, known: Mapping[Any, Plan] | None = None) -> Plan | None:
    """How to rebuild ``tensor`` in backward from what the graph keeps, or None (keep it).

    ``known``: tensors the caller keeps anyway (a layer's input), by ``(grad_fn, output_nr)``.
    """
    if not enabled() or not tensor.is_contiguous():
        return None
    found = _PLANS.get(tensor)
    if found is not None:
        return found
    node, index, viewed = tensor.grad_fn, tensor.output_nr, False
    while node is not None and type(node).__name__ in _VIEWS and len(node.next_functions) == 1:
        (node, index), viewed = node.next_functions[0], True
    root = _node_plan(node, index, known or {}, _MAX_DEPTH)
    if root is None:
        return None
    shape = tensor.shape
    if viewed:
        return lambda: root().contiguous().view(shape)
    return lambda: root().contiguous()


def _node_plan(node: Any, index: int, known: Mapping[Any, Plan], depth: int) -> Plan | None:
    """The output of ``node`` from the tensors it keeps for its own backward, from the plans
    of its inputs (a sum), or from ``known``; ``index``: which of the node's outputs."""
    if node is None or depth == 0:
        return None
    if (node, index) in known:
        return known[node, index]
    output_plan = getattr(node, "output_plan", None)  # a gradnas gate (gradnas.gates)
    if output_plan is not None:
        return output_plan
    name = type(node).__name__
    if name == "MulBackward0":
        # Each factor is kept only when the other needs a gradient: both must.
        if any(function is None for function, _ in node.next_functions):
            return None
        return lambda: node._saved_self * node._saved_other
    if name == "AddBackward0":
        terms = [_node_plan(fn, i, known, depth - 1) for fn, i in node.next_functions]
        if len(terms) != 2 or None in terms:
            return None
        first, second = terms
        alpha = node._saved_alpha
        return lambda: torch.add(first(), second(), alpha=alpha)
    if name == "GeluBackward0":
        approximate = node._saved_approximate
        return lambda: F.gelu(node._saved_self, approximate=approximate)
    if name == "SiluBackward0":
        return lambda: F.silu(node._saved_self)
    if name == "ReluBackward0":
        return lambda: node._saved_result
    return None


def held(tensor: torch.Tensor) -> Plan:
    """A plan that returns ``tensor`` itself (kept by the caller anyway, or small), refusing
    one modified in place since (as autograd refuses a modified saved tensor)."""
    version = tensor._version

    def plan() -> torch.Tensor:
        if tensor._version != version:
            raise RuntimeError(
                "a tensor a gradnas mask gradient needs was modified in place after the forward "
                "pass; do not modify activations in place while gradnas scores."
            )
        return tensor

    return plan


def replay_plan(
    module: nn.Module, args: tuple[Any, ...], kwargs: Mapping[str, Any], output: torch.Tensor
) -> Plan | None:
    """Rebuild a leaf module's ``output`` by running its ``forward`` again in backward, when
    every tensor argument has a plan or is small and needs no gradient; else None.

    Only leaf modules (no children: a projection, an embedding) in eval mode are replayed:
    their forward is then a deterministic function of the arguments and weights, which
    scoring leaves alone. Under autocast the replay would run in another precision, so
    nothing is replayed then.
    """
    if not enabled() or module.training or next(module.children(), None) is not None:
        return None
    if not output.is_contiguous() or torch.is_autocast_enabled(output.device.type):
        return None
    budget = output.nbytes // _HELD_FRACTION
    plans: list[Any] = []
    for value in (*args, *kwargs.values()):
        if not isinstance(value, torch.Tensor):
            plans.append(value)
            continue
        plan = plan_for(value) if value.requires_grad else None
        if plan is None:
            if value.requires_grad or value.nbytes > budget:
                return None
            budget -= value.nbytes
            plan = held(value)
        plans.append(_Rebuilt(plan))
    names = tuple(kwargs)
    positional = len(args)

    def replay() -> torch.Tensor:
        with torch.no_grad():
            values = [p() if isinstance(p, _Rebuilt) else p for p in plans]
            result = module.forward(
                *values[:positional], **dict(zip(names, values[positional:], strict=True))
            )
        return result.contiguous()

    return replay


class _Rebuilt:
    """Marks a replayed argument that a plan rebuilds (other arguments pass as they are)."""

    __slots__ = ("plan",)

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    def __call__(self) -> torch.Tensor:
        return self.plan()


def record_replays(
    module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
) -> None:
    """Forward hook (``with_kwargs``, prepended) on a leaf module inside a residual writer:
    remembers how its output is replayed, for the writer's gate to find."""
    if isinstance(output, torch.Tensor):
        plan = replay_plan(module, args, kwargs, output)
        if plan is not None:
            remember(output, plan)

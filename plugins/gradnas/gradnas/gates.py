"""The gradnas gates, ``x * m`` and a layer's ``x + m * (y - x)``, whose backward rebuilds
what the mask's gradient reads where :mod:`gradnas.rebuild` has a plan for it.

A plain multiplication keeps ``x`` for the mask's gradient ``sum(grad * x)`` (a layer gate
keeps ``y - x``); these gates keep only the mask and the plan when there is one, and give
their own output a plan (the input's plan times the mask), so the gates and projections after
them can be rebuilt too. Their gradients are computed by the formulas autograd uses for the
same operations (``grad * m``; ``grad * x`` summed to the mask's shape; a difference's
``-grad``), on the same values, so they equal the plain operations' bit for bit.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.weak import WeakIdKeyDictionary

from gradnas.rebuild import Plan, enabled, held, plan_for, remember

# Whether a mask is all ones, by mask, with the version it was checked at.
_ONES: WeakIdKeyDictionary = WeakIdKeyDictionary()


class _Memo:
    """A plan run once per backward: its first caller (a later gate's rebuild, or the gate
    that owns it) computes the tensor, and the owner drops it after its own backward, which
    comes after every other caller's (they are downstream of it). A graph kept for a second
    backward (``retain_graph``) rebuilds it again."""

    __slots__ = ("plan", "value")

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.value: torch.Tensor | None = None

    def __call__(self) -> torch.Tensor:
        if self.value is None:
            with torch.no_grad():
                self.value = self.plan()
        return self.value

    def release(self) -> None:
        self.value = None


def _all_ones(mask: torch.Tensor) -> bool:
    checked = _ONES.get(mask)
    if checked is None or checked[0] != mask._version:
        checked = _ONES[mask] = (mask._version, bool((mask == 1).all()))
    return checked[1]


class _Gate(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, mask: torch.Tensor, plan: Plan | None, same: bool
    ) -> torch.Tensor:
        ctx.memo = None if plan is None else _Memo(plan)
        ctx.output_plan = None  # set by gate(): read by gradnas.rebuild through grad_fn
        if ctx.memo is None:
            ctx.save_for_backward(x, mask)
        else:
            ctx.save_for_backward(mask)
        # x * 1 is x bit for bit: no new tensor (autograd makes the output a view of x).
        return x if same else x * mask

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if ctx.memo is None:
            x, mask = ctx.saved_tensors
        else:
            (mask,) = ctx.saved_tensors
            x = ctx.memo()
            ctx.memo.release()
        grad_x = grad * mask if ctx.needs_input_grad[0] else None
        grad_mask = (grad * x).sum_to_size(mask.shape) if ctx.needs_input_grad[1] else None
        return grad_x, grad_mask, None, None


def gate(x: torch.Tensor, mask: torch.Tensor, plan: Plan | None = None) -> torch.Tensor:
    """``x * mask`` (``mask`` broadcast over ``x``, in ``x``'s dtype), keeping ``x`` for
    backward only when neither ``plan`` nor :func:`gradnas.rebuild.plan_for` rebuilds it.

    A rebuilt ``x`` gated by a mask of ones passes as it is (as a view), so the gate makes
    no new tensor in the forward pass either: fewer short-lived buffers, which keeps the
    process's peak memory (not only the tensors') near that of the loss alone.
    """
    if plan is None:
        plan = plan_for(x)
    same = (
        plan is not None
        and mask.dtype == x.dtype
        and torch.broadcast_shapes(x.shape, mask.shape) == x.shape
        and _all_ones(mask)
    )
    out = _Gate.apply(x, mask, plan, same)
    node = out.grad_fn
    if enabled() and x.is_contiguous() and out.is_contiguous():
        source = held(x) if plan is None else node.memo if node is not None else plan

        def output_plan() -> torch.Tensor:
            return source() * mask

        remember(out, output_plan)
        if node is not None:
            node.output_plan = output_plan
    return out


class _LayerGate(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, plan: Plan | None
    ) -> torch.Tensor:
        ctx.memo = None if plan is None else _Memo(plan)
        if ctx.memo is None:
            difference = y - x
            ctx.save_for_backward(difference, mask)
            return x + mask * difference
        ctx.save_for_backward(x, mask)
        # The same values in y's own buffer (nothing keeps y: it is rebuilt): y - x, times m,
        # plus x (products and sums commute bit for bit).
        ctx.mark_dirty(y)
        return y.sub_(x).mul_(mask).add_(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        kept, mask = ctx.saved_tensors
        if ctx.memo is None:
            difference = kept
        else:
            with torch.no_grad():
                difference = ctx.memo() - kept
            ctx.memo.release()
        grad_mask = (grad * difference).sum_to_size(mask.shape) if ctx.needs_input_grad[2] else None
        grad_difference = grad * mask
        grad_y = grad_difference if ctx.needs_input_grad[1] else None
        # x's gradient: the sum's (grad), then the difference's (-grad * m), added in the
        # order autograd adds the two when they arrive separately.
        grad_x = grad + (-grad_difference) if ctx.needs_input_grad[0] else None
        return grad_x, grad_y, grad_mask, None


def gate_layer(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x + mask * (y - x)`` for a layer with input ``x`` and output ``y``, keeping ``y - x``
    for backward only when ``y`` has no plan: a decoder layer's output is its input plus its
    gated residual writes, which :mod:`gradnas.rebuild` rebuilds from ``x`` (kept by the
    layer's first norm anyway) and the writes' plans."""
    plan = None
    # Rebuilt, y is overwritten with the result: only a sum's fresh output, which nothing
    # can have kept (a sum keeps no tensor), and not x itself.
    fresh = type(y.grad_fn).__name__ == "AddBackward0" and y._base is None
    if fresh and x.grad_fn is not None and x.is_contiguous() and not _shares(x, y):
        plan = plan_for(y, known={(x.grad_fn, x.output_nr): held(x)})
    return _LayerGate.apply(x, y, mask, plan)


def _shares(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()

"""Per-module accumulation of squared mask gradients."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import nn

from nasframe.space.hparam import Hparam


def _identity(scores: torch.Tensor) -> torch.Tensor:
    return scores


def _device_of(model: nn.Module) -> torch.device:
    """The device of the module's first parameter, else its first buffer, else the CPU."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


class GradientDataManager:
    """Class for managing gradient data for an hparam.

    Holds a mask of ones (``requires_grad=True``, fp32 on the model's device whatever the
    model's dtype, so squared gradients of half-precision models do not underflow) that a
    hook multiplies into the units of one hparam. After each backward pass
    :meth:`process_gradient` adds ``mask.grad ** 2`` to the running sum; :attr:`score` is
    ``reduce_func`` of that sum (e.g. summing a per-element mask into per-unit scores).

    A gradient setup (see ``SETUP_GRADIENT_FUNC``) creates one per gated hparam, sets
    :attr:`hparam`, and registers the hook that multiplies :attr:`mask` in::

        def setup_my_module(module):  # gates the module's output features
            hparam = module.get_hparam("out_features")
            manager = GradientDataManager(hparam.max, module)
            manager.hparam = hparam
            handle = module.register_forward_hook(
                lambda mod, args, out: out * manager.mask.to(out.dtype)
            )
            return manager, handle

    ``gradnas.gates.gate(out, manager.mask.to(out.dtype))`` multiplies the same way and
    rebuilds ``out`` in backward instead of keeping it where it can (``gradnas.rebuild``).

    Args:
        shape: Shape of the mask: the number of units, or a per-element shape that
            ``reduce_func`` reduces to one score per unit.
        model: A module on the device the mask must live on (the gated module itself
            will do); the mask goes on the device of its first parameter (else buffer), or
            the CPU.
        reduce_func: Maps the accumulated squared gradients (``shape``) to one score per
            unit of the hparam; the identity by default.
    """

    def __init__(
        self,
        shape: int | tuple[int, ...] | torch.Size,
        model: nn.Module,
        reduce_func: Callable[[torch.Tensor], torch.Tensor] = _identity,
    ) -> None:
        """Create a mask of ones and an empty sum of squared gradients (see the class)."""
        device = _device_of(model)
        self.mask = torch.ones(shape, dtype=torch.float32, device=device, requires_grad=True)
        self.reduce_func = reduce_func
        self.hparam: Hparam | None = None  # which hparam's units the mask gates; set by setup
        self.num_batches = 0
        self._sum = torch.zeros(shape, dtype=torch.float32, device=device)

    def process_gradient(self) -> None:
        """Process gradient of the mask: accumulate its square and clear it.

        A mask the loss did not reach (``grad is None``) contributes 0: a unit the loss does
        not depend on is the cheapest one to prune.
        """
        self.add(self.take_squared_gradient(), batches=1)

    def take_squared_gradient(self) -> torch.Tensor:
        """Take the mask's gradient, clearing it for the next batch.

        Returns:
            ``mask.grad ** 2`` in fp32 (zeros when the loss did not reach the mask).
        """
        if self.mask.grad is None:
            return torch.zeros_like(self._sum)
        squared = self.mask.grad.detach().float() ** 2
        self.mask.grad = None
        return squared

    def add(self, squared: torch.Tensor, batches: int) -> None:
        """Add squared gradients to the running sum.

        Args:
            squared: Squared mask gradients, of the mask's shape (summed over data-parallel
                ranks in a distributed run).
            batches: How many batches ``squared`` covers.
        """
        self._sum += squared.to(self._sum)
        self.num_batches += batches

    @property
    def accumulated(self) -> torch.Tensor:
        """The raw sum of squared gradients (before ``reduce_func``)."""
        return self._sum

    @accumulated.setter
    def accumulated(self, value: torch.Tensor) -> None:
        """Replace the sum (e.g. after an all-reduce across data-parallel ranks)."""
        self._sum = value.to(self._sum)

    @property
    def score(self) -> torch.Tensor:
        """The score of each unit of the hparam: ``reduce_func`` of the accumulated sum."""
        return self.reduce_func(self._sum)

"""One pass over calibration data that accumulates squared mask gradients.

Every mask is 1 (the full model runs unchanged); the weights' ``requires_grad`` flags are
switched off so backward computes only the mask gradients, and restored afterwards. The
caller's hooks are removed by the caller's ``finally``; this module only runs batches.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import nasframe.distributed as distributed
from gradnas.data_manager import GradientDataManager
from gradnas.scoring_state import ScoringState
from nasframe.errors import UserInputError

LossFunc = Callable[[nn.Module, Any], torch.Tensor]


@dataclass(frozen=True)
class Convergence:
    """Stop once the averaged scores stop moving.

    After batch ``n`` the change is ``||mean_n - mean_(n-1)|| / ||mean_n||`` over all masks
    together; scoring stops after batch ``n`` when ``n >= min_batches`` and the last
    ``patience`` changes were all below ``tol``. ``tol=None`` disables early stopping.
    """

    tol: float | None = None
    patience: int = 4
    min_batches: int = 16


@dataclass(frozen=True)
class ScoringReport:
    num_batches: int
    stopped_early: bool


@contextmanager
def weights_frozen(model: nn.Module):
    """Weights need no gradients while scoring; their flags are restored afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for param, _ in flags:
            param.requires_grad_(False)
        yield
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)


def accumulate_mask_gradients(
    model: nn.Module,
    managers: Sequence[GradientDataManager],
    data_loader: Iterable[Any],
    loss_func: LossFunc,
    max_batches: int,
    convergence: Convergence = Convergence(),
    progress: Callable[..., Any] = lambda iterable, **_: iterable,
    resume: ScoringState | None = None,
    save: Callable[[ScoringState], None] | None = None,
    save_interval_s: float = 2.0,
) -> ScoringReport:
    """Run up to ``max_batches`` batches; after each, every manager processes its gradient.

    Resumable: ``save`` gets the state after a completed round at most every
    ``save_interval_s`` seconds, and once more when the scoring is interrupted (Ctrl-C,
    SIGTERM turned into an exception, an error); ``resume`` (such a state) restores the sums
    and skips the batches already done, so the scores equal an uninterrupted run's exactly.
    In a data-parallel run a state is always that of a completed, all-reduced round.
    """
    masks = [manager.mask for manager in managers]
    ranks = distributed.world_size()
    committed, processed, calm = resume, 0, 0
    previous_mean: list[torch.Tensor] | None = None
    if resume is not None:
        resume.restore(managers)
        processed, calm = resume.batches, resume.calm
        if processed and convergence.tol is not None:  # the mean the last round compared
            previous_mean = [manager.accumulated / processed for manager in managers]
    saved_batches, last_save = processed, time.monotonic()
    pending: list[torch.Tensor] = [torch.zeros_like(manager.accumulated) for manager in managers]
    # The batches already done are read and skipped, so the rest come in the same order.
    batches = itertools.islice(data_loader, processed, max_batches)
    bar = progress(
        batches,
        total=_batch_total(data_loader, max_batches),
        initial=processed,
        desc="gradnas scoring",
    )
    # Scoring needs autograd even when the caller searches inside torch.no_grad().
    try:
        with weights_frozen(model), torch.enable_grad():
            index = processed - 1
            for index, batch in enumerate(bar, start=processed):
                # Data parallel: batch i is rank i % ranks's; a round of `ranks` batches ends
                # in one all-reduce, so every rank adds the same sums (one rank: every batch).
                if distributed.mine(index):
                    _backward(model, batch, loss_func, masks, index, first=index < ranks)
                    for delta, manager in zip(pending, managers, strict=True):
                        delta += manager.take_squared_gradient()
                if (index + 1) % ranks:
                    continue
                processed = _add_round(managers, pending, index + 1 - processed, processed)
                if convergence.tol is not None:
                    mean = [manager.accumulated / processed for manager in managers]
                    if previous_mean is not None:
                        change = _relative_change(mean, previous_mean)
                        calm = calm + 1 if change < convergence.tol else 0
                        if processed >= convergence.min_batches and calm >= convergence.patience:
                            return ScoringReport(processed, stopped_early=True)
                    previous_mean = mean
                if save is None:
                    continue
                committed = ScoringState.of(managers, processed, calm)
                if time.monotonic() - last_save >= save_interval_s:
                    save(committed)
                    saved_batches, last_save = processed, time.monotonic()
            if index + 1 > processed:  # the last, partial round
                processed = _add_round(managers, pending, index + 1 - processed, processed)
    except BaseException:
        # Keep what the completed rounds computed; a rerun resumes from there.
        if save is not None and committed is not None and committed.batches > saved_batches:
            save(committed)
        raise
    if processed == 0:
        raise UserInputError(
            "the data loader yielded no batches; give gradnas at least one calibration batch."
        )
    return ScoringReport(processed, stopped_early=False)


def _batch_total(data_loader: Iterable[Any], max_batches: int) -> int | None:
    """How many batches the scoring will read: the loader's length, if it has one, capped
    at ``max_batches``; None (unknown) for a loader without a length."""
    try:
        return min(max_batches, len(data_loader))  # type: ignore[arg-type]
    except TypeError:
        return None


def _backward(
    model: nn.Module,
    batch: Any,
    loss_func: LossFunc,
    masks: list[torch.Tensor],
    index: int,
    first: bool,
) -> None:
    """One batch's loss and backward, with the checks that name what is wrong."""
    loss = loss_func(model, batch)
    _check_loss(loss, index)
    try:
        loss.backward()
    except RuntimeError as error:
        raise UserInputError(
            f"backward through the loss failed on batch {index} ({error}); the loss must "
            "be computed from the model's output in this forward pass."
        ) from error
    if first and all(mask.grad is None for mask in masks):
        raise UserInputError(
            "the loss has no gradient path to any gradnas mask; compute the loss from "
            "the model's output for the batch (loss_func(model, batch))."
        )
    for mask in masks:
        if mask.grad is not None and not torch.isfinite(mask.grad).all():
            raise UserInputError(
                f"a mask gradient is NaN or Inf on batch {index}; check that batch and "
                "the model's numerical range (try float32)."
            )


def _add_round(
    managers: Sequence[GradientDataManager],
    pending: list[torch.Tensor],
    batches: int,
    processed: int,
) -> int:
    """Sum this round's squared gradients over the ranks, add them, clear ``pending``."""
    if pending:
        flat = distributed.all_reduce_sum(torch.cat([delta.flatten() for delta in pending]))
        offset = 0
        for delta, manager in zip(pending, managers, strict=True):
            manager.add(flat[offset : offset + delta.numel()].view_as(delta), batches)
            offset += delta.numel()
            delta.zero_()
    return processed + batches


def _check_loss(loss: Any, index: int) -> None:
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise UserInputError(
            f"loss_func must return a scalar tensor, got {shape} on batch {index}; reduce it "
            "with .mean() or .sum()."
        )
    if not loss.requires_grad:
        raise UserInputError(
            "the loss has no gradient path to the gradnas masks (it does not require grad); "
            "compute it from the model's output without torch.no_grad() or .detach()."
        )
    if not math.isfinite(loss.item()):
        raise UserInputError(
            f"the loss is {loss.item()} on batch {index}; check that batch and the model's "
            "numerical range (try float32)."
        )


def _relative_change(current: list[torch.Tensor], previous: list[torch.Tensor]) -> float:
    pairs = zip(current, previous, strict=True)
    difference = math.sqrt(sum(float(((c - p) ** 2).sum()) for c, p in pairs))
    norm = math.sqrt(sum(float((c**2).sum()) for c in current))
    return difference / norm if norm > 0 else 0.0

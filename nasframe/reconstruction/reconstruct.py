"""Repair the kept weights of a pruned search space from calibration activations, no training.

Pruning an FFN's width or an attention's heads removes input columns of the map that reads
them (the down projection, the output projection). Their contribution is not random noise: on
real data it has a mean, and it is partly predictable from the inputs that stay. After a search
has selected a config, :func:`reconstruct` measures the *dense* inputs of every such map on
calibration batches (the space temporarily at its full config) and then, at the selected
config, either folds the removed inputs' mean into the bias (``"bias"``) or refits the kept
columns and the bias by damped least squares onto the dense output (``"lsq"``); see
:mod:`nasframe.reconstruction.refit`. A map without a bias gets one (zeros, where its
``SLOTS`` index it), so
slicing, export, ``nasframe.save`` (pass ``added_biases=space.added_biases``) and
``save_pretrained_pruned`` keep it. Maps it would be wrong to change are left alone and
reported (see :mod:`nasframe.reconstruction.targets`). Where a bias may not be added
(``can_add_bias``: a plain config that cannot hold one there), ``"lsq"`` refits the kept
columns alone, without a bias term, and ``"bias"``, which has nothing to fold into, leaves
the map alone.

The statistics of all targets are measured before any weight changes, so every chunk of
targets sees the same dense model and the result does not depend on ``max_stats_bytes``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nasframe.errors import UserInputError
from nasframe.modules.depth import DynamicLayerList
from nasframe.reconstruction.layer_calls import Unsupported, layer_stack
from nasframe.reconstruction.readers import repair_readers
from nasframe.reconstruction.sequential import inside_stack, walk_layers
from nasframe.reconstruction.stats import (
    LinearStats,
    collect,
    default_max_stats_bytes,
    plan_chunks,
)
from nasframe.reconstruction.targets import Target, find_targets
from nasframe.reconstruction.updates import Update, apply_update, solve_update, write_update
from nasframe.space.search_space import SearchSpace

RECONSTRUCT_MODES = ("none", "bias", "lsq", "sequential")


@dataclass
class ReconstructionReport:
    """What :func:`reconstruct` did: the maps it changed (by the name of the module holding
    the weight), the ones it left alone and why, the biases it added (parameter name ->
    size, what ``nasframe.save`` needs to rebuild them), the maps refitted without a bias
    because none could be added, batches and wall time."""

    mode: str
    reconstructed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    added_biases: dict[str, int] = field(default_factory=dict)
    without_bias: list[str] = field(default_factory=list)
    batches: int = 0
    seconds: float = 0.0
    #: How ``"sequential"`` ran: layer by layer, or one-shot lsq and why.
    note: str = ""
    #: The readers of a pruned residual stream refitted on paired statistics
    #: (:mod:`nasframe.reconstruction.readers`), also in ``reconstructed``.
    readers: list[str] = field(default_factory=list)


def reconstruct(
    space: SearchSpace,
    batches: Iterable[Any],
    forward: Callable[[nn.Module, Any], Any],
    mode: str,
    ridge: float = 1e-2,
    progress: Callable[..., Any] = lambda it, **_: it,
    max_stats_bytes: int | None = None,
    statistics: dict[str, LinearStats] | None = None,
    can_add_bias: Callable[[str], bool] | None = None,
    readers: bool = True,
) -> ReconstructionReport:
    """Repair the maps whose inputs the selected config prunes; the model changes in place.

    The statistics are measured with the space at its full config; the selected config and
    every module's training flag are restored afterwards, also on error.

    Args:
        space: a converted model with the pruned config already selected (after a search).
        batches: calibration batches, iterated once per chunk of targets; pass a sequence
            (a one-shot iterator is turned into a list first).
        forward: ``forward(model, batch)`` runs the model on one batch; its output is ignored.
        mode: ``"none"`` (do nothing), ``"bias"`` (fold the removed inputs' mean into the
            bias) or ``"lsq"`` (refit the kept columns and the bias by damped least squares).
        ridge: the least-squares damping, relative to the mean variance of the kept inputs
            (``"lsq"`` only); a finite number >= 0.
        progress: wraps an iterable to show progress (``progress(it, desc=...)``); the
            default shows nothing.
        max_stats_bytes: bound on the float64 statistics held at once: more targets than fit
            are measured in several passes over ``batches``, with the same result. None (the
            default): an eighth of the model's weight bytes, within [512 MiB, 2 GiB]
            (:func:`~nasframe.reconstruction.stats.default_max_stats_bytes`), so the
            statistics grow with the model instead of adding a fixed 2 GiB to it.
        statistics: target name -> measured statistics, read and filled: a map found in it
            is not measured again. Pass one dict to several calls on copies of the *same*
            model with the same unit order and batches (one searched space pruned to several
            budgets or modes) to run the calibration batches once; it holds every map's
            statistics, so it is for benchmarks and sweeps, not a bounded-memory run.
        can_add_bias: whether a map without a bias may be given one, by the bias's
            parameter name (None: every one may). A map that may not is refitted without a
            bias term (``"lsq"``) or left alone (``"bias"``).
        readers: with ``"lsq"`` or ``"sequential"``, also refit the maps that read a norm's
            output when the hidden size is pruned, on paired dense and pruned inputs
            (:mod:`nasframe.reconstruction.readers`); False leaves them alone, as before.

    Returns:
        A :class:`ReconstructionReport`: the maps changed, those left alone and why, the
        biases added (pass ``space.added_biases`` to ``nasframe.save`` so a load rebuilds
        them; the space records them too), the batch count and the wall time.

    Raises:
        UserInputError: an unknown ``mode``, a bad ``ridge`` or ``max_stats_bytes``, or no
            calibration batches while there is something to reconstruct.
    """
    if mode not in RECONSTRUCT_MODES:
        raise UserInputError(
            f"unknown reconstruction mode {mode!r}; choose one of {', '.join(RECONSTRUCT_MODES)}."
        )
    report = ReconstructionReport(mode)
    if mode == "none":
        return report
    if not (isinstance(ridge, int | float) and math.isfinite(ridge) and ridge >= 0):
        raise UserInputError(f"ridge must be a finite number >= 0, got {ridge!r}; e.g. 0.01.")
    if max_stats_bytes is None:
        max_stats_bytes = default_max_stats_bytes(space.model)
    if max_stats_bytes <= 0:
        raise UserInputError(f"max_stats_bytes must be positive, got {max_stats_bytes!r}.")
    start = time.perf_counter()
    found_readers: list[Target] = []
    wanted = readers and mode != "bias"
    targets, report.skipped = find_targets(space, found_readers if wanted else None)
    if can_add_bias is not None:
        targets = _without_forbidden_folds(targets, can_add_bias, mode, report)
    if targets or found_readers:
        batches = _reiterable(batches)
        if hasattr(batches, "__len__") and len(batches) == 0:
            raise UserInputError("reconstruction needs calibration batches; none were given.")
        walked: list[Target] = []
        stack = layer_stack(space) if mode == "sequential" else None
        if stack is not None:
            walked = inside_stack(stack, targets)
            targets = [t for t in targets if t not in walked]
        elif mode == "sequential":
            report.note = "one-shot lsq: the model has no layer stack to walk"
        # The readers of a pruned residual stream, and the maps outside the layer stack, are
        # measured on the dense model before anything changes; the readers are updated first
        # (the walk then runs the repaired readers), the others last.
        with _eval_mode(space.model):
            reader_updates, reader_skips = repair_readers(
                space, found_readers, batches, forward, ridge, progress, max_stats_bytes
            )
        updates = _measure_and_solve(
            space,
            targets,
            batches,
            forward,
            mode,
            ridge,
            progress,
            max_stats_bytes,
            report,
            statistics,
        )
        with torch.no_grad(), _eval_mode(space.model):
            for target, update in reader_updates:
                apply_update(target, update)
                report.skipped.pop(target.name, None)
                report.reconstructed.append(target.name)
                report.readers.append(target.name)
            report.skipped.update(reader_skips)
            if walked:
                _walk(
                    space,
                    stack,
                    walked,
                    batches,
                    forward,
                    ridge,
                    progress,
                    max_stats_bytes,
                    report,
                    updates,
                )
            for target, update in updates:
                write_update(space, target, update, report)
        space.added_biases.update(report.added_biases)
    report.seconds = time.perf_counter() - start
    return report


def _walk(
    space: SearchSpace,
    stack: DynamicLayerList,
    walked: list[Target],
    batches: Any,
    forward: Callable[[nn.Module, Any], Any],
    ridge: float,
    progress: Callable[..., Any],
    max_stats_bytes: int,
    report: ReconstructionReport,
    updates: list[tuple[Target, Update]],
) -> None:
    """The sequential repair of the maps inside the layer stack; one-shot lsq for them
    instead (added to ``updates``) when the stack cannot be run layer by layer."""
    batches = list(batches)
    report.batches = len(batches)

    def solve(target: Target, stats: LinearStats) -> None:
        write_update(space, target, solve_update(target, stats, True, ridge), report)

    try:
        report.skipped.update(walk_layers(space, stack, walked, batches, forward, solve, progress))
        report.note = f"layer by layer over {len(stack.all_layers())} layers"
    except Unsupported as reason:
        report.note = f"one-shot lsq: the layer stack cannot be run layer by layer ({reason})"
        updates.extend(
            _measure_and_solve(
                space,
                walked,
                batches,
                forward,
                "lsq",
                ridge,
                progress,
                max_stats_bytes,
                report,
                None,
            )
        )


def _without_forbidden_folds(
    targets: list[Target],
    can_add_bias: Callable[[str], bool],
    mode: str,
    report: ReconstructionReport,
) -> list[Target]:
    """``targets`` with a bias-free mark on those that lack a bias and may not get one; in
    ``"bias"`` mode those are left alone instead (a fold needs a bias to fold into)."""
    kept = []
    for target in targets:
        target.bias_free = target.bias is None and not can_add_bias(target.bias_name)
        if target.bias_free and mode == "bias":
            report.skipped[target.name] = (
                "it has no bias and may not get one (the plain config cannot hold it), so "
                "the removed inputs' mean has nothing to fold into"
            )
        else:
            kept.append(target)
    return kept


def _measure_and_solve(
    space: SearchSpace,
    targets: list[Target],
    batches: Any,
    forward: Callable[[nn.Module, Any], Any],
    mode: str,
    ridge: float,
    progress: Callable[..., Any],
    max_stats_bytes: int,
    report: ReconstructionReport,
    keep: dict[str, LinearStats] | None,
) -> list[tuple[Target, Update]]:
    """Statistics of every target at the full config, chunk by chunk (those in ``keep`` are
    reused; the ones measured are added to it when given), and each target's update (applied
    by the caller once all are known, so every chunk sees the dense model)."""
    lsq = mode in ("lsq", "sequential")
    known = keep or {}

    def usable(target: Target) -> bool:
        stat = known.get(target.name)
        return (
            stat is not None
            and stat.features == target.in_features
            and (stat.gram is not None or not lsq)
        )

    missing = [t for t in targets if not usable(t)]
    updates: list[tuple[Target, Update]] = []

    def solve(target: Target, stat: LinearStats) -> None:
        if stat.count == 0:
            report.skipped[target.name] = "it never ran on the calibration batches"
        else:
            updates.append((target, solve_update(target, stat, lsq, ridge)))

    measured = {id(t) for t in missing}
    for target in targets:
        if id(target) not in measured:
            solve(target, known[target.name])
    chunks = plan_chunks([t.in_features for t in missing], lsq, max_stats_bytes)
    report.batches = len(batches) if hasattr(batches, "__len__") else 0
    with space.selected(space.max_config()), _eval_mode(space.model), torch.no_grad():
        for number, chunk in enumerate(chunks, 1):
            members = [missing[i] for i in chunk]
            inputs = [(t.input_module, t.in_features) for t in members]
            desc = f"reconstruct {mode}" + (f" {number}/{len(chunks)}" if len(chunks) > 1 else "")
            stats, report.batches = collect(
                space.model, inputs, batches, forward, lsq, progress, desc
            )
            for target, stat in zip(members, stats, strict=True):
                solve(target, stat)
                if keep is not None:
                    keep[target.name] = stat
    return updates


def _reiterable(batches: Iterable[Any]) -> Iterable[Any]:
    """``batches`` itself when it can be iterated again; a one-shot iterator as a list."""
    if isinstance(batches, Sequence):
        return batches
    if isinstance(batches, Iterator) or iter(batches) is batches:
        return list(batches)
    return batches


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode inside (no dropout); every module's own training flag restored after."""
    flags = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for module, training in flags:
            module.training = training

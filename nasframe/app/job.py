"""The main job: load a language model, prune it to a budget, evaluate and save it.

This is what ``nasframe search`` runs. :func:`run_job` is a sequence of named phases — check
the settings, load the text and the model, cut the batches, measure the dense model, convert,
search, reconstruct, export, measure again, save — each timed into ``summary.json`` with every
figure a user compares before and after (perplexity, parameters, FLOPs). Models whose family
has a standard format (transformers) are also written in it, to ``OUT/transformers``, when
the pruned shape fits that format. The settings live in :mod:`nasframe.app.job_settings`,
the batches in :mod:`nasframe.app.job_data`, the measurements in
:mod:`nasframe.app.evaluation`, the outputs in :mod:`nasframe.app.job_output`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

import nasframe.distributed as distributed
from nasframe.api import convert, export
from nasframe.app.calibration.sources import calibrate_on
from nasframe.app.evaluation import mean_loss, measure, progress_bar
from nasframe.app.job_data import JobBatches, job_batches, job_key
from nasframe.app.job_output import (
    SearchOutcome,
    build_summary,
    reserve_error,
    save_model,
    write_summary,
)
from nasframe.app.job_settings import (
    JOB_SEARCH_DEFAULTS,
    JobSettings,
    check_job_settings,
    job_rules,
    resolve_device,
    weights_dtype,
    with_model_defaults,
)
from nasframe.app.lm import next_token_loss
from nasframe.app.model_registry import ModelBundle, get_model_entry
from nasframe.app.text import TextCorpus, load_corpus_file, stdlib_corpus
from nasframe.cost.budget import Constraint
from nasframe.errors import InfeasibleConstraintError, UserInputError
from nasframe.plugins import get_algorithm
from nasframe.reconstruction.reconstruct import ReconstructionReport, reconstruct
from nasframe.reconstruction.targets import bias_reserve
from nasframe.searchers.base import BaseSearcher
from nasframe.searchers.binary import BinarySearcher
from nasframe.space.search_space import SearchSpace

__all__ = ["JobReport", "JobSettings", "run_job"]


@dataclass
class JobReport:
    summary: dict[str, Any]
    out: Path
    timings: dict[str, float] = field(default_factory=dict)


def run_job(settings: JobSettings, log: Callable[[str], None] = print) -> JobReport:
    """Run the whole job and return its summary (also written to ``OUT/summary.json``).

    In a data-parallel run (``torchrun``, see :mod:`nasframe.distributed`) every rank runs
    it: scoring and evaluation are split over the ranks, and rank 0 alone writes files.
    """
    settings, constraint, searcher = _check_inputs(settings)
    out = Path(settings.out)
    timings: dict[str, float] = {}
    phase = _phase_timer(timings)

    with phase("load_data"):
        corpus = load_corpus_file(settings.data) if settings.data else stdlib_corpus()
    with phase("load_model"):
        settings, bundle = _load_model(settings, log)
    with phase("tokenize"):
        batches = job_batches(corpus, bundle.encode, settings, _weights(bundle.model)[0])
    with phase("generate"):  # the calibration rows the model samples itself (--calibration)
        bar = progress_bar(_label(f"generate ({settings.calibration})", settings))
        batches, calibration = calibrate_on(settings.calibration, batches, bundle.model, bar)
    with phase("evaluate_before"):
        before = measure(
            bundle.model,
            batches.evaluation,
            batches.dummy_input,
            _label("perplexity before", settings),
        )
    log(before.line("before:"))
    can_add_bias = _plain_bias_rule(bundle, settings)
    with phase("convert"):
        space = _convert(bundle.model, settings)
    outcome = _search(
        searcher, space, constraint, before.params, batches, settings, corpus, phase, can_add_bias
    )
    with phase("reconstruct"):
        repaired = _reconstruct(space, batches, settings, log, can_add_bias)
    with phase("export"):
        pruned = export(space, inplace=True).eval()
    with phase("evaluate_after"):
        after = measure(
            pruned, batches.evaluation, batches.dummy_input, _label("perplexity after", settings)
        )
    log(after.line("after: "))

    summary = build_summary(
        settings=settings,
        constraint=constraint,
        data_source=corpus.source,
        eval_batches=len(batches.evaluation),
        before=before,
        after=after,
        space=space,
        outcome=outcome,
        repaired=repaired,
    )
    summary["calibration"] = calibration.as_dict()
    device, dtype = _weights(pruned)
    summary["device"], summary["dtype"] = str(device), str(dtype).removeprefix("torch.")
    if not distributed.is_main():  # every rank holds the same result; rank 0 writes it
        summary["timings_s"] = timings
        return JobReport(summary, out, timings)
    with phase("save"):
        summary["exports"] = save_model(bundle, pruned, space, outcome.result.config, out, log)
    summary["timings_s"] = timings
    write_summary(out, summary)
    return JobReport(summary, out, timings)


# --- the phases ------------------------------------------------------------------------------


def _check_inputs(settings: JobSettings) -> tuple[JobSettings, Constraint, BaseSearcher]:
    """Everything checkable before loading anything: the constraint, the algorithm and the
    options it accepts, the output paths."""
    if not distributed.is_main():
        settings = replace(settings, verbose=False)  # one set of progress bars
    constraint = Constraint.parse(settings.constraint)  # fail fast, before loading anything
    searcher = get_algorithm(settings.algorithm)()
    check_job_settings(settings, searcher.config_type)
    return settings, constraint, searcher


def _load_model(
    settings: JobSettings, log: Callable[[str], None]
) -> tuple[JobSettings, ModelBundle]:
    """The model's bundle (in eval mode, on ``--device``, its weights in ``--dtype`` when
    given), and the settings with the model's sizes filled in."""
    device, dtype = resolve_device(settings.device), weights_dtype(settings.dtype)
    log(f"loading model {settings.model} on {device} ...")
    entry = get_model_entry(settings.model)
    settings = with_model_defaults(settings, entry.job_defaults)
    bundle = entry.load_bundle(
        progress=settings.verbose,
        trust_remote_code=settings.trust_remote_code,
        device=device,
        dtype=dtype,
    )
    # A loader that takes no device or dtype (a third-party one) loaded its own: move it.
    bundle.model.to(device=device, dtype=dtype)
    bundle.model.eval()
    return settings, bundle


def _plain_bias_rule(bundle: ModelBundle, settings: JobSettings) -> Callable[[str], bool] | None:
    """Where reconstruction may add a bias: a ``--uniform`` job is for the plain directory,
    so only where the family's plain config can hold one (read before converting); anywhere
    otherwise (None), since the nasframe format and GGUF hold every bias."""
    if not settings.uniform or bundle.save_plain is None or bundle.plain_biases is None:
        return None
    return bundle.plain_biases(bundle.model).__contains__


def _convert(model: torch.nn.Module, settings: JobSettings) -> SearchSpace:
    """The search space of ``model`` under the job's rules; an error when they leave nothing
    to prune."""
    space = convert(model, job_rules(settings.divisor))
    if not space.hparams and settings.divisor > 1:
        raise UserInputError(
            f"--divisor {settings.divisor} leaves nothing to prune in {settings.model}: no "
            f"prunable width has a smaller size that is a multiple of {settings.divisor}; "
            "lower --divisor."
        )
    return space


def _search(
    searcher: BaseSearcher,
    space: SearchSpace,
    constraint: Constraint,
    params_before: int,
    batches: JobBatches,
    settings: JobSettings,
    corpus: TextCorpus,
    phase: Callable[[str], Any],
    can_add_bias: Callable[[str], bool] | None = None,
) -> SearchOutcome:
    """Search ``space`` for ``constraint``, timed as the ``search`` phase.

    Reconstruction may give maps a bias they lack: a parameter budget is searched that much
    lower, so the repaired model still meets it (a budget that prunes nothing adds none).
    """
    config = _search_config(searcher, settings, batches, Path(settings.out), corpus)
    reserve = 0
    prunes = constraint.kind == "params" and constraint.limit(params_before) < params_before
    if settings.reconstruct != "none" and prunes:
        reserve = bias_reserve(space, can_add_bias)
    searched = (
        Constraint("params", constraint.limit(params_before) - reserve, relative=False)
        if reserve
        else constraint
    )
    searcher.data_identity = job_key(settings, corpus)  # a checkpoint of other data is refused
    with phase("search"):
        try:
            result = searcher.search(space, searched, batches.dummy_input, config)
        except InfeasibleConstraintError as error:
            if not reserve:
                raise
            smallest = searcher.cost_model.cost("params", space.min_config())
            mode = settings.reconstruct
            raise reserve_error(error, constraint, params_before, reserve, smallest, mode) from None
    return SearchOutcome(
        result=result,
        config=config,
        reserve=reserve,
        scoring=getattr(searcher, "importance_info", {}),
        calibration_batches=len(batches.calibration),
    )


def _reconstruct(
    space: SearchSpace,
    batches: JobBatches,
    settings: JobSettings,
    log: Callable[[str], None],
    can_add_bias: Callable[[str], bool] | None = None,
) -> ReconstructionReport:
    """Repair the kept weights from calibration activations (``--reconstruct``), adding
    biases only where ``can_add_bias`` allows."""
    repaired = reconstruct(
        space,
        batches.calibration,
        next_token_loss,
        settings.reconstruct,
        ridge=settings.ridge,
        progress=progress_bar(_label("reconstruct", settings)),
        can_add_bias=can_add_bias,
    )
    if settings.reconstruct != "none":
        bias_free = (
            f" ({len(repaired.without_bias)} without a bias the plain config cannot hold)"
            if repaired.without_bias
            else ""
        )
        readers = (
            f", {len(repaired.readers)} of them readers of the pruned hidden size"
            if repaired.readers
            else ""
        )
        log(
            f"reconstruct ({settings.reconstruct}): {len(repaired.reconstructed)} projections "
            f"repaired{bias_free}{readers} on {repaired.batches} calibration batches in "
            f"{repaired.seconds:.1f} s"
        )
    return repaired


# --- the search config -----------------------------------------------------------------------


def _search_config(
    searcher: BaseSearcher,
    settings: JobSettings,
    batches: JobBatches,
    out: Path,
    corpus: TextCorpus,
) -> dict[str, Any]:
    """The search config the chosen algorithm accepts (its config type says which keys),
    filled from the job's data."""
    accepts = searcher.config_type.supports
    config: dict[str, Any] = {"verbose": settings.verbose}
    if accepts("uniform"):
        config["uniform"] = settings.uniform
    for key, default in JOB_SEARCH_DEFAULTS.items():
        if accepts(key):
            value = getattr(settings, key)
            config[key] = default if value is None else value
    if accepts("checkpoint") and settings.use_checkpoint:
        config["checkpoint"] = settings.checkpoint or str(
            out / ".checkpoints" / f"{settings.algorithm}-{job_key(settings, corpus)}.json"
        )
    if isinstance(searcher, BinarySearcher) and searcher.uses_score_func:
        held_back = batches.held_back

        def score_func(model: torch.nn.Module) -> float:
            return -mean_loss(model, held_back)

        config["score_func"] = score_func
    if accepts("data_loader"):
        config["data_loader"] = batches.calibration
    if accepts("loss_func"):
        config["loss_func"] = next_token_loss
    if accepts("max_iter_data_loader"):
        config["max_iter_data_loader"] = len(batches.calibration)
    return config


# --- small helpers ---------------------------------------------------------------------------


def _weights(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """The device and dtype of the model's first floating-point parameter (the weights')."""
    for param in model.parameters():
        if param.is_floating_point():
            return param.device, param.dtype
    return torch.device("cpu"), torch.get_default_dtype()


def _phase_timer(timings: dict[str, float]) -> Callable[[str], Any]:
    """``with phase(name):`` records the seconds the block took as ``timings[name]``."""

    @contextmanager
    def phase(name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        timings[name] = time.perf_counter() - start

    return phase


def _label(text: str, settings: JobSettings) -> str | None:
    """A progress-bar label, or None (no bar) with --quiet."""
    return text if settings.verbose else None

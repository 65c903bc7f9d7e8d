"""Time the README's main job (``nasframe search --algo gradnas``) and compare gradnas with
fastnas on the same model and built-in text.

Runs each command as a fresh process (as a user would), ``--repeats`` times, and prints the
median wall time with the summary figures of the last run. ``--model`` passes a model (the
job's default, SmolLM2-135M, when omitted); ``--algos`` picks the algorithms (fastnas on
SmolLM2 evaluates the model about 1,700 times: hours on a CPU); ``--job-args`` adds flags to
every job, e.g. the settings of an earlier default. Usage:

    python benchmarks/default_job.py [--repeats 3] [--model byte-mlp] [--algos gradnas,fastnas]
    python benchmarks/default_job.py --model byte-mlp \
        --job-args="--allocation threshold --reconstruct none"  # the defaults before issue 6
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path


def run(algorithm: str, out: Path, model: str | None, job_args: list[str]) -> tuple[float, dict]:
    command = [
        sys.executable,
        "-m",
        "nasframe",
        "search",
        "--algo",
        algorithm,
        "--out",
        str(out),
        "--no-checkpoint",
        "--quiet",
        *(["--model", model] if model else []),
        *job_args,
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    return elapsed, json.loads((out / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("/tmp/nasframe-bench"))
    parser.add_argument("--model", help="--model for the job (default: the job's own)")
    parser.add_argument("--algos", default="gradnas,fastnas", help="comma-separated")
    parser.add_argument("--job-args", default="", help="more flags for every job (one string)")
    args = parser.parse_args()
    job_args = shlex.split(args.job_args)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
        + (f"; job flags: {shlex.join(job_args)}" if job_args else "")
    )
    for algorithm in args.algos.split(","):
        walls, summary = [], {}
        for _ in range(args.repeats):
            wall, summary = run(algorithm, args.out / algorithm, args.model, job_args)
            walls.append(wall)
        t = summary["timings_s"]
        s = summary["search"]["timings_s"]
        ppl = summary["perplexity"]
        print(
            f"{algorithm}: wall median {statistics.median(walls):.1f} s "
            f"(runs: {', '.join(f'{w:.1f}' for w in walls)}); "
            f"perplexity {ppl['before']:.3f} -> {ppl['after']:.3f}; "
            f"params {summary['params']['before']:,} -> {summary['params']['after']:,} "
            f"({summary['params']['fraction']:.1%}); "
            f"FLOPs {summary['flops']['fraction']:.1%}; "
            f"phases: load_data {t['load_data']:.1f} s, load_model {t['load_model']:.1f} s, "
            f"search {t['search']:.2f} s (importance {s.get('importance', 0):.2f}, "
            f"sensitivity {s.get('sensitivity', 0):.2f}, allocation {s.get('allocation', 0):.3f})"
        )


if __name__ == "__main__":
    main()

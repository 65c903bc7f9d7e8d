"""gradnas scoring wall time with 1 and 2 data-parallel ranks over the same batches.

Runs the CLI job as one process (all cores to torch) and under ``torchrun`` with 2 ranks (the
cores split between them), ``--repeats`` times each, and reads the scoring time (the search's
``importance`` phase) from ``summary.json``. Both runs score the same calibration batches and
must reach the same config, which the script checks. On a 2-core machine two ranks cannot
beat one process with both cores by much: the figure shows the overhead of the all-reduce and
of two model copies, not a speedup. Usage:

    python benchmarks/distributed_scoring.py [--model smollm2-135m] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run(ranks: int, job: list[str], out: Path) -> dict:
    """One job with ``ranks`` processes; its summary."""
    cores = os.cpu_count() or 1
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // ranks))}
    command = [sys.executable, "-m", "nasframe", *job, "--out", str(out)]
    if ranks > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={ranks}"]
        command = [*launcher, f"--master-port={free_port()}", *command[1:]]
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--calibration-batches", type=int, default=8)
    args = parser.parse_args()
    job = ["search", "--algo", "gradnas", "--model", args.model, "--no-checkpoint", "--quiet"]
    job += ["--calibration-batches", str(args.calibration_batches), "--eval-batches", "1"]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, model {args.model}")
    times: dict[int, list[float]] = {}
    configs: dict[int, dict] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for ranks in (1, 2):
            for repeat in range(args.repeats):
                summary = run(ranks, job, Path(scratch) / f"r{ranks}-{repeat}")
                times.setdefault(ranks, []).append(summary["search"]["timings_s"]["importance"])
                configs[ranks] = summary["hparams"]
    same = configs[1] == configs[2]
    one, two = statistics.median(times[1]), statistics.median(times[2])
    print(f"scoring, 1 process x {os.cpu_count()} threads: median {one:.1f} s {times[1]}")
    print(f"scoring, 2 ranks x {max(1, (os.cpu_count() or 1) // 2)} threads: median {two:.1f} s")
    print(f"  {times[2]}; ratio 2 ranks / 1 process {two / one:.2f}; same config: {same}")


if __name__ == "__main__":
    main()

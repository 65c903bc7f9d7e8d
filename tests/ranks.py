"""Start a Python script as torch.distributed ranks the way torchrun starts them (``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``; gloo on localhost), for the data-parallel
scoring and reconstruction tests. Each rank is a fresh process, so the tests see what a
user's run sees."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def environment(rank: int | None, world: int, port: int, timeout_s: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]),
        OMP_NUM_THREADS="1",
        NASFRAME_DIST_TIMEOUT=str(timeout_s),
    )
    if rank is not None:
        env.update(
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(world),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )
    return env


def run_script_ranks(argv: list[str], world: int, timeout_s: float = 30.0):
    """``python *argv`` as ``world`` ranks (one plain process when world is 1); (return
    codes, stderr) of each."""
    port = free_port()
    processes = [
        subprocess.Popen(
            [sys.executable, *argv],
            env=environment(None if world == 1 else rank, world, port, timeout_s),
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(world)
    ]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in processes]
    for process in processes:
        process.stderr.close()
    return results

"""One run (or one rank) of a small checkpointed search that another process may interrupt,
for tests/searchers/test_resume_sigterm.py.

Usage: ``python resume_worker.py ALGO CHECKPOINT OUT STOP_AFTER`` (with ``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` for a data-parallel rank). ALGO is gradnas or
fastnas. When STOP_AFTER is a number, the rank's loss (gradnas) or score (fastnas) call
number STOP_AFTER + 1 writes ``OUT.ready.RANK`` and waits there for the test to send SIGTERM,
so exactly STOP_AFTER calls of this rank were done; ``-`` runs to the end. SIGTERM becomes an
exception, as the ``nasframe`` command does, so the search checkpoints what it finished and
the process exits 143. A finished run writes ``OUT.RANK`` (JSON: the scores, the config and
how many calls this run made).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import torch
from gradnas_models import regression_batches
from models import ResidualMLP, seeded

import nasframe
from nasframe import distributed

BATCHES = 8


class Terminated(BaseException):
    """SIGTERM arrived (like nasframe.app.cli's: not an Exception, so nothing swallows it)."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def main() -> int:
    algorithm, checkpoint, out, stop = sys.argv[1:5]
    stop_after = None if stop == "-" else int(stop)
    signal.signal(signal.SIGTERM, _terminate)
    distributed.init_from_environment(timeout_s=float(os.environ.get("NASFRAME_DIST_TIMEOUT", 30)))
    rank = distributed.rank()
    model = seeded(ResidualMLP, 5, 8, [12, 10], 3)
    batches = regression_batches(BATCHES)
    calls = 0

    def counted(value_of):
        """``value_of`` that counts its calls and stops at call ``stop_after + 1``."""

        def wrapper(*args):
            nonlocal calls
            if stop_after is not None and calls == stop_after:
                Path(f"{out}.ready.{rank}").write_text("ready", encoding="utf-8")
                time.sleep(120)  # the test's SIGTERM ends this
            calls += 1
            return value_of(*args)

        return wrapper

    def loss(model: torch.nn.Module, batch) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(model(x), y)

    def score(model: torch.nn.Module) -> float:
        with torch.no_grad():
            local = sum(float(loss(model, b)) for b in distributed.shard(batches))
        total, count = distributed.sum_over_ranks([local, len(distributed.shard(batches))])
        return -total / count

    config = {"checkpoint": checkpoint, "verbose": False}
    if algorithm == "gradnas":
        config |= {"data_loader": batches, "loss_func": counted(loss)}
    else:
        config |= {"score_func": counted(score)}
    try:
        _, result = nasframe.search(model, "params=55%", algorithm=algorithm, config=config)
    except Terminated:
        return 143
    finally:
        distributed.shutdown()
    record = {
        "importance": {name: t.tolist() for name, t in result.importance.items()},
        "sensitivity": {
            n: {str(k): v for k, v in s.items()} for n, s in result.sensitivity.items()
        },
        "config": result.config,
        "resumed": result.resumed,
        "calls": calls,
    }
    Path(f"{out}.{rank}").write_text(json.dumps(record), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One rank of a small data-parallel search, run by tests/test_distributed.py.

Usage: ``python distributed_worker.py MODE OUT.json`` with ``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT`` set (or none of them: one process). MODE is ``gradnas``,
``fastnas`` or ``fail`` (rank 1 raises in its loss function, as a crashing rank would).
"""

from __future__ import annotations

import json
import os
import sys

import torch
from gradnas_models import MLP, regression_batches, squared_error

import nasframe
from nasframe import distributed


def main() -> None:
    mode, out = sys.argv[1], sys.argv[2]
    distributed.init_from_environment(timeout_s=float(os.environ.get("NASFRAME_DIST_TIMEOUT", 30)))
    torch.manual_seed(0)
    model = MLP(d=5, hidden=12, out=3)
    batches = regression_batches(5)  # 5 batches: two rounds of 2 and a partial round of 1
    if mode == "fastnas":

        def score(m: torch.nn.Module) -> float:
            with torch.no_grad():
                local = sum(float(squared_error(m, b)) for b in distributed.shard(batches))
            total, count = distributed.sum_over_ranks([local, len(distributed.shard(batches))])
            return -total / count

        config = {"score_func": score, "verbose": False}
    else:

        def loss(m: torch.nn.Module, batch) -> torch.Tensor:
            if mode == "fail" and distributed.rank() == 1:
                raise RuntimeError("rank 1 fails on purpose")
            return squared_error(m, batch)

        config = {"data_loader": batches, "loss_func": loss, "verbose": False}
    algorithm = "fastnas" if mode == "fastnas" else "gradnas"
    _, result = nasframe.search(model, "params=60%", algorithm=algorithm, config=config)
    record = {
        "rank": distributed.rank(),
        "world_size": distributed.world_size(),
        "importance": {name: t.tolist() for name, t in result.importance.items()},
        "config": result.config,
    }
    with open(f"{out}.{distributed.rank()}", "w", encoding="utf-8") as handle:
        json.dump(record, handle)
    distributed.shutdown()


if __name__ == "__main__":
    main()

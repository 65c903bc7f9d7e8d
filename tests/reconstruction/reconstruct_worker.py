"""One rank of a data-parallel reconstruction, run by test_reconstruct_statistics.py.

Usage: ``python reconstruct_worker.py OUT.json`` with ``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT`` set (or none of them: one process). Every rank writes the
reconstructed weights it holds to ``OUT.json.RANK``.
"""

from __future__ import annotations

import json
import sys

import torch
from models import MLP, seeded

import nasframe
from nasframe import distributed


def main() -> None:
    out = sys.argv[1]
    distributed.init_from_environment(timeout_s=30)
    model = seeded(MLP, 5, [12, 10], 3).double()
    space = nasframe.convert(model)
    space.select({"layers.0.out_features": 7, "layers.1.out_features": 4})
    generator = torch.Generator().manual_seed(3)
    batches = [torch.randn(16, 5, generator=generator, dtype=torch.float64) for _ in range(5)]
    report = nasframe.reconstruct(space, batches, lambda m, batch: m(batch), "lsq")
    record = {
        "rank": distributed.rank(),
        "world_size": distributed.world_size(),
        "reconstructed": report.reconstructed,
        "weights": {name: p.detach().flatten().tolist() for name, p in model.named_parameters()},
    }
    with open(f"{out}.{distributed.rank()}", "w", encoding="utf-8") as handle:
        json.dump(record, handle)
    distributed.shutdown()


if __name__ == "__main__":
    main()

"""What the model-loading tests share: the small search command and reading its results."""

from __future__ import annotations

import json
from pathlib import Path

import torch

SMALL = [
    "--seq-len",
    "16",
    "--batch-size",
    "4",
    "--calibration-batches",
    "4",
    "--score-batches",
    "2",
    "--eval-batches",
    "2",
    "--divisor",
    "16",
    "--quiet",
]


def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


def token_ids(vocab: int, rows: int = 2, length: int = 12) -> torch.Tensor:
    return torch.randint(0, vocab, (rows, length), generator=torch.Generator().manual_seed(3))


def read_summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))


def search_argv(model: Path | str, corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["search", "--model", str(model), "--data", str(corpus), "--out", str(out)] + [
        *SMALL,
        *extra,
    ]

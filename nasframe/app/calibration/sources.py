"""The job's calibration source: its text, text the dense model generates, or half of each.

``--calibration text`` calibrates on the job's text (the built-in docstrings or ``--data``).
``generated`` replaces those rows by rows of the same length that the dense model samples
itself (:mod:`nasframe.app.calibration.generated`), each starting from the first token of
the text row it replaces; ``mix`` replaces every second row. The held-back rows fastnas
measures and the evaluation rows stay text: only what the model is scored and repaired on
changes, never what it is measured on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nasframe.app.calibration.generated import sample_rows

if TYPE_CHECKING:
    from nasframe.app.job_data import JobBatches

CALIBRATION_SOURCES = ("text", "generated", "mix")
GENERATION_SEED = 0


@dataclass(frozen=True)
class CalibrationInfo:
    """What ``summary.json`` records of the calibration rows."""

    source: str
    rows: int
    generated_rows: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rows": self.rows,
            "generated_rows": self.generated_rows,
            "generate_s": round(self.seconds, 3),
        }


def calibrate_on(
    source: str,
    batches: JobBatches,
    model: nn.Module,
    progress: Callable[[Iterable[Any]], Iterable[Any]] = lambda it: it,
) -> tuple[JobBatches, CalibrationInfo]:
    """``batches`` with its calibration rows from ``source`` (see the module docstring)."""
    rows = [row for batch in batches.calibration for row in batch]
    if source == "text" or not rows:
        return batches, CalibrationInfo(source, len(rows), 0, 0.0)
    replaced = list(range(len(rows))) if source == "generated" else list(range(1, len(rows), 2))
    start = time.perf_counter()
    first = torch.stack([rows[i][0] for i in replaced])
    generated = sample_rows(model, first, rows[0].numel(), seed=GENERATION_SEED, progress=progress)
    seconds = time.perf_counter() - start
    for i, row in zip(replaced, generated, strict=True):
        rows[i] = row.to(rows[i].dtype)
    sizes = [len(batch) for batch in batches.calibration]
    calibration = list(torch.stack(rows).split(sizes))
    info = CalibrationInfo(source, len(rows), len(replaced), seconds)
    return replace(batches, calibration=calibration), info

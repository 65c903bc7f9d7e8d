"""Search state on disk, so an interrupted search resumes where it stopped.

The state is plain JSON (floats round-trip exactly), written atomically after every phase
step. It records what it was computed for (algorithm, hparam names and choices); resuming
with a different search space is refused rather than silently mixing results.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

import nasframe.distributed as distributed
from nasframe.errors import UserInputError
from nasframe.io.atomic import atomic_write_json

CHECKPOINT_VERSION = 1


class SearchCheckpoint:
    """Importance per unit and sensitivity per choice, per hparam; saved as they are made."""

    def __init__(self, path: str | os.PathLike | None, fingerprint: Mapping[str, Any]) -> None:
        self.path = Path(path) if path is not None else None
        self.fingerprint = json.loads(json.dumps(fingerprint))
        self.importance: dict[str, torch.Tensor] | None = None
        self.sensitivity: dict[str, dict[int, float]] = {}
        self.extra: dict[str, Any] = {}
        if self.path is not None and self.path.exists():
            self._load()

    @property
    def resumed(self) -> bool:
        return self.importance is not None or bool(self.sensitivity)

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise UserInputError(
                f"checkpoint {self.path} is unreadable ({error}); delete it to start the search "
                "afresh."
            ) from error
        if data.get("version") != CHECKPOINT_VERSION or data.get("fingerprint") != self.fingerprint:
            raise UserInputError(
                f"checkpoint {self.path} was written by a different search (algorithm, search "
                "space or version differ); delete it or pass another checkpoint path."
            )
        if data.get("importance") is not None:
            self.importance = {
                name: torch.tensor(values, dtype=torch.float32)
                for name, values in data["importance"].items()
            }
        self.sensitivity = {
            name: {int(choice): float(value) for choice, value in per_choice.items()}
            for name, per_choice in data.get("sensitivity", {}).items()
        }
        self.extra = data.get("extra", {})

    def save(self) -> None:
        """Write the checkpoint (atomically); in a data-parallel run only rank 0 writes, the
        other ranks hold the same state."""
        if self.path is None or not distributed.is_main():
            return
        atomic_write_json(
            self.path,
            {
                "version": CHECKPOINT_VERSION,
                "fingerprint": self.fingerprint,
                "importance": None
                if self.importance is None
                else {name: t.tolist() for name, t in self.importance.items()},
                "sensitivity": {
                    name: {str(c): v for c, v in per_choice.items()}
                    for name, per_choice in self.sensitivity.items()
                },
                "extra": self.extra,
            },
        )


@torch.no_grad()
def weights_digest(model: nn.Module) -> str:
    """A digest of the model's weights that ignores the order of units within a dimension.

    A search sorts units (permutes weights) before it writes its first sensitivity, so the
    digest must be the same before and after: it hashes each parameter's shape, sum and sum of
    squares (float64, rounded to 9 significant digits). A checkpoint of a retrained model of
    the same shape is then refused instead of silently reused.
    """
    summary = []
    for name, param in sorted(model.named_parameters(), key=lambda item: item[0]):
        values = param.detach().double()
        total, squares = float(values.sum()), float((values * values).sum())
        summary.append([name, list(param.shape), f"{total:.9g}", f"{squares:.9g}"])
    return hashlib.sha256(json.dumps(summary).encode()).hexdigest()[:16]

"""Search state on disk, so an interrupted search resumes where it stopped.

The state is plain JSON (floats round-trip exactly), written atomically after every phase
step, and every few seconds while an algorithm computes importance (its *partial* state, e.g.
gradnas's score sums after the batches done). It records what it was computed for (the
fingerprint: algorithm, hparam names and choices, weights digest, the data's identity where
the caller gave one); resuming with anything else is refused rather than silently mixing
results.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
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
        #: JSON state of an importance computation that was interrupted (None: none), for
        #: the algorithm to resume from; dropped once ``importance`` is set.
        self.partial_importance: dict[str, Any] | None = None
        if self.path is not None:
            text = _read_on_rank_0(self.path)
            if text is not None:
                self._load(text)

    @property
    def resumed(self) -> bool:
        return (
            self.importance is not None
            or bool(self.sensitivity)
            or self.partial_importance is not None
        )

    def _load(self, text: str | _Unreadable) -> None:
        try:
            if isinstance(text, _Unreadable):
                raise text
            data = json.loads(text)
        except (_Unreadable, json.JSONDecodeError) as error:
            raise UserInputError(
                f"checkpoint {self.path} is unreadable ({error}); delete it to start the search "
                "afresh."
            ) from error
        if data.get("version") != CHECKPOINT_VERSION or data.get("fingerprint") != self.fingerprint:
            raise UserInputError(
                f"checkpoint {self.path} was written by a different search "
                f"({_differences(data, self.fingerprint)} differ); delete it or pass another "
                "checkpoint path."
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
        if self.importance is None:
            self.partial_importance = data.get("partial_importance")

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
                "partial_importance": None
                if self.importance is not None
                else self.partial_importance,
            },
        )


class _Unreadable(Exception):
    """Rank 0 could not read the checkpoint (the reason is the message)."""


def _read_on_rank_0(path: Path) -> str | _Unreadable | None:
    """The checkpoint's text (None: no file; the error when unreadable), as rank 0 read it.

    In a data-parallel run rank 0 reads and sends it to every rank: a rank that started
    later must not read what rank 0 has written since (a partial scoring state ahead of its
    own would desynchronise the ranks' collectives), nor need the file on its own disk.
    """
    content: str | _Unreadable | None = None
    if distributed.is_main():
        try:
            content = path.read_text(encoding="utf-8") if path.exists() else None
        except (OSError, UnicodeDecodeError) as error:
            content = _Unreadable(str(error))
    if distributed.is_active():
        box = [content]
        dist.broadcast_object_list(box, src=0)
        content = box[0]
    return content


#: How the fingerprint's keys read in an error message.
_FINGERPRINT_WORDS = {
    "algorithm": "algorithm",
    "hparams": "search space",
    "weights": "weights",
    "data": "calibration data",
    "scoring": "scoring settings",
}


def _differences(data: Mapping[str, Any], fingerprint: Mapping[str, Any]) -> str:
    """Which parts of a stored fingerprint differ from ``fingerprint``, in words."""
    if data.get("version") != CHECKPOINT_VERSION:
        return "checkpoint version"
    stored = data.get("fingerprint") or {}
    keys = sorted(
        set(stored) | set(fingerprint), key=lambda key: (key not in _FINGERPRINT_WORDS, key)
    )
    words = [
        _FINGERPRINT_WORDS.get(key, key) for key in keys if stored.get(key) != fingerprint.get(key)
    ]
    return ", ".join(words) or "fingerprint"


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

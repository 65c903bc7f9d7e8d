"""Where an interrupted gradnas scoring stands, in a form a checkpoint holds.

A scoring is resumable at the end of every *round* (one batch per data-parallel rank, summed
over the ranks): the raw sums of squared mask gradients, the batches done and the
convergence counter then describe it completely. The sums are stored exactly (JSON floats
round-trip float32 and float64 bit for bit), so a resumed run adds the remaining batches to
the very same numbers, in the same order, and ends with the scores an uninterrupted run has.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from gradnas.data_manager import GradientDataManager
from nasframe.errors import UserInputError

STATE_VERSION = 1


@dataclass(frozen=True)
class ScoringState:
    """A scoring after ``batches`` batches (a whole number of rounds)."""

    #: Calibration batches already added to ``sums``: a resumed run skips that many.
    batches: int
    #: Consecutive rounds the mean score moved less than the convergence tolerance.
    calm: int
    #: Each manager's raw sum of squared mask gradients (copies, in the managers' order).
    sums: tuple[torch.Tensor, ...]

    @classmethod
    def of(cls, managers: Sequence[GradientDataManager], batches: int, calm: int) -> ScoringState:
        """A snapshot of the managers now (their sums are copied: scoring goes on)."""
        return cls(batches, calm, tuple(m.accumulated.detach().clone() for m in managers))

    def restore(self, managers: Sequence[GradientDataManager]) -> None:
        """Put the sums back into ``managers`` (same order, as :meth:`of` took them)."""
        for manager, total in zip(managers, self.sums, strict=True):
            manager.accumulated = total
            manager.num_batches = self.batches

    def to_json(self, labels: Sequence[str]) -> dict[str, Any]:
        """The state as JSON; ``labels`` name each manager's hparam (checked on load)."""
        return {
            "version": STATE_VERSION,
            "batches": self.batches,
            "calm": self.calm,
            "masks": [
                {"hparam": label, "shape": list(total.shape), "sum": total.cpu().tolist()}
                for label, total in zip(labels, self.sums, strict=True)
            ],
        }

    @classmethod
    def from_json(
        cls,
        data: Mapping[str, Any],
        labels: Sequence[str],
        managers: Sequence[GradientDataManager],
    ) -> ScoringState:
        """The state ``to_json`` wrote, for ``managers`` (dtype and device of their sums); an
        error when it describes other masks than these."""
        masks = data.get("masks", [])
        expected = [
            (label, list(m.accumulated.shape)) for label, m in zip(labels, managers, strict=True)
        ]
        found = [(mask.get("hparam"), mask.get("shape")) for mask in masks]
        if data.get("version") != STATE_VERSION or found != expected:
            raise UserInputError(
                "the checkpoint's partial gradnas scores belong to other masks than this "
                "model's gradient setups attach (a plugin or nasframe changed); delete the "
                "checkpoint to score afresh."
            )
        sums = tuple(
            torch.tensor(mask["sum"], dtype=m.accumulated.dtype, device=m.accumulated.device)
            for mask, m in zip(masks, managers, strict=True)
        )
        return cls(int(data["batches"]), int(data["calm"]), sums)


def data_digest(data_loader: Any) -> str | None:
    """A digest of calibration batches held in a list or tuple (tensors, numbers, strings,
    nested in tuples, lists and dicts), so a checkpoint of other data is refused; None for
    anything else (a DataLoader, a generator: reading it here would consume or reshuffle it).
    """
    if not isinstance(data_loader, list | tuple):
        return None
    digest = hashlib.sha256()
    try:
        for batch in data_loader:
            _feed(digest, batch)
    except _Unknown:
        return None
    return digest.hexdigest()[:16]


class _Unknown(Exception):
    """A batch holds something :func:`data_digest` cannot read."""


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, bool | int | float | str | None):
        digest.update(f"V{type(value).__name__}{value!r}".encode())
    elif isinstance(value, list | tuple):
        digest.update(f"L{len(value)}".encode())
        for item in value:
            _feed(digest, item)
    elif isinstance(value, Mapping):
        digest.update(f"M{len(value)}".encode())
        for key in sorted(value, key=str):
            digest.update(f"K{key!r}".encode())
            _feed(digest, value[key])
    else:
        raise _Unknown

"""The fastnas searcher: L1 ranking plus measured sensitivity, on the shared binary search."""

from __future__ import annotations

from typing import ClassVar

import torch

from fastnas.importance import l1_importance
from nasframe.searchers.binary import BinarySearcher
from nasframe.searchers.config import BinarySearchConfig


class FastNASSearcher(BinarySearcher):
    """Ranks units by weight magnitude; measures each choice with ``score_func``."""

    name = "fastnas"
    #: fastnas adds no keys of its own: the binary search's, with ``score_func`` required
    #: (checked when the first sensitivity is measured).
    config_type: ClassVar[type[BinarySearchConfig]] = BinarySearchConfig

    def compute_importance(self, names: list[str]) -> dict[str, torch.Tensor]:
        return {name: l1_importance(self.space, self.space.hparams[name]) for name in names}

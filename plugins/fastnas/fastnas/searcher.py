"""The fastnas searcher: L1 ranking plus measured sensitivity, on the shared binary search."""

from __future__ import annotations

import torch

from fastnas.importance import l1_importance
from nasframe.searchers.binary import BinarySearcher


class FastNASSearcher(BinarySearcher):
    """Ranks units by weight magnitude; measures each choice with ``score_func``."""

    name = "fastnas"

    def compute_importance(self, names: list[str]) -> dict[str, torch.Tensor]:
        return {name: l1_importance(self.space, self.space.hparams[name]) for name in names}

"""Module implementing gradnas pruning algorithm for search.

gradnas algorithm gives a better score to sort various pruning choices over L1 norm
(fastnas) for language models. Further, it scores hparams that are implemented only
abstractly: the heads of a multi-head attention layer own no tensor parameter, yet each gets a
score.

The prunable choices of an hparam are ranked by ``Sum((gradient of loss wrt pruning mask)^2)``.
The pruning mask of an hparam is a binary mask indicating which choices of the hparam are
pruned (0 means pruned and 1 means not pruned); while calculating the backward gradient of
the loss, the masks are 1 at all tensors, so the full model is what is measured.
"""

from gradnas.data_manager import GradientDataManager
from gradnas.registry import GradientSetupRegistry
from gradnas.searcher import GradientBinarySearcher
from gradnas.setups import setup_attention_heads, setup_linear_input

SETUP_GRADIENT_FUNC = GradientBinarySearcher.SETUP_GRADIENT_FUNC

__all__ = [
    "SETUP_GRADIENT_FUNC",
    "GradientBinarySearcher",
    "GradientDataManager",
    "GradientSetupRegistry",
    "setup_attention_heads",
    "setup_linear_input",
]

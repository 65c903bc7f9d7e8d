"""fastnas: the L1-norm baseline.

Units are ranked by the L1 norm of the weights they own; the sensitivity of each allowed size
of each hparam is *measured* by evaluating the user's ``score_func`` on the model pruned to
that size (one evaluation per choice per hparam: slow, but it needs no gradients).
"""

from fastnas.importance import l1_importance
from fastnas.searcher import FastNASSearcher

__all__ = ["FastNASSearcher", "l1_importance"]

"""nasframe: structured pruning and architecture search for PyTorch models.

``convert`` a model into a search space, ``search`` it under one budget with a registered
algorithm (``gradnas``, ``fastnas``, or a plugin's), ``export`` a smaller dense model and
``save``/``load`` it without pickles. ``reconstruct`` repairs the kept weights of a pruned
config from calibration activations, without training.
"""

from nasframe.api import search
from nasframe.constraints import Constraint, CostModel
from nasframe.dynamic import DynamicModule, LinearMap, SlotDim
from nasframe.errors import InfeasibleConstraintError, UserInputError
from nasframe.export import export
from nasframe.hparam import ChoiceRule, Hparam
from nasframe.linear_targets import bias_reserve
from nasframe.reconstruct import RECONSTRUCT_MODES, ReconstructionReport, reconstruct
from nasframe.searcher import BaseSearcher, BinarySearcher, SearchResult
from nasframe.serialization import load, save
from nasframe.space import SearchSpace, convert

__all__ = [
    "BaseSearcher",
    "BinarySearcher",
    "ChoiceRule",
    "Constraint",
    "CostModel",
    "DynamicModule",
    "Hparam",
    "InfeasibleConstraintError",
    "LinearMap",
    "RECONSTRUCT_MODES",
    "ReconstructionReport",
    "SearchResult",
    "SearchSpace",
    "SlotDim",
    "UserInputError",
    "bias_reserve",
    "convert",
    "export",
    "load",
    "reconstruct",
    "save",
    "search",
]

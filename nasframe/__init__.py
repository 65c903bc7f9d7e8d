"""nasframe: structured pruning and architecture search for PyTorch models.

``convert`` a model into a search space, ``search`` it under one budget with a registered
algorithm (``gradnas``, ``fastnas``, or a plugin's), ``export`` a smaller dense model and
``save``/``load`` it without pickles. ``reconstruct`` repairs the kept weights of a pruned
config from calibration activations, without training.
"""

from nasframe.api import convert, export, load, search
from nasframe.cost.budget import Constraint
from nasframe.cost.cost_model import CostModel
from nasframe.errors import InfeasibleConstraintError, UserInputError
from nasframe.io.serialization import save
from nasframe.reconstruction.reconstruct import RECONSTRUCT_MODES, ReconstructionReport, reconstruct
from nasframe.reconstruction.targets import bias_reserve
from nasframe.searchers.base import BaseSearcher, SearchResult
from nasframe.searchers.binary import BinarySearcher
from nasframe.space.dynamic import DynamicModule, LinearMap, SlotDim
from nasframe.space.hparam import ChoiceRule, Hparam
from nasframe.space.search_space import SearchSpace

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

"""Binary searcher for gradient algorithm.

gradnas ranks the units of each hparam by ``Sum((d loss / d mask)^2)`` over calibration
batches, where a mask of ones multiplies the hparam's units. The degradation of keeping ``k``
units is the score mass of the units it prunes, so sensitivities cost no extra model
evaluation; the threshold search is then exactly fastnas's.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import torch
from torch import nn

from gradnas.config import GradnasConfig
from gradnas.data_manager import GradientDataManager
from gradnas.registry import GradientSetupRegistry
from gradnas.scoring import accumulate_mask_gradients
from gradnas.scoring_state import ScoringState, data_digest
from gradnas.setups import setup_residual_stream
from nasframe.searchers.binary import BinarySearcher
from nasframe.space.dynamic import DynamicModule
from nasframe.space.hparam import Hparam


class GradientBinarySearcher(BinarySearcher):
    """Binary searcher for gradient algorithm: units ranked by squared mask gradients.

    Usage::

        searcher = GradientBinarySearcher()
        result = searcher.search(
            space,  # nasframe.convert(model)
            "params=80%",
            dummy_input=x,
            config={"data_loader": batches, "loss_func": loss_func},
        )
        pruned = nasframe.export(space)  # the space now holds result.config

    ``search`` (inherited from :class:`~nasframe.searchers.base.BaseSearcher`):

    Args:
        space: The search space of the model, from ``nasframe.convert``. Its units are
            sorted by importance and it is left on the found config.
        constraints: The budget: ``"params=80%"``, ``{"flops": 1e9}`` or a
            :class:`~nasframe.cost.budget.Constraint`.
        dummy_input: An input of the model, needed to count FLOPs.
        config: The search config (keys and checks: :class:`gradnas.config.GradnasConfig`):
            ``data_loader`` (calibration batches) and ``loss_func`` (``loss_func(model,
            batch)`` -> scalar tensor) are required; ``max_iter_data_loader``,
            ``average_scores``, ``convergence_*``, and the binary search's ``uniform``,
            ``allocation``, ``normalize``, ``min_keep``, ``checkpoint``, ``verbose`` are
            optional. A ``score_func`` is ignored with a warning.

    Returns:
        A :class:`~nasframe.searchers.base.SearchResult`: the found config, the cost before
        and after, each hparam's unit scores (``importance``) and per-size degradation
        (``sensitivity``), and the time per phase.

    Raises:
        UserInputError: A bad config key or value, or a model with nothing to score.
        InfeasibleConstraintError: No allowed sizes meet the constraint.
    """

    name = "gradnas"
    uses_score_func = False

    #: DynamicModule type -> setup(module) -> (GradientDataManager, RemovableHandle) | None.
    #: Filled from every plugin's ``nasframe_gradient_setups`` hook.
    SETUP_GRADIENT_FUNC: ClassVar[GradientSetupRegistry] = GradientSetupRegistry()
    config_type: ClassVar[type[GradnasConfig]] = GradnasConfig
    settings: GradnasConfig | None

    @property
    def num_batches(self) -> int:
        """Calibration batches the last scoring used (also after resuming a checkpoint)."""
        return self.importance_info.get("num_batches", 0)

    @property
    def stopped_early(self) -> bool:
        """Whether the last scoring stopped early because the scores had converged."""
        return self.importance_info.get("stopped_early", False)

    @property
    def score_func(self):
        return self.gradnas_score_func

    @staticmethod
    def gradnas_score_func(model: nn.Module) -> float:
        """Score function for gradnas algorithm.

        If we prune N neurons from layer L, the total degradation is the sum of degradation
        values of the N pruned neurons. In fast algorithm, the degradation due to pruning is
        estimated directly from validation_score(model after pruning). Rest of the algorithm
        is exactly the same as fast algorithm.
        """
        degradation = 0.0
        for hparam in _scored_hparams(model):
            if hparam.active < hparam.max:
                kept = float(hparam.importance[hparam.active_slice].sum())
                degradation += float(hparam.importance.sum()) - kept
        return -degradation

    def fingerprint(self) -> dict[str, Any]:
        """The binary search's fingerprint; the data's identity, when the caller set none, is
        a digest of the calibration batches if they are held in a list (partial score sums of
        other data must never be resumed)."""
        fingerprint = super().fingerprint()
        if "data" not in fingerprint:
            digest = data_digest(self.settings.data_loader)
            if digest is not None:
                fingerprint["data"] = digest
        return fingerprint

    def scoring_fingerprint(self) -> dict[str, Any]:
        """The settings the scores depend on: how many batches, when to stop, averaging."""
        settings = self.settings
        return {
            "max_batches": settings.max_iter_data_loader,
            "average_scores": settings.average_scores,
            "convergence": [
                settings.convergence_tol,
                settings.convergence_patience,
                settings.convergence_min_batches,
            ],
        }

    def compute_sensitivity(self, name: str) -> dict[int, float]:
        """The score mass each allowed size of ``name`` prunes, every other hparam at full
        size: what ``gradnas_score_func`` gives, read off the scores without the model."""
        hparam = self.space.hparams[name]
        total = float(hparam.importance.sum())
        return {
            size: total - float(hparam.importance[hparam.slice_for(size)].sum())
            for size in hparam.choices
        }

    def hparam_names_for_search(self) -> list[str]:
        """We can only optimize over certain types of hparams in gradient binary search."""
        scorable = {
            id(hparam)
            for _, module in self.space.dynamic_modules()
            for hparam in self._setup_hparams(module)
        }
        scorable |= {id(self.space.all_hparams[name]) for name in self.space.residual_streams}
        names = [name for name, hp in self.space.hparams.items() if id(hp) in scorable]
        skipped = [name for name in self.space.hparams if name not in names]
        if skipped:
            warnings.warn(
                "gradnas has no gradient setup for these hparams, which stay at full size: "
                f"{', '.join(skipped)}.",
                stacklevel=2,
            )
        return names

    def _setup(self, module: DynamicModule) -> list[tuple[GradientDataManager, Any]]:
        """Attach ``module``'s masks: every (manager, handle) its setup returns."""
        setup = self.SETUP_GRADIENT_FUNC.for_module(module)
        result = setup(module) if setup is not None else None
        if result is None:
            return []
        return list(result) if isinstance(result, list) else [result]

    def _setup_hparams(self, module: DynamicModule) -> list[Hparam]:
        """The hparams a setup of ``module`` would score (without attaching anything)."""
        pairs = self._setup(module)
        for _, handle in pairs:
            handle.remove()
        return [manager.hparam for manager, _ in pairs if manager.hparam is not None]

    def compute_importance(self, names: list[str]) -> dict[str, torch.Tensor]:
        """Setup search with gradient-based score: attach masks, run the data, sum scores."""
        wanted = {id(self.space.hparams[name]): name for name in names}
        managers, handles = [], []
        model = self.space.model
        was_training = model.training
        try:
            for _, module in self.space.dynamic_modules():
                for manager, handle in self._setup(module):
                    handles.append(handle)
                    if manager.hparam is not None and id(manager.hparam) in wanted:
                        managers.append(manager)
            for name, writers in self.space.residual_streams.items():
                hparam = self.space.all_hparams[name]
                if id(hparam) in wanted:
                    manager, handle = setup_residual_stream(model, hparam, writers)
                    handles.append(handle)
                    managers.append(manager)
            model.eval()  # deterministic scores: no dropout
            settings = self.settings
            labels = [wanted[id(manager.hparam)] for manager in managers]
            partial = self.partial_importance()
            report = accumulate_mask_gradients(
                model,
                managers,
                settings.data_loader,
                settings.loss_func,
                settings.max_iter_data_loader,
                settings.convergence,
                progress=self.progress,
                resume=None
                if partial is None
                else ScoringState.from_json(partial, labels, managers),
                save=lambda state: self.save_partial_importance(state.to_json(labels)),
                save_interval_s=self.SAVE_INTERVAL_S,
            )
        finally:
            for handle in handles:
                handle.remove()
            model.train(was_training)
        self.importance_info = {
            "num_batches": report.num_batches,
            "stopped_early": report.stopped_early,
        }
        scores = {name: torch.zeros(self.space.hparams[name].max) for name in names}
        for manager in managers:
            scores[wanted[id(manager.hparam)]] += manager.score.detach().float().cpu()
        if self.settings.average_scores:
            scores = {name: s / report.num_batches for name, s in scores.items()}
        return scores


def _scored_hparams(model: nn.Module) -> list[Hparam]:
    """Distinct hparams of ``model`` that carry importance scores."""
    seen: dict[int, Hparam] = {}
    for module in model.modules():
        if isinstance(module, DynamicModule):
            for slot in module.slots:
                hparam = module.get_hparam(slot)
                if hparam is not None and hparam.importance is not None:
                    seen.setdefault(id(hparam), hparam)
    return list(seen.values())

"""The peer baseline: Torch-Pruning's group Taylor importance at a parameter budget, when the
package is importable (this benchmark never installs it)."""

from __future__ import annotations

import copy
import importlib.util
import time
from collections.abc import Mapping

from torch import nn

from nasframe.app.lm import next_token_loss, perplexity

from .data import Data, count_params
from .provenance import package_version
from .search import Run
from .settings import TORCH_PRUNING, Settings


def torch_pruning_missing() -> str | None:
    """Why Torch-Pruning cannot run here, or None when it is importable."""
    if importlib.util.find_spec("torch_pruning") is None:
        return "not installed, not run"
    return None


def prune_with_torch_pruning(
    model: nn.Module, budget: int, data: Data, dense: Mapping[str, float], settings: Settings
) -> Run:
    """Torch-Pruning's group Taylor importance (|w * dL/dw| over the calibration batches),
    global ranking, pruned to at most ``budget``% of the parameters.

    Torch-Pruning takes a pruning *ratio*, not a parameter count, so the ratio is bisected
    (each try prunes a fresh copy) and the largest model within the budget is kept. Hidden
    size and FFN widths are pruned; head counts and head dims are kept (RoPE rotates the head
    dim), and the LM head's vocabulary is never pruned. Untested here: the package is not
    installed on the machine this script was written on.
    """
    import torch_pruning as tp

    importance_type = (
        getattr(tp.importance, "GroupTaylorImportance", None) or tp.importance.TaylorImportance
    )
    limit = budget / 100 * dense["params"]
    start = time.perf_counter()
    base = copy.deepcopy(model)
    for param in base.parameters():
        param.requires_grad_(True)
    base.zero_grad(set_to_none=True)
    for batch in data.calibration:
        next_token_loss(base, batch).backward()  # gradients are copied with each try's model

    def attempt(ratio: float) -> nn.Module:
        candidate = copy.deepcopy(base)
        config = candidate.config
        num_heads = {}
        for layer in candidate.model.layers:
            attention = layer.self_attn
            num_heads[attention.q_proj] = config.num_attention_heads
            num_heads[attention.k_proj] = config.num_key_value_heads
            num_heads[attention.v_proj] = config.num_key_value_heads
        pruner = tp.pruner.MetaPruner(
            candidate,
            example_inputs=data.calibration[0][:1, :-1],
            importance=importance_type(),
            global_pruning=True,
            pruning_ratio=ratio,
            ignored_layers=[candidate.lm_head],
            num_heads=num_heads,
            prune_num_heads=False,
            prune_head_dims=False,
            round_to=settings.divisor,
        )
        pruner.step()
        return candidate

    low, high, best = 0.0, 0.95, None
    for _ in range(8):
        ratio = (low + high) / 2
        candidate = attempt(ratio)
        if count_params(candidate) <= limit:
            best, high = candidate, ratio
        else:
            low = ratio
    if best is None:
        raise RuntimeError(f"no pruning ratio up to {high} met {budget}% of the parameters")
    search_s = time.perf_counter() - start
    best.zero_grad(set_to_none=True)
    best.eval()
    ppl = perplexity(best, data.evaluation)
    params = count_params(best)
    return Run(
        method=TORCH_PRUNING,
        budget=budget,
        perplexity=ppl,
        params=params,
        fraction=params / dense["params"],
        ratio_to_dense=ppl / dense["perplexity"],
        search_s=search_s,
        info={"importance": importance_type.__name__, "version": package_version("torch-pruning")},
    )

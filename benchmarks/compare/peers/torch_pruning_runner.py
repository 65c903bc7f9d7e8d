"""Torch-Pruning (``torch_pruning``, 1.5+) as a peer: its dependency graph and its group
Taylor and Hessian importances, pruned to a parameter budget without finetuning.

What it prunes: the FFN channels of every layer (``gate_proj``/``up_proj`` rows with the
``down_proj`` columns, coupled by its dependency graph), ranked globally across layers, kept
widths in multiples of ``round_to``. The hidden size, the vocabulary and attention are kept
whole: Torch-Pruning 1.6 cannot prune grouped-query attention heads of transformers 5's Llama
(see :data:`ATTENTION_NOTE`), so the embedding, the LM head and every q/k/v/o projection are
in ``ignored_layers``.

Torch-Pruning takes a pruning *ratio*, not a parameter count: the ratio is bisected on one
dependency graph with dry runs (the groups it would prune are counted, nothing is changed),
then the model is pruned once at the largest ratio's complement that meets the budget.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

TAYLOR, HESSIAN = "taylor", "hessian"
IMPORTANCES = (TAYLOR, HESSIAN)
ATTENTION_NOTE = (
    "Torch-Pruning 1.6 does not prune the attention heads of transformers 5's grouped-query "
    "Llama: with the model's KV cache its dependency tracing never ends (the cache's "
    "concatenation closes a loop; VainF/Torch-Pruning#527 reports the same hang on Qwen3); "
    "with use_cache=False and SDPA it couples q/k/v/o with the key/value width; with eager "
    "attention it builds the group but counts the heads of the first projection it meets "
    "(v_proj's KV heads), asks to remove more query heads than a group has and drops the "
    "group; with num_heads on q_proj alone it prunes single k/v channels (head dims, which "
    "RoPE rotates). So its rows prune FFN channels only"
)


def torch_pruning_missing() -> str | None:
    """Why Torch-Pruning cannot run here, or None when it is importable."""
    if importlib.util.find_spec("torch_pruning") is None:
        return "not installed, not run"
    return None


def gradient_moments(
    model: nn.Module, batches: Iterable[torch.Tensor]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], int]:
    """Per parameter: the sum of the per-sequence gradients and of their squares, and the
    number of sequences. One forward and backward per row (a row's loss is its mean
    next-token loss), so the squares are per-sample, as the Hessian (Fisher) diagonal of
    Optimal Brain Damage needs; the sum is the Taylor importance's gradient."""
    params = {name: p for name, p in model.named_parameters()}
    for param in params.values():
        param.requires_grad_(True)
    total = {name: torch.zeros_like(p) for name, p in params.items()}
    squares = {name: torch.zeros_like(p) for name, p in params.items()}
    rows = 0
    for batch in batches:
        for row in batch:
            model.zero_grad(set_to_none=True)
            inputs, targets = row[None, :-1], row[None, 1:]
            logits = model(inputs, use_cache=False).logits
            F.cross_entropy(logits.float().flatten(0, 1), targets.flatten()).backward()
            for name, param in params.items():
                if param.grad is not None:
                    total[name] += param.grad
                    squares[name] += param.grad * param.grad
            rows += 1
    model.zero_grad(set_to_none=True)
    return total, squares, rows


def _importance(kind: str):
    import torch_pruning as tp

    if kind == TAYLOR:
        return tp.importance.GroupTaylorImportance()
    if kind == HESSIAN:
        return tp.importance.GroupHessianImportance()
    raise ValueError(f"unknown Torch-Pruning importance {kind!r}; pass one of {IMPORTANCES}")


def set_gradients(
    model: nn.Module,
    kind: str,
    moments: tuple[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor], int],
) -> None:
    """What the importance reads from ``.grad``: the summed gradient (Taylor, ``|w * g|``), or
    the mean squared per-sample gradient (Hessian, ``w^2 * E[g^2]``). The latter is set by hand:
    ``GroupHessianImportance.accumulate_grad`` of 1.6 keys its sums by parameter but tests
    membership by name, so it keeps only the last sample's gradient."""
    total, squares, rows = moments
    for name, param in model.named_parameters():
        source = total[name] if kind == TAYLOR else squares[name] / rows
        param.grad = source.clone()


def _ignored(model: nn.Module) -> list[nn.Module]:
    ignored = [model.lm_head, model.model.embed_tokens]
    for layer in model.model.layers:
        attention = layer.self_attn
        ignored += [attention.q_proj, attention.k_proj, attention.v_proj, attention.o_proj]
    return ignored


def _removed_params(group: Any, is_out: Any) -> int:
    """Parameters a Torch-Pruning group removes from its linear maps."""
    removed = 0
    for dep, idxs in group:
        module = dep.target.module
        if not isinstance(module, nn.Linear):
            continue
        if is_out(dep.handler):
            removed += len(idxs) * (module.in_features + (module.bias is not None))
        else:
            removed += len(idxs) * module.out_features
    return removed


def prune_to_budget(
    model: nn.Module,
    kind: str,
    example: torch.Tensor,
    limit: float,
    round_to: int,
    steps: int = 10,
) -> dict[str, Any]:
    """Prune ``model`` (its ``.grad`` set by :func:`set_gradients`) in place to at most
    ``limit`` parameters; returns the ratio used and what was kept."""
    import torch_pruning as tp

    params = sum(p.numel() for p in model.parameters())
    pruner = tp.pruner.MetaPruner(
        model,
        example_inputs=example,
        importance=_importance(kind),
        global_pruning=True,
        pruning_ratio=0.5,
        ignored_layers=_ignored(model),
        round_to=round_to,
        forward_fn=lambda module, inputs: module(inputs, use_cache=False).logits,
    )
    is_out = pruner.DG.is_out_channel_pruning_fn

    def groups_at(ratio: float) -> list[Any]:
        pruner.reset()
        pruner.per_step_pruning_ratio = [0.0, ratio]
        return list(pruner.step(interactive=True))

    def after(ratio: float) -> int:
        return params - sum(_removed_params(g, is_out) for g in groups_at(ratio))

    # A coarse grid first: near 1 every channel of a group would go, and Torch-Pruning then
    # drops the group (prunes nothing), so the count is not monotonic up there.
    grid = [step / 20 for step in range(1, 20)]
    high = next((ratio for ratio in grid if after(ratio) <= limit), None)
    if high is None:
        raise RuntimeError(f"Torch-Pruning cannot reach {limit:,.0f} parameters ({kind})")
    low = high - 0.05
    for _ in range(steps):  # the smallest ratio (largest model) that meets the limit
        middle = (low + high) / 2
        low, high = (low, middle) if after(middle) <= limit else (middle, high)
    for group in groups_at(high):
        group.prune()
    model.zero_grad(set_to_none=True)
    for param in model.parameters():
        param.requires_grad_(False)
    return {"ratio": high, "importance": type(pruner.importance).__name__}


def describe_pruned(model: nn.Module) -> dict[str, Any]:
    """What a pruned Llama kept, read from its weights: FFN widths and heads per layer."""
    widths, heads, kv_heads = [], [], []
    for layer in model.model.layers:
        attention = layer.self_attn
        widths.append(layer.mlp.gate_proj.out_features)
        heads.append(attention.q_proj.out_features // attention.head_dim)
        kv_heads.append(attention.k_proj.out_features // attention.head_dim)
    return {
        "hidden_size": model.model.embed_tokens.embedding_dim,
        "ffn_widths": widths,
        "query_heads": heads,
        "kv_heads": kv_heads,
    }


def check_forward(model: nn.Module, batch: torch.Tensor) -> None:
    """Raise unless the pruned model maps a batch to finite logits of the right shape."""
    with torch.no_grad():
        logits = model(batch[:, :-1], use_cache=False).logits
    expected = (*batch[:, :-1].shape, model.lm_head.out_features)
    if tuple(logits.shape) != expected or not torch.isfinite(logits).all():
        raise RuntimeError(f"the pruned model's logits are {tuple(logits.shape)}, not {expected}")


def prune_all(
    model: nn.Module,
    calibration: Sequence[torch.Tensor],
    kinds: Sequence[str],
    limit: float,
    round_to: int,
    moments: Any = None,
) -> tuple[dict[str, nn.Module], dict[str, dict[str, Any]]]:
    """Each importance of ``kinds`` on its own copy of ``model``, pruned to ``limit``."""
    import copy

    moments = moments or gradient_moments(copy.deepcopy(model), calibration)
    pruned, info = {}, {}
    for kind in kinds:
        candidate = copy.deepcopy(model)
        set_gradients(candidate, kind, moments)
        info[kind] = prune_to_budget(candidate, kind, calibration[0][:1, :-1], limit, round_to)
        check_forward(candidate, calibration[0])
        pruned[kind] = candidate
    return pruned, info

"""A FLAP-style baseline, written from the paper: An et al., "Fluctuation-based Adaptive
Structured Pruning for Large Language Models" (AAAI 2024), for a Hugging Face Llama.

Three steps, as the paper describes them:

1. **Fluctuation metric.** For every input channel ``j`` of each layer's output projections
   (``self_attn.o_proj`` and ``mlp.down_proj``): the variance of the channel's input over the
   calibration tokens times the squared norm of its weight column, ``Var(x_j) * ||W[:, j]||^2``
   (the paper's "WIFV"). A channel whose input barely moves can be replaced by its mean.
2. **Adaptive structure search.** Scores are standardised (zero mean, unit standard deviation)
   within each layer and structure kind, as the paper's released code does, so one global
   threshold compares layers and kinds. An attention unit is a GQA group: its query heads'
   ``head_dim`` channels of ``o_proj`` (score: their mean), with its key/value head, so grouped
   query attention stays valid; an FFN unit is one ``down_proj`` input channel. Units are
   removed lowest score first, across layers and kinds, until the parameter budget is met.
   Every layer keeps at least one GQA group and one FFN channel.
3. **Bias compensation.** Each pruned projection gets the bias ``W[:, removed] @ mean(x_removed)``
   (the "baseline" of the removed inputs). Those bias parameters count in the budget.

The statistics come from the dense model in one pass (every layer sees dense inputs). No
finetuning, no weight update other than the bias.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nasframe.app.lm import next_token_loss

ATTENTION, FFN = "attention", "ffn"


@dataclass
class InputStats:
    """Per-input-channel token count, sum and sum of squares (float64) of one projection."""

    count: int
    total: torch.Tensor
    squares: torch.Tensor

    @property
    def mean(self) -> torch.Tensor:
        return self.total / self.count

    @property
    def variance(self) -> torch.Tensor:
        """The sample variance over the tokens (count - 1 in the denominator)."""
        mean = self.mean
        return ((self.squares - self.count * mean * mean) / max(self.count - 1, 1)).clamp_min(0)


@dataclass(frozen=True)
class Unit:
    """One removable structure: ``index`` is the GQA group or the FFN channel in ``layer``."""

    layer: int
    kind: str
    index: int
    score: float
    params: int


@dataclass
class FlapPlan:
    """What FLAP removes: per layer, the GQA groups and the FFN channels, and the parameter
    count of the pruned model with its compensation biases."""

    removed_groups: dict[int, list[int]] = field(default_factory=dict)
    removed_channels: dict[int, list[int]] = field(default_factory=dict)
    params_after: int = 0


def _layers(model: nn.Module) -> Sequence[nn.Module]:
    return model.model.layers


def _geometry(attention: nn.Module) -> tuple[int, int, int]:
    """(head_dim, KV heads, query heads per KV head) of a Llama attention, from its weights."""
    head_dim = attention.head_dim
    kv_heads = attention.k_proj.out_features // head_dim
    per_group = attention.q_proj.out_features // head_dim // kv_heads
    return head_dim, kv_heads, per_group


def collect_input_stats(
    model: nn.Module, batches: Iterable[torch.Tensor]
) -> dict[tuple[int, str], InputStats]:
    """Input statistics of every layer's ``o_proj`` and ``down_proj`` over ``batches``."""
    stats: dict[tuple[int, str], InputStats] = {}
    handles = []

    def hook(key: tuple[int, str]):
        def record(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).double()
            if key not in stats:
                zeros = torch.zeros(x.shape[-1], dtype=torch.float64)
                stats[key] = InputStats(0, zeros, zeros.clone())
            entry = stats[key]
            entry.count += x.shape[0]
            entry.total += x.sum(0).cpu()
            entry.squares += (x * x).sum(0).cpu()

        return record

    for index, layer in enumerate(_layers(model)):
        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(hook((index, ATTENTION))))
        handles.append(layer.mlp.down_proj.register_forward_pre_hook(hook((index, FFN))))
    try:
        with torch.no_grad():
            for batch in batches:
                next_token_loss(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    return stats


def _standardise(scores: torch.Tensor) -> torch.Tensor:
    std = scores.std()
    return (scores - scores.mean()) / (std if std > 0 else 1.0)


def flap_units(model: nn.Module, stats: Mapping[tuple[int, str], InputStats]) -> list[Unit]:
    """Every GQA group and FFN channel of ``model`` with its standardised fluctuation score
    and the parameters its removal saves (the compensation bias is counted by the plan)."""
    units = []
    for index, layer in enumerate(_layers(model)):
        attention, mlp = layer.self_attn, layer.mlp
        o_weight, down_weight = attention.o_proj.weight, mlp.down_proj.weight
        channel = _standardise(
            stats[(index, ATTENTION)].variance * o_weight.detach().double().pow(2).sum(0).cpu()
        )
        head_dim, kv_heads, per_group = _geometry(attention)
        group_scores = channel.reshape(kv_heads, per_group * head_dim).mean(1)
        hidden = o_weight.shape[0]
        # a group: its query rows and o_proj columns, its key and value rows (and biases)
        group_params = per_group * head_dim * (2 * hidden + _has_bias(attention.q_proj))
        group_params += 2 * head_dim * (hidden + _has_bias(attention.k_proj))
        for group in range(kv_heads):
            units.append(Unit(index, ATTENTION, group, float(group_scores[group]), group_params))
        ffn = _standardise(
            stats[(index, FFN)].variance * down_weight.detach().double().pow(2).sum(0).cpu()
        )
        channel_params = 2 * (mlp.gate_proj.in_features + _has_bias(mlp.gate_proj)) + hidden
        for unit in range(ffn.numel()):
            units.append(Unit(index, FFN, unit, float(ffn[unit]), channel_params))
    return units


def _has_bias(linear: nn.Linear) -> int:
    return int(linear.bias is not None)


def plan_pruning(model: nn.Module, units: Sequence[Unit], limit: float) -> FlapPlan:
    """Remove units lowest score first (one global threshold over layers and kinds) until the
    pruned model, compensation biases included, has at most ``limit`` parameters."""
    params = sum(p.numel() for p in model.parameters())
    layers = _layers(model)
    left = {(u.layer, u.kind): 0 for u in units}
    for unit in units:
        left[(unit.layer, unit.kind)] += 1
    plan = FlapPlan()
    biased: set[tuple[int, str]] = set()
    for unit in sorted(units, key=lambda u: (u.score, u.layer, u.kind, u.index)):
        if params <= limit:
            break
        key = (unit.layer, unit.kind)
        if left[key] <= 1:
            continue  # each layer keeps one GQA group and one FFN channel
        left[key] -= 1
        params -= unit.params
        projection = _output_projection(layers[unit.layer], unit.kind)
        if key not in biased and projection.bias is None:
            params += projection.out_features  # the compensation bias it will get
        biased.add(key)
        target = plan.removed_groups if unit.kind == ATTENTION else plan.removed_channels
        target.setdefault(unit.layer, []).append(unit.index)
    if params > limit:
        raise RuntimeError(f"FLAP cannot reach {limit:,.0f} parameters (smallest: {params:,})")
    plan.params_after = params
    return plan


def _output_projection(layer: nn.Module, kind: str) -> nn.Linear:
    return layer.self_attn.o_proj if kind == ATTENTION else layer.mlp.down_proj


def _sliced(linear: nn.Linear, rows: torch.Tensor | None, columns: torch.Tensor | None):
    """A copy of ``linear`` keeping ``rows`` (outputs) and ``columns`` (inputs); None: all."""
    weight = linear.weight.detach()
    if rows is not None:
        weight = weight[rows]
    if columns is not None:
        weight = weight[:, columns]
    bias = linear.bias
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    new = new.to(device=weight.device, dtype=weight.dtype)
    new.weight.data.copy_(weight)
    if bias is not None:
        new.bias.data.copy_(bias.detach() if rows is None else bias.detach()[rows])
    return new


def compensate(linear: nn.Linear, kept: torch.Tensor, removed_mean: torch.Tensor) -> nn.Linear:
    """``linear`` without the input columns outside ``kept``, with the bias that restores
    their mean contribution: ``b + W[:, removed] @ mean(x_removed)``."""
    removed = torch.ones(linear.in_features, dtype=torch.bool)
    removed[kept] = False
    weight = linear.weight.detach()
    shift = weight[:, removed].double() @ removed_mean.to(weight.device).double()
    new = _sliced(linear, None, kept)
    if new.bias is None:
        with_bias = nn.Linear(new.in_features, new.out_features, bias=True)
        with_bias = with_bias.to(device=weight.device, dtype=weight.dtype)
        with_bias.weight.data.copy_(new.weight.detach())
        with_bias.bias.data.zero_()
        new = with_bias
    new.bias.data += shift.to(new.bias.dtype)
    return new


def apply_plan(
    model: nn.Module, plan: FlapPlan, stats: Mapping[tuple[int, str], InputStats]
) -> dict[str, Any]:
    """Prune ``model`` in place as ``plan`` says and compensate; returns what was kept."""
    kept_groups, kept_ffn = [], []
    for index, layer in enumerate(_layers(model)):
        attention, mlp = layer.self_attn, layer.mlp
        head_dim, kv_heads, per_group = _geometry(attention)
        groups = [g for g in range(kv_heads) if g not in set(plan.removed_groups.get(index, []))]
        kept_groups.append(len(groups))
        if len(groups) < kv_heads:
            kv_rows = torch.cat([torch.arange(g * head_dim, (g + 1) * head_dim) for g in groups])
            width = per_group * head_dim
            q_rows = torch.cat([torch.arange(g * width, (g + 1) * width) for g in groups])
            mean = stats[(index, ATTENTION)].mean
            removed = torch.ones(mean.numel(), dtype=torch.bool)
            removed[q_rows] = False
            attention.q_proj = _sliced(attention.q_proj, q_rows, None)
            attention.k_proj = _sliced(attention.k_proj, kv_rows, None)
            attention.v_proj = _sliced(attention.v_proj, kv_rows, None)
            attention.o_proj = compensate(attention.o_proj, q_rows, mean[removed])
        channels = set(plan.removed_channels.get(index, []))
        width = mlp.down_proj.in_features
        keep = torch.tensor([c for c in range(width) if c not in channels], dtype=torch.long)
        kept_ffn.append(int(keep.numel()))
        if keep.numel() < width:
            mean = stats[(index, FFN)].mean
            removed = torch.ones(width, dtype=torch.bool)
            removed[keep] = False
            mlp.gate_proj = _sliced(mlp.gate_proj, keep, None)
            mlp.up_proj = _sliced(mlp.up_proj, keep, None)
            mlp.down_proj = compensate(mlp.down_proj, keep, mean[removed])
    return {"kv_groups_per_layer": kept_groups, "ffn_widths": kept_ffn}


def prune_with_flap(
    model: nn.Module, batches: Sequence[torch.Tensor], limit: float
) -> tuple[FlapPlan, dict[str, Any]]:
    """Measure, plan and prune ``model`` in place to at most ``limit`` parameters."""
    stats = collect_input_stats(model, batches)
    plan = plan_pruning(model, flap_units(model, stats), limit)
    kept = apply_plan(model, plan, stats)
    return plan, kept

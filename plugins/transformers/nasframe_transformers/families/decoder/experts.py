"""Mixture-of-experts blocks, found by their structure so the description can name them.

nasframe does not prune experts yet: a layer whose MLP is a router choosing among experts
(Mixtral, Qwen2-MoE, OLMoE, ...) stops the description with one sentence naming the block
and what it holds, rather than with "neither a projection nor a norm" on whichever of its
parts comes first. Experts show in either of two shapes: weights of every expert stacked in
one tensor of three or more dimensions (transformers' fused ``experts`` modules; a
convolution's kernel is not one), or a ``ModuleList`` of identical MLPs (each with two or more
projections); the router is the block's child with one weight row per expert.
"""

from __future__ import annotations

from torch import nn


def _expert_count(module: nn.Module) -> int | None:
    """How many experts ``module`` holds, or None when it holds none."""
    stacked = [p for p in module.parameters(recurse=False) if p.dim() >= 3]
    if stacked and not isinstance(module, nn.modules.conv._ConvNd):
        return stacked[0].shape[0]
    if isinstance(module, nn.ModuleList) and len(module) > 1:
        types = {type(item) for item in module}
        linears = sum(isinstance(m, nn.Linear) for m in module[0].modules())
        if len(types) == 1 and linears >= 2:
            return len(module)
    return None


def _router(block: nn.Module, experts: int, inside: str) -> str | None:
    """The block's child with a weight of one row per expert (the router), if any."""
    for name, module in block.named_children():
        weight = getattr(module, "weight", None)
        if name == inside or not isinstance(weight, nn.Parameter):
            continue
        if weight.dim() == 2 and weight.shape[0] == experts:
            return name
    return None


def find_experts(layer: nn.Module, path: str) -> tuple[str, nn.Module, str] | None:
    """(path, module, what it is) of the mixture-of-experts block (the module holding the
    experts and their router) of ``layer``, at ``path``, or None when it has none."""
    for name, module in layer.named_modules():
        experts = _expert_count(module)
        if experts is None:
            continue
        block_path = name.rpartition(".")[0]
        block = layer.get_submodule(block_path) if block_path else layer
        local = name[len(block_path) + 1 :] if block_path else name
        router = _router(block, experts, local)
        where = f"{path}.{block_path}" if block_path else path
        routed = f", routed by {where}.{router}" if router else ""
        what = (
            f"a mixture-of-experts block ({experts} experts in {path}.{name}{routed}); "
            "nasframe does not prune experts yet, so this model cannot be searched"
        )
        return where, block, what
    return None

"""How gradnas scores the hidden units of a ``DynamicGatedMLP``.

A hidden unit's contribution leaves the module through ``w_down``: removing unit ``j`` is
exactly multiplying the gated product ``silu(w_gate x) * w_up x`` by 0 at ``j``. So the mask
goes on the product, after the gate, before ``w_down``: ``d loss / d mask_j`` at 1 is then the
first-order change of the loss when unit ``j`` is removed. A mask on ``w_gate x``, inside the
SiLU, would measure how the loss responds to rescaling a pre-activation, which is not the same.
"""

from __future__ import annotations

from typing import Any

import torch


def setup_gated_mlp(module: Any):
    """``SETUP_GRADIENT_FUNC`` entry: a mask of ones on the gated product's hidden units.

    Returns ``(GradientDataManager, RemovableHandle)``, or None when ``hidden`` is not an
    hparam (then there is nothing to score).
    """
    from gradnas.data_manager import GradientDataManager  # only gradnas calls this

    hparam = module.get_hparam("hidden")
    if hparam is None:
        return None
    manager = GradientDataManager(hparam.max, module)  # fp32 ones on the module's device
    manager.hparam = hparam  # tells gradnas which hparam these scores belong to

    def gate_product(_: Any, __: Any, product: torch.Tensor) -> torch.Tensor:
        return product * manager.mask.to(product.dtype)  # (..., hidden) * (hidden,)

    return manager, module.product.register_forward_hook(gate_product)

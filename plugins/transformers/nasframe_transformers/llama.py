"""The search space of a Llama-style decoder: which module slots shrink together.

Each decoder layer's SwiGLU MLP computes ``down_proj(act(gate_proj(x)) * up_proj(x))``: the
gate and up projections' output features and the down projection's input features are one
dimension, ``model.layers.{i}.mlp.intermediate_size``. Every other dimension (the residual
stream, heads) stays at full size for now. gradnas scores an FFN neuron on the down
projection's input — after the gated product, never on the gate's pre-activation.
"""

from __future__ import annotations

from torch import nn

from nasframe.ties import TieAnalysis

LLAMA_STYLE_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2"})


def _decoder_layers(model: nn.Module) -> nn.ModuleList | None:
    """The decoder layers of a Llama-style model (bare or with an LM head), else None."""
    base = getattr(model, "model", model)
    layers = getattr(base, "layers", None)
    return layers if isinstance(layers, nn.ModuleList) else None


def _is_llama_style(model: nn.Module) -> bool:
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in LLAMA_STYLE_MODEL_TYPES:
        return False
    if not type(model).__module__.startswith("transformers."):
        return False
    layers = _decoder_layers(model)
    return layers is not None and all(
        isinstance(getattr(layer.mlp, name, None), nn.Linear)
        for layer in layers
        for name in ("gate_proj", "up_proj", "down_proj")
    )


def describe_llama_ties(model: nn.Module) -> TieAnalysis | None:
    """Tied slots of a Llama-style model, or None when ``model`` is not one."""
    if not _is_llama_style(model):
        return None
    prefix = "model." if hasattr(model, "model") else ""
    groups, names, used, frozen = [], [], [], []
    for index, _ in enumerate(_decoder_layers(model)):
        mlp = f"{prefix}layers.{index}.mlp"
        gate, up, down = f"{mlp}.gate_proj", f"{mlp}.up_proj", f"{mlp}.down_proj"
        used += [gate, up, down]
        groups.append([(gate, "out_features"), (up, "out_features"), (down, "in_features")])
        names.append(f"{mlp}.intermediate_size")
        frozen += [(gate, "in_features"), (up, "in_features"), (down, "out_features")]
    return TieAnalysis(groups, frozen, used, group_names=names)

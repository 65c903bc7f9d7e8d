"""nasframe's own registrations, made through the same hooks a third-party plugin uses."""

from __future__ import annotations

from torch import nn

from nasframe.hookspecs import hookimpl
from nasframe.modules.attention import DynamicMultiheadAttention
from nasframe.modules.embedding import DynamicEmbedding
from nasframe.modules.linear import DynamicLinear
from nasframe.modules.norm import DynamicLayerNorm, DynamicRMSNorm


@hookimpl
def nasframe_dynamic_modules() -> dict[type[nn.Module], type]:
    return {
        nn.Linear: DynamicLinear,
        nn.Embedding: DynamicEmbedding,
        nn.LayerNorm: DynamicLayerNorm,
        nn.RMSNorm: DynamicRMSNorm,
        nn.MultiheadAttention: DynamicMultiheadAttention,
    }


@hookimpl
def nasframe_passthrough_modules() -> list[type[nn.Module]]:
    return [
        nn.ReLU,
        nn.ReLU6,
        nn.GELU,
        nn.SiLU,
        nn.Tanh,
        nn.Sigmoid,
        nn.LeakyReLU,
        nn.ELU,
        nn.SELU,
        nn.CELU,
        nn.Mish,
        nn.Hardswish,
        nn.Hardsigmoid,
        nn.Hardtanh,
        nn.Softplus,
        nn.Softsign,
        nn.Tanhshrink,
        nn.Identity,
        nn.Dropout,
        nn.AlphaDropout,
    ]

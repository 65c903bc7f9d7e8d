"""Registers gradnas and its built-in gradient setups with nasframe."""

from gradnas.searcher import GradientBinarySearcher
from gradnas.setups import setup_attention_heads, setup_layer_gates, setup_linear_input
from nasframe.attention import DynamicMultiheadAttention
from nasframe.depth import DynamicLayerList
from nasframe.dynamic import DynamicLinear
from nasframe.hookspecs import hookimpl


@hookimpl
def nasframe_algorithms() -> dict[str, type]:
    return {"gradnas": GradientBinarySearcher}


@hookimpl
def nasframe_gradient_setups() -> dict[type, object]:
    return {
        DynamicLinear: setup_linear_input,
        DynamicMultiheadAttention: setup_attention_heads,
        DynamicLayerList: setup_layer_gates,
    }

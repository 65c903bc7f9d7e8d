"""Registers gradnas and its built-in gradient setups with nasframe."""

from gradnas.searcher import GradientBinarySearcher
from gradnas.setups import setup_attention_heads, setup_layer_gates, setup_linear_input
from nasframe.hookspecs import hookimpl
from nasframe.modules.attention import DynamicMultiheadAttention
from nasframe.modules.depth import DynamicLayerList
from nasframe.modules.linear import DynamicLinear


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

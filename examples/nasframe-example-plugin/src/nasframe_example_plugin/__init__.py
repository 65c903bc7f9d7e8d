"""Example third-party nasframe plugin: a ``GatedMLP`` module type made prunable.

Registered through the ``nasframe`` entry-point group (see ``plugin.py``); nothing in nasframe
or gradnas knows about it.
"""

from nasframe_example_plugin.gated_mlp import DynamicGatedMLP, GatedMLP
from nasframe_example_plugin.gradient import setup_gated_mlp
from nasframe_example_plugin.model import MODEL_NAME, GatedByteLM, load_gated_byte_lm

__all__ = [
    "MODEL_NAME",
    "DynamicGatedMLP",
    "GatedByteLM",
    "GatedMLP",
    "load_gated_byte_lm",
    "setup_gated_mlp",
]

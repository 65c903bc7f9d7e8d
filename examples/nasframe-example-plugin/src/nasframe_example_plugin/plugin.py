"""The plugin's registrations: this module is the ``nasframe`` entry point.

Each hook returns a mapping that nasframe merges with every other plugin's; registering a key
another plugin already registers is an error, so only register your own types and names.
"""

from __future__ import annotations

from nasframe.app.model_registry import ModelEntry
from nasframe.hookspecs import hookimpl
from nasframe_example_plugin.gated_mlp import DynamicGatedMLP, GatedMLP
from nasframe_example_plugin.gradient import setup_gated_mlp
from nasframe_example_plugin.model import MODEL_NAME, GatedByteLM, load_gated_byte_lm


@hookimpl
def nasframe_dynamic_modules():
    """``convert`` replaces every GatedMLP with a DynamicGatedMLP."""
    return {GatedMLP: DynamicGatedMLP}


@hookimpl
def nasframe_gradient_setups():
    """gradnas scores DynamicGatedMLP's hidden units with this setup."""
    return {DynamicGatedMLP: setup_gated_mlp}


@hookimpl
def nasframe_architectures():
    """``nasframe.load`` rebuilds a saved GatedByteLM from its name."""
    return {MODEL_NAME: GatedByteLM}


@hookimpl
def nasframe_models():
    """``nasframe search --model example-gated-lm``."""
    return {
        MODEL_NAME: ModelEntry(
            description="tiny byte-level LM of GatedMLP blocks (example plugin; trains in ~2 s)",
            load=load_gated_byte_lm,
            architecture=lambda **kwargs: GatedByteLM(**kwargs),
        )
    }

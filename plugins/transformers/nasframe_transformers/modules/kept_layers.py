"""The kept-layer view of a Llama-style base model while some of its layers are dropped.

A converted model runs its base model's own forward, which numbers layers by their
``layer_idx`` and reads ``config.layer_types`` by position. With layers dropped, forward
hooks on the base model number the kept layers 0..n-1 (and give the config their types) for
the forward, exactly as the export will, and restore the originals after it. The family's
``prepare`` installs them on the converted model; its ``finalize_export`` removes them from
the exported copy.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from nasframe.modules.depth import DynamicLayerList


def _show_kept_layers(base: nn.Module, args: Any, kwargs: Any) -> None:
    """Before a forward with layers dropped: number the kept layers 0..n-1 and give the
    config their layer types, exactly as the export will.

    Qwen2 picks each layer's mask by ``config.layer_types[i]`` for the i-th layer it runs,
    and the cache is built from ``layer_types`` and indexed by ``layer_idx``.
    """
    layers = base.layers
    if not isinstance(layers, DynamicLayerList):
        return
    kept = layers.kept_layers()
    if len(kept) == len(layers.all_layers()):
        return
    saved_types = getattr(base.config, "layer_types", None)
    saved = (saved_types, [layer.self_attn.layer_idx for layer in kept])
    base.__dict__["_nasframe_saved_layer_view"] = saved
    if saved_types is not None:
        base.config.layer_types = [saved_types[layer.self_attn.layer_idx] for layer in kept]
    for index, layer in enumerate(kept):
        layer.self_attn.layer_idx = index


def _restore_all_layers(base: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
    saved = base.__dict__.pop("_nasframe_saved_layer_view", None)
    if saved is None:
        return
    saved_types, indices = saved
    if saved_types is not None:
        base.config.layer_types = saved_types
    for layer, index in zip(base.layers.kept_layers(), indices, strict=True):
        layer.self_attn.layer_idx = index


def install_kept_layer_view(base: nn.Module) -> None:
    """Hooks that run :func:`_show_kept_layers` around every forward of ``base`` (the
    restore runs even when the forward raises)."""
    base.register_forward_pre_hook(_show_kept_layers, with_kwargs=True)
    base.register_forward_hook(_restore_all_layers, with_kwargs=True, always_call=True)


def remove_kept_layer_view(base: nn.Module) -> None:
    """An exported model has plain layers: drop the hooks (copied along with the model)."""
    for hooks, function, extras in (
        (base._forward_pre_hooks, _show_kept_layers, (base._forward_pre_hooks_with_kwargs,)),
        (
            base._forward_hooks,
            _restore_all_layers,
            (base._forward_hooks_with_kwargs, base._forward_hooks_always_called),
        ),
    ):
        for hook_id, hook in list(hooks.items()):
            if hook is function:
                del hooks[hook_id]
                for extra in extras:
                    extra.pop(hook_id, None)

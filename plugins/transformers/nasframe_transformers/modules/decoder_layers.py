"""The kept-layer view of any decoder's base model while some of its layers are dropped.

A converted model runs its base model's own forward, which numbers layers by their
``layer_idx`` and reads per-layer config lists by position. The layer stack and each layer's
attention may have any attribute name (``h`` and ``attn`` in GPT-J, ``layers`` and
``self_attn`` in most). Around each forward with layers dropped, the kept
layers are numbered 0..n-1 (their attention's ``layer_idx``, which selects a cache slot, and
the layer's own) and the config's per-layer lists (``layer_types``, SmolLM3's
``no_rope_layers``: any list whose name says "layer" with one entry per layer) list the kept
layers' entries, exactly as the export will; the originals come back after the forward, even
when it raises.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from nasframe.modules.depth import DynamicLayerList

_SAVED = "_nasframe_saved_decoder_layer_view"


def _indexed(layer: nn.Module, attention: str) -> list[nn.Module]:
    """The modules of ``layer`` that carry a ``layer_idx``: its attention and itself."""
    return [m for m in (getattr(layer, attention), layer) if hasattr(m, "layer_idx")]


def per_layer_lists(config: Any) -> dict[str, list]:
    """The config's lists with one entry per layer: named with "layer", as long as
    ``num_hidden_layers`` (read before the export writes the kept count)."""
    count = getattr(config, "num_hidden_layers", None)
    return {
        key: value
        for key, value in vars(config).items()
        if "layer" in key
        and not key.startswith("_")
        and isinstance(value, list | tuple)
        and len(value) == count
    }


def renumber(layers: list[nn.Module], attention: str, config: Any) -> None:
    """Number ``layers`` 0..n-1 and give the config's per-layer lists their entries, in
    place."""
    old = [getattr(getattr(layer, attention), "layer_idx", None) for layer in layers]
    if None not in old:
        for key, values in per_layer_lists(config).items():
            setattr(config, key, type(values)(values[index] for index in old))
    for new_index, layer in enumerate(layers):
        for module in _indexed(layer, attention):
            module.layer_idx = new_index


class KeptLayerView:
    """The pair of forward hooks (one object, told apart from others' hooks by its type)."""

    def __init__(self, stack: str, attention: str) -> None:
        self.stack, self.attention = stack, attention

    def before(self, base: nn.Module, args: Any, kwargs: Any) -> None:
        layers = getattr(base, self.stack)
        if not isinstance(layers, DynamicLayerList):
            return
        kept = layers.kept_layers()
        if len(kept) == len(layers.all_layers()):
            return
        saved_lists = per_layer_lists(base.config)
        indices = [[m.layer_idx for m in _indexed(layer, self.attention)] for layer in kept]
        base.__dict__[_SAVED] = (saved_lists, indices)
        renumber(kept, self.attention, base.config)

    def after(self, base: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        saved = base.__dict__.pop(_SAVED, None)
        if saved is None:
            return
        saved_lists, indices = saved
        for key, values in saved_lists.items():
            setattr(base.config, key, values)
        kept = getattr(base, self.stack).kept_layers()
        for layer, layer_indices in zip(kept, indices, strict=True):
            for module, index in zip(_indexed(layer, self.attention), layer_indices, strict=True):
                module.layer_idx = index


class _Before:
    def __init__(self, view: KeptLayerView) -> None:
        self.view = view

    def __call__(self, *args: Any) -> None:
        return self.view.before(*args)


class _After:
    def __init__(self, view: KeptLayerView) -> None:
        self.view = view

    def __call__(self, *args: Any) -> None:
        return self.view.after(*args)


def install(base: nn.Module, stack: str, attention: str) -> None:
    """Hooks on ``base`` that show its forward only the kept layers, numbered 0..n-1."""
    view = KeptLayerView(stack, attention)
    base.register_forward_pre_hook(_Before(view), with_kwargs=True)
    base.register_forward_hook(_After(view), with_kwargs=True, always_call=True)


def remove(base: nn.Module) -> None:
    """An exported model has plain layers: drop the hooks (copied along with the model)."""
    for hooks, kind, extras in (
        (base._forward_pre_hooks, _Before, (base._forward_pre_hooks_with_kwargs,)),
        (
            base._forward_hooks,
            _After,
            (base._forward_hooks_with_kwargs, base._forward_hooks_always_called),
        ),
    ):
        for hook_id, hook in list(hooks.items()):
            if isinstance(hook, kind):
                del hooks[hook_id]
                for extra in extras:
                    extra.pop(hook_id, None)

"""Materialise a search space's active config as a plain PyTorch model.

Every dynamic module becomes the plain module of its active size with the kept weights
copied; parameters that were shared (tied embeddings) stay shared. The result runs without
any nasframe module in it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from torch import nn

from nasframe.space.convert import replace_module
from nasframe.space.dynamic import DynamicModule
from nasframe.space.search_space import SearchSpace


def export(
    space: SearchSpace, inplace: bool = False, *, finalize: Callable[[nn.Module], None]
) -> nn.Module:
    """A plain model of the active config; the space's model is untouched unless ``inplace``.

    ``finalize`` updates the exported model where swapping modules cannot (a config's sizes,
    layer indices): ``nasframe.export`` passes the installed families' (see
    :func:`nasframe.space.family.finalizer`), :func:`nasframe.space.family.leave_as_is` does
    nothing.
    """
    model = space.model if inplace else copy.deepcopy(space.model)
    exported_of: dict[int, nn.Parameter] = {}  # id of a dynamic parameter -> its export
    plain_of: dict[int, nn.Module] = {}  # a module shared under several names stays shared
    # Children first: a parent (a layer list) then exports plain children, and the names of
    # the modules still to visit stay valid until their parent is replaced.
    for name, module in reversed(list(model.named_modules(remove_duplicate=False))):
        if not isinstance(module, DynamicModule):
            continue
        if id(module) in plain_of:
            replace_module(model, name, plain_of[id(module)])
            continue
        plain = plain_of[id(module)] = module.export()
        plain.train(module.training)
        for param_name, param in module.named_parameters(recurse=True):
            exported = plain.get_parameter(param_name) if _has(plain, param_name) else None
            if exported is None:
                continue
            twin = exported_of.get(id(param))
            if twin is not None and twin.shape == exported.shape:
                _set_parameter(plain, param_name, twin)  # keep weight tying
            else:
                exported_of[id(param)] = exported
        replace_module(model, name, plain)
    # A model family fixes up what swapping modules cannot express (config, layer indices).
    finalize(model)
    return model


def _has(module: nn.Module, param_name: str) -> bool:
    try:
        module.get_parameter(param_name)
    except AttributeError:
        return False
    return True


def _set_parameter(module: nn.Module, param_name: str, value: nn.Parameter) -> None:
    owner_name, _, attr = param_name.rpartition(".")
    owner = module.get_submodule(owner_name) if owner_name else module
    setattr(owner, attr, value)

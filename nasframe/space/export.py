"""Materialise a search space's active config as a plain PyTorch model.

Every dynamic module becomes the plain module of its active size with the kept weights
copied; parameters that were shared (tied embeddings) stay shared. The result runs without
any nasframe module in it.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable
from typing import Any

from torch import nn

from nasframe.space.convert import replace_module
from nasframe.space.dynamic import DynamicModule
from nasframe.space.search_space import SearchSpace


def export(
    space: SearchSpace, inplace: bool = False, *, finalize: Callable[[nn.Module], None]
) -> nn.Module:
    """A plain model of the active config; the space's model is untouched unless ``inplace``.

    Memory: no second full copy of the weights is ever held. In place, each dynamic module's
    full-size weights are freed once its plain module replaces it (unless another module
    still shares them). Otherwise the copy is a skeleton: every weight a dynamic module
    slices stays the space's own tensor in it until that module exports its kept part, so
    only plain modules' weights are copied in full.

    ``finalize`` updates the exported model where swapping modules cannot (a config's sizes,
    layer indices): ``nasframe.export`` passes the installed families' (see
    :func:`nasframe.space.family.finalizer`), :func:`nasframe.space.family.leave_as_is` does
    nothing.
    """
    if inplace:
        model, shared = space.model, {}
    else:
        shared = _sliced_parameters(space.model)
        model = copy.deepcopy(space.model, memo={key: param for key, param in shared.items()})
    # Keyed by id, each with a weak reference to its key: the originals are freed as the
    # export goes, and a new object may then reuse a freed one's id.
    exported_of: dict[int, tuple[weakref.ref, nn.Parameter]] = {}  # a dynamic param's export
    plain_of: dict[int, tuple[weakref.ref, nn.Module]] = {}  # shared modules stay shared
    # Children first: a parent (a layer list) then exports plain children, and the names of
    # the modules still to visit stay valid until their parent is replaced. Only the names
    # are listed: holding every module would keep each full-size weight alive to the end.
    names = [
        name
        for name, module in model.named_modules(remove_duplicate=False)
        if isinstance(module, DynamicModule)
    ]
    for name in reversed(names):
        module = model.get_submodule(name)
        if not isinstance(module, DynamicModule):
            continue  # replaced already under another path to the same parent
        done = _lookup(plain_of, module)
        if done is not None:
            replace_module(model, name, done)
            continue
        plain = module.export()
        plain_of[id(module)] = (weakref.ref(module), plain)
        plain.train(module.training)
        for param_name, param in module.named_parameters(recurse=True):
            exported = plain.get_parameter(param_name) if _has(plain, param_name) else None
            if exported is None:
                continue
            twin = _lookup(exported_of, param)
            if twin is not None and twin.shape == exported.shape:
                _set_parameter(plain, param_name, twin)  # keep weight tying
            else:
                exported_of[id(param)] = (weakref.ref(param), exported)
        replace_module(model, name, plain)
        del module, plain
    if shared:
        _unshare(model, shared)
    # A model family fixes up what swapping modules cannot express (config, layer indices).
    finalize(model)
    return model


def _lookup(table: dict[int, tuple[weakref.ref, Any]], key: object) -> Any:
    """The value recorded for ``key`` itself (not for a freed object with its id), or None."""
    entry = table.get(id(key))
    return entry[1] if entry is not None and entry[0]() is key else None


def _sliced_parameters(model: nn.Module) -> dict[int, nn.Parameter]:
    """Every parameter a dynamic module's slots index, by id: what its ``export`` copies
    the kept part of, so a copy of the model need not hold it."""
    found: dict[int, nn.Parameter] = {}
    for module in model.modules():
        if isinstance(module, DynamicModule):
            for slot_dims in module.slots.values():
                for slot_dim in slot_dims:
                    param = module.param_tensor(slot_dim.param)
                    if isinstance(param, nn.Parameter):
                        found[id(param)] = param
    return found


def _unshare(model: nn.Module, shared: dict[int, nn.Parameter]) -> None:
    """Give ``model`` its own copy of any parameter it still shares with the space (one a
    plain module also used, or one an export kept as it was), ties kept."""
    copies: dict[int, nn.Parameter] = {}
    for param_name, param in list(model.named_parameters(remove_duplicate=False)):
        if id(param) in shared:
            if id(param) not in copies:
                copies[id(param)] = nn.Parameter(
                    param.detach().clone(), requires_grad=param.requires_grad
                )
            _set_parameter(model, param_name, copies[id(param)])


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

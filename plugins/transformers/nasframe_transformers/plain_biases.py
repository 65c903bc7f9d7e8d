"""Expressing biases added by reconstruction in a family's plain transformers config.

``nasframe.reconstruct`` may give a projection a bias the family's model has none of (a
Llama ``down_proj`` or ``o_proj``). A plain model builds its biases from config flags that
cover several projections at once (Llama's ``mlp_bias`` gives gate, up and down projections
one each). Which flags a release supports, and what they switch on, is read from the
family's own decoder-layer class, built on the meta device under each choice of flags (no
memory, no table that goes stale with the next transformers release): the fewest flags that
give every bias the model has win, and the projections they add beyond those are saved with
explicit zero biases, so ``from_pretrained`` finds every key and computes the same outputs.
A family that cannot express a bias (Mistral, Qwen2's ``o_proj``) is refused by name, so a
job that wants a plain directory asks first which biases one can hold (:func:`plain_bias_names`)
and reconstructs without adding the others.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from nasframe.errors import UserInputError


def bias_flags(
    model: nn.Module, layers: Sequence[nn.Module], flags: Sequence[str]
) -> tuple[dict[str, bool], list[nn.Linear]]:
    """The config flags (a subset of ``flags`` set to True) under which a plain model of
    ``model.config`` has every projection bias its decoder ``layers`` have, and the
    projections that then need a zero bias.

    Raises :class:`UserInputError` naming the first projection no flags can give a bias.
    """
    config = model.config
    if not layers:
        return {}, []
    biased = set().union(*(_biased(layer) for layer in layers))
    available = [flag for flag in flags if hasattr(config, flag) and not getattr(config, flag)]
    plain_of: dict[tuple[str, ...], set[str]] = {}
    for count in range(len(available) + 1):
        for chosen in itertools.combinations(available, count):
            plain = plain_of[chosen] = _plain_biased(config, type(layers[0]), chosen)
            if biased <= plain:
                zero = [
                    module
                    for layer in layers
                    for name, module in layer.named_modules()
                    if name in plain and isinstance(module, nn.Linear) and module.bias is None
                ]
                return dict.fromkeys(chosen, True), zero
    most = plain_of[tuple(available)]
    layer, name = next(
        (layer, name) for layer in layers for name in sorted(_biased(layer)) if name not in most
    )
    path = next(path for path, module in model.named_modules() if module is layer)
    raise UserInputError(
        f"a plain {config.model_type} config cannot give {path}.{name} the bias "
        "reconstruction added to it, so there is no plain transformers directory; the pruned "
        "model is still saved by nasframe.save (load it with nasframe.load)."
    )


@contextlib.contextmanager
def expressed(config: Any, flags: dict[str, bool], zero: Sequence[nn.Linear]) -> Iterator[None]:
    """``config`` with ``flags`` set and ``zero`` given zero biases while inside (to save a
    plain model); both undone after, so the caller's model keeps its parameters."""
    saved = {flag: getattr(config, flag) for flag in flags}
    try:
        for flag, value in flags.items():
            setattr(config, flag, value)
        for module in zero:
            weight = module.weight
            zeros = torch.zeros(module.out_features, dtype=weight.dtype, device=weight.device)
            module.bias = nn.Parameter(zeros, requires_grad=False)
        yield
    finally:
        for module in zero:
            module.bias = None
        for flag, value in saved.items():
            setattr(config, flag, value)


def plain_bias_names(model: nn.Module) -> frozenset[str]:
    """The parameter names of every bias a plain model of ``model.config`` can hold: those it
    has, and those its bias flags (boolean config keys naming a bias, such as Llama's
    ``attention_bias`` and ``mlp_bias``) switch on.

    Read from the model's own class built on the meta device with every such flag on (no
    memory, whatever the family), before reconstruction decides where it may add a bias.
    """
    config = copy.deepcopy(model.config)
    for key, value in vars(model.config).items():
        if "bias" in key and isinstance(value, bool) and not key.startswith("_"):
            setattr(config, key, True)
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # the config's own warnings were shown when it loaded
    try:
        with torch.device("meta"):
            plain = type(model)(config)
    finally:
        logging.set_verbosity(verbosity)
    names = {name for name, _ in plain.named_parameters() if name.rpartition(".")[2] == "bias"}
    return frozenset(names | {n for n, _ in model.named_parameters() if n.endswith(".bias")})


def _biased(layer: nn.Module) -> set[str]:
    return {
        name
        for name, module in layer.named_modules()
        if isinstance(module, nn.Linear) and module.bias is not None
    }


def _plain_biased(config: Any, layer_class: type[nn.Module], chosen: Sequence[str]) -> set[str]:
    """The projections with a bias in a plain layer of ``config`` with ``chosen`` flags on."""
    trial = copy.deepcopy(config)
    for flag in chosen:
        setattr(trial, flag, True)
    with torch.device("meta"):
        layer = layer_class(trial, layer_idx=0)
    return _biased(layer)

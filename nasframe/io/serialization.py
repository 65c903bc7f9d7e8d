"""Save and load pruned models as safetensors weights plus JSON metadata — never a pickle.

A pruned model is restored by rebuilding the *unpruned* architecture (from a registered model
name and JSON keyword arguments, or from a model the caller passes), converting it, selecting
the saved config and exporting: the shapes then match the saved weights exactly. Nothing in the
metadata is executed or imported. The metadata records the weights' SHA-256 and is written
last, so a crash between the two files is detected on load instead of loading mixed files.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from nasframe.errors import UserInputError
from nasframe.io.atomic import atomic_write, atomic_write_json
from nasframe.space.convert import ConvertRegistry, convert
from nasframe.space.export import export

FORMAT = "nasframe-pruned"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "nasframe.json"


def save(
    model: nn.Module,
    directory: str | os.PathLike,
    config: dict[str, int],
    architecture: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    kept_units: dict[str, list[int]] | None = None,
    added_biases: dict[str, int] | None = None,
) -> Path:
    """Write ``model`` (an exported plain model) and what rebuilds it into ``directory``.

    ``kept_units`` (``space.kept_units()``) records which layers a depth hparam kept: layers
    are never reordered, so the kept ones are not simply the first ones, and a rebuilt model
    needs them to give every remaining layer its own sizes. ``added_biases``
    (``space.added_biases``: parameter name in the unpruned model -> size) records the biases
    reconstruction added, which the rebuilt architecture lacks until a load adds them.

    Args:
        model: The exported model whose weights are saved (safetensors, never a pickle).
        directory: Where ``model.safetensors`` and ``nasframe.json`` go (created if needed).
        config: The selected config (``space.config()``) that :func:`load` selects again.
        architecture: ``{"name": ..., "kwargs": {...}}`` of a registered architecture, so
            ``load`` can rebuild the unpruned model; omit it for a custom model.
        extra: Any JSON data to keep alongside (metrics, the search settings).
        kept_units: Which units a depth hparam kept, from ``space.kept_units()``.
        added_biases: The biases reconstruction added, from ``space.added_biases``.

    Returns:
        ``directory`` as a :class:`~pathlib.Path`.
    """
    directory = Path(directory)
    weights = directory / WEIGHTS_FILE
    atomic_write(weights, lambda tmp: safetensors.torch.save_model(model, tmp))
    atomic_write_json(
        directory / METADATA_FILE,
        {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "architecture": architecture or {},
            "config": dict(config),
            "kept_units": {name: list(units) for name, units in (kept_units or {}).items()},
            "added_biases": {name: int(size) for name, size in (added_biases or {}).items()},
            "weights": {"file": WEIGHTS_FILE, "sha256": _sha256(weights)},
            "extra": extra or {},
        },
    )
    return directory


def read_metadata(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / METADATA_FILE
    if not path.is_file():
        raise UserInputError(
            f"{directory} holds no {METADATA_FILE}; pass a directory written by nasframe."
        )
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserInputError(f"{path} is not valid JSON ({error}); re-export the model.") from error
    if metadata.get("format") != FORMAT or metadata.get("version") != FORMAT_VERSION:
        raise UserInputError(
            f"{path} is not a nasframe model of version {FORMAT_VERSION}; re-export it with this "
            "version of nasframe."
        )
    return metadata


def load(
    directory: str | os.PathLike,
    model: nn.Module | None = None,
    *,
    registry: ConvertRegistry,
    finalize: Callable[[nn.Module], None],
    architectures: Mapping[str, Callable[..., nn.Module]],
) -> nn.Module:
    """Restore a pruned model saved by :func:`save`, with the registries passed in.

    ``nasframe.load`` reads ``registry``, ``finalize`` and ``architectures`` from the plugin
    manager; this layer never looks anything up. ``model`` is an unpruned instance of the
    architecture; it may be omitted when the model was saved under one of ``architectures``,
    which then rebuilds it in eval mode.
    """
    metadata = read_metadata(directory)
    weights = Path(directory) / metadata["weights"]["file"]
    if not weights.is_file() or _sha256(weights) != metadata["weights"]["sha256"]:
        raise UserInputError(
            f"{weights} is missing or does not match {METADATA_FILE} (an interrupted save?); "
            "export the model again."
        )
    rebuilt = model is None
    if rebuilt:
        architecture = metadata.get("architecture") or {}
        if "name" not in architecture:
            raise UserInputError(
                f"{directory} was saved from a custom model; pass an unpruned instance of it as "
                "load(directory, model=...)."
            )
        kwargs = architecture.get("kwargs", {})
        model = build_architecture(architecture["name"], kwargs, architectures)
    _add_recorded_biases(model, metadata.get("added_biases") or {})
    space = convert(model, registry=registry)
    space.keep_units(metadata.get("kept_units") or {})
    space.select(metadata["config"])
    pruned = export(space, inplace=True, finalize=finalize)
    if rebuilt:
        pruned.eval()  # a freshly built model is in training mode (dropout on)
    saved_dtype = _saved_float_dtype(weights)
    if saved_dtype is not None:  # a model saved in bf16 loads in bf16, not the build's fp32
        pruned.to(saved_dtype)
    try:
        missing, unexpected = safetensors.torch.load_model(pruned, weights, strict=False)
    except (RuntimeError, safetensors.SafetensorError) as error:  # other shapes; not safetensors
        reason = str(error).strip().splitlines()[-1].strip().rstrip(".")
        raise UserInputError(
            f"{weights} does not fit the rebuilt model ({reason}); pass the same architecture "
            "the model was pruned from."
        ) from error
    if missing or unexpected:  # safetensors returns sets or lists
        raise UserInputError(
            f"{weights} does not fit the rebuilt model (missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}); pass the same architecture the model was "
            "pruned from."
        )
    return pruned


_SAFETENSORS_FLOATS = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def _saved_float_dtype(weights: Path) -> torch.dtype | None:
    """The one floating-point dtype of the saved weights (read from the header only), or None
    when they mix several, hold none or are no safetensors file."""
    try:
        with safetensors.safe_open(str(weights), "pt") as saved:
            kinds = {saved.get_slice(name).get_dtype() for name in saved.keys()}  # noqa: SIM118
    except (OSError, safetensors.SafetensorError):  # not safetensors: load_model says so
        return None
    floats = {kind for kind in kinds if kind.startswith(("F", "BF"))}
    if len(floats) != 1:
        return None
    return _SAFETENSORS_FLOATS.get(floats.pop())


def _add_recorded_biases(model: nn.Module, added: Any) -> None:
    """Give the unpruned model the zero biases reconstruction added (the saved weights fill
    them); a bias the model already has is left for the weights to overwrite."""
    from nasframe.reconstruction.targets import add_bias

    valid = isinstance(added, dict) and all(
        isinstance(name, str)
        and name.rpartition(".")[2] == "bias"
        and isinstance(size, int)
        and size > 0
        for name, size in added.items()
    )
    if not valid:
        raise UserInputError(
            f"added_biases in {METADATA_FILE} must map bias names to sizes, got {added!r}; "
            "re-export the model."
        )
    for name, size in added.items():
        owner_name = name.rpartition(".")[0]
        try:
            owner = model.get_submodule(owner_name) if owner_name else model
            weight = owner.get_parameter("weight")
        except AttributeError:
            owner = weight = None
        if weight is None:
            raise UserInputError(
                f"{METADATA_FILE} adds a bias {name!r} but the model has no such module with a "
                "weight; pass the same architecture the model was pruned from."
            )
        if getattr(owner, "bias", None) is None:
            add_bias(model, name, size)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_architecture(
    name: str, kwargs: dict[str, Any], architectures: Mapping[str, Callable[..., nn.Module]]
) -> nn.Module:
    """An untrained model of the architecture ``name`` among ``architectures`` (the merged
    ``nasframe_architectures`` registry, where a named model's architecture is one too)."""
    if name not in architectures:
        known = ", ".join(sorted(architectures)) or "none"
        raise UserInputError(
            f"no installed plugin builds the architecture {name!r} this model was saved from "
            f"(known: {known}); install that plugin, or pass an unpruned instance as "
            "load(directory, model=...)."
        )
    return architectures[name](**kwargs)

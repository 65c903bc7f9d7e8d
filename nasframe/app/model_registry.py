"""What the CLI needs to know about a model: how to build it, load it and tokenize for it.

Plugins register :class:`ModelEntry` objects by name through the ``nasframe_models`` hook
(``--model NAME``), and turn other specs (a model directory, a weights file) into entries
through the ``nasframe_resolve_model`` hook. ``architecture`` rebuilds the unpruned model from
JSON-able keyword arguments, which is how a pruned model is loaded again without unpickling
anything.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy
import torch
from torch import nn

from nasframe.app import hookspecs
from nasframe.errors import UserInputError
from nasframe.plugins import get_plugin_manager, registry

GGUF_SUFFIX = ".gguf"
HF_CONFIG_FILE = "config.json"
# The plugin that resolves model directories and GGUF files: entry point and module.
TRANSFORMERS_PLUGIN = "entry point transformers-models, module nasframe_transformers.loading"


@dataclass
class ModelBundle:
    """A ready model with its tokenizer and the recipe that rebuilds its architecture.

    ``save_plain(exported_model, directory)``, when a model family offers it, writes the pruned
    model in the family's own standard format (a transformers model directory), so it loads
    without nasframe; it raises :class:`UserInputError` when the pruned shape cannot be
    expressed in that format.
    """

    model: nn.Module
    encode: Callable[[str], list[int]]
    name: str
    architecture: dict[str, Any] = field(default_factory=dict)  # {"name": ..., "kwargs": {...}}
    save_plain: Callable[[nn.Module, Path], Path] | None = None
    #: ``plain_biases(model)``, offered with ``save_plain``: the parameter names of every bias
    #: the family's plain config can hold (its own and those its bias flags switch on), so a
    #: job that wants the plain directory reconstructs without adding any other bias.
    plain_biases: Callable[[nn.Module], Container[str]] | None = None
    #: ``save_gguf(exported_model, path, dtype)`` writes a GGUF file llama.cpp runs ("f32",
    #: "f16" or "bf16" weights), with the tokenizer of the model it was loaded from; raises
    #: :class:`UserInputError` when llama.cpp cannot express the pruned model.
    save_gguf: Callable[[nn.Module, Path, str], Path] | None = None


@dataclass(frozen=True)
class ModelEntry:
    """A model a plugin offers, by name or by a spec it resolved (a path).

    ``load(progress=True, trust_remote_code=False)`` returns a :class:`ModelBundle` with
    trained weights (showing progress bars only when ``progress``; running code shipped with
    a model only when ``trust_remote_code``, which a loader that runs none ignores). A loader
    may also take ``device`` and ``dtype`` (a ``torch.device``; a ``torch.dtype`` or None for
    the model's own) and load straight there; the job moves the model of one that does not.
    ``architecture(**kwargs)`` builds an untrained model of the same shape from the bundle's
    JSON-able ``architecture["kwargs"]``.
    """

    description: str
    load: Callable[..., ModelBundle]
    architecture: Callable[..., nn.Module]
    # The job's sizes that suit this model (``divisor``, ``seq_len``, ``batch_size``,
    # ``calibration_batches``, ``score_batches``, ``eval_batches``); flags override them.
    job_defaults: Mapping[str, int] = field(default_factory=dict)
    # ``save_gguf`` as the bundle's (see ModelBundle), without loading the model: what
    # ``nasframe export DIR --to gguf`` uses for a result saved earlier.
    save_gguf: Callable[[nn.Module, Path, str], Path] | None = None

    def load_bundle(
        self,
        progress: bool = True,
        trust_remote_code: bool = False,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> ModelBundle:
        """Call ``load`` with both flags, by keyword (every loader takes them), and with
        ``device`` and ``dtype`` where given and the loader takes them (older loaders do not;
        the caller then moves the model)."""
        extra = {
            key: value
            for key, value in (("device", device), ("dtype", dtype))
            if value is not None and _accepts(self.load, key)
        }
        return self.load(progress=progress, trust_remote_code=trust_remote_code, **extra)


def _accepts(function: Callable[..., Any], keyword: str) -> bool:
    """Whether ``function`` takes ``keyword`` (by name or through ``**kwargs``)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: pass nothing extra
        return False
    return any(
        p.kind is p.VAR_KEYWORD or (p.name == keyword and p.kind is not p.POSITIONAL_ONLY)
        for p in parameters
    )


def app_plugin_manager() -> pluggy.PluginManager:
    """The one plugin manager, with the app's hook specifications added (once)."""
    manager = get_plugin_manager()
    caller = getattr(manager.hook, "nasframe_models", None)
    if caller is None or caller.spec is None:
        manager.add_hookspecs(hookspecs)
    return manager


def model_entries() -> dict[str, ModelEntry]:
    app_plugin_manager()
    return registry("nasframe_models")


def get_model_entry(name: str) -> ModelEntry:
    """The entry for ``--model name``: a registered name first, then a plugin's resolution."""
    entries = model_entries()
    if name in entries:
        return entries[name]
    entry = app_plugin_manager().hook.nasframe_resolve_model(spec=name)
    if entry is not None:
        return entry
    raise _unresolved(name, sorted(entries))


def _unresolved(spec: str, names: list[str]) -> UserInputError:
    """The one-sentence error for a spec that is neither a name nor a loadable path."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / HF_CONFIG_FILE).is_file():
            return UserInputError(
                f"--model {spec} is a directory without {HF_CONFIG_FILE}; give a model "
                f"directory saved with save_pretrained or a {GGUF_SUFFIX} file."
            )
        return _no_plugin(spec)
    if path.is_file():
        if path.suffix.lower() != GGUF_SUFFIX:
            return UserInputError(
                f"--model {spec} is not a {GGUF_SUFFIX} file; give a {GGUF_SUFFIX} file, a "
                "model directory or a model name from `nasframe models`."
            )
        return _no_plugin(spec)
    if _looks_like_path(spec):
        return UserInputError(
            f"--model {spec}: no such file or directory; give a model name from `nasframe "
            f"models`, a model directory or a {GGUF_SUFFIX} file."
        )
    return UserInputError(
        f"unknown model {spec!r}; choose one of: {', '.join(names) or 'none'}, or give a model "
        f"directory or a {GGUF_SUFFIX} file."
    )


def _no_plugin(spec: str) -> UserInputError:
    """A model directory or GGUF file that no plugin resolved: the transformers plugin, which
    ships with nasframe, is not registered (its entry points were not installed)."""
    return UserInputError(
        f"no registered nasframe plugin loads --model {spec}: the transformers plugin that "
        f"ships with nasframe ({TRANSFORMERS_PLUGIN}) is not registered; reinstall nasframe "
        "(pip install nasframe, or pip install -e . in a checkout) to register its entry points."
    )


def _looks_like_path(spec: str) -> bool:
    """A spec a user meant as a path (so "no such file" is the helpful answer), not a name."""
    separators = {os.sep, "/"} | ({os.altsep} if os.altsep else set())
    return (
        any(sep in spec for sep in separators)
        or spec.startswith(("~", "."))
        or spec.lower().endswith(GGUF_SUFFIX)
    )

"""The one plugin manager: built-in registrations plus every ``nasframe`` entry point."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

import pluggy

import nasframe.builtin as builtin
import nasframe.hookspecs as hookspecs
from nasframe.space.convert import ConvertRegistry
from nasframe.space.family import ModelFamily


@functools.cache
def get_plugin_manager() -> pluggy.PluginManager:
    """Build the manager once: specs, nasframe's own registrations, then installed plugins."""
    manager = pluggy.PluginManager("nasframe")
    manager.add_hookspecs(hookspecs)
    manager.register(builtin, name="nasframe.builtin")
    manager.load_setuptools_entrypoints("nasframe")
    return manager


def reset_plugin_manager() -> None:
    """Forget the manager so the next call rediscovers entry points (tests, notebooks).

    The only reset there is: every registry (gradnas's setups too) is read from the manager,
    so a plugin installed in a running process is seen after this one call.
    """
    get_plugin_manager.cache_clear()


def merge_registrations(hook_name: str, results: Iterable[Mapping[Any, Any]]) -> dict[Any, Any]:
    """Merge the mappings returned by every implementation of ``hook_name``.

    Two plugins registering the same key for different values is an error rather than a
    silent override: the user must uninstall one of them.
    """
    merged: dict[Any, Any] = {}
    for result in results:
        for key, value in (result or {}).items():
            if key in merged and merged[key] is not value:
                raise RuntimeError(
                    f"two nasframe plugins register {key!r} in {hook_name} "
                    f"({merged[key]!r} and {value!r}); uninstall one of them."
                )
            merged[key] = value
    return merged


def registry(hook_name: str) -> dict[Any, Any]:
    """The merged mapping of a mapping-returning hook, e.g. ``registry("nasframe_algorithms")``."""
    hook = getattr(get_plugin_manager().hook, hook_name)
    # pluggy calls the last registered plugin first; reverse so built-ins come first.
    return merge_registrations(hook_name, reversed(hook()))


def passthrough_module_types() -> tuple[type, ...]:
    results = get_plugin_manager().hook.nasframe_passthrough_modules()
    return tuple(t for result in results for t in (result or ()))


def model_families() -> tuple[ModelFamily, ...]:
    """Every registered model family, built-ins first; two of the same name are an error."""
    results = get_plugin_manager().hook.nasframe_model_families()
    families = tuple(family for result in reversed(results) for family in (result or ()))
    by_name: dict[str, ModelFamily] = {}
    for family in families:
        if by_name.setdefault(family.name, family) is not family:
            raise RuntimeError(
                f"two nasframe plugins register the model family {family.name!r} "
                f"({by_name[family.name]!r} and {family!r}); uninstall one of them."
            )
    return families


def convert_registry() -> ConvertRegistry:
    """What ``convert`` needs from the installed plugins, read from the manager now."""
    return ConvertRegistry(
        dynamic_types=registry("nasframe_dynamic_modules"),
        passthrough_types=passthrough_module_types(),
        families=model_families(),
    )


def algorithm_names() -> list[str]:
    return sorted(registry("nasframe_algorithms"))


def get_algorithm(name: str) -> type:
    """The searcher class registered as ``name``; unknown names list the known ones."""
    from nasframe.errors import UserInputError

    algorithms = registry("nasframe_algorithms")
    if name not in algorithms:
        known = ", ".join(sorted(algorithms)) or "none (is a plugin installed?)"
        raise UserInputError(f"unknown algorithm {name!r}; choose one of: {known}.")
    return algorithms[name]

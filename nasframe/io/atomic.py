"""Atomic file writes: a crash or Ctrl-C never leaves a half-written file behind.

Data goes to a temporary file in the destination's folder, is flushed to disk, then renamed
over the destination (``os.replace`` is atomic on POSIX and Windows). A directory of files
(a transformers model) is written the same way: into a temporary sibling, then renamed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _default_mode(directory: bool) -> int:
    """The mode a plain ``open``/``mkdir`` would give (temporary files are private: 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(temporary_path)``, then move the result to ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        write(temporary)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(temporary, _default_mode(directory=False))
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def atomic_write_directory(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(temporary_directory)``, then put that directory at ``path``.

    An existing directory at ``path`` is moved aside first and deleted after the new one is in
    place, so readers find the old complete directory or the new complete one (or, for the
    instant between the two renames, none) — never a mix. If ``write`` fails, the old
    directory stays and the temporary one is removed.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    old = staging.with_name(staging.name.removesuffix(".tmp") + ".old")
    try:
        write(staging)
        os.chmod(staging, _default_mode(directory=True))
        for file in staging.rglob("*"):
            if file.is_file():
                with open(file, "rb") as handle:
                    os.fsync(handle.fileno())
        if target.exists():
            os.replace(target, old)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old.exists() and not target.exists():  # interrupted between the two renames
            os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return target

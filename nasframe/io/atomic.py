"""Atomic file writes: a crash or Ctrl-C never leaves a half-written file behind.

Data goes to a temporary file in the destination's folder, is flushed to disk, then renamed
over the destination (``os.replace`` is atomic on POSIX and Windows). A directory of files
(a transformers model) is written the same way: into a temporary sibling, then renamed.

The result has the mode a plain ``open``/``mkdir`` would give. The temporary is created by
``os.open(..., 0o666)`` / ``os.mkdir(..., 0o777)``, so the kernel applies the umask as it
does for any new file, and that mode is restored after ``write`` (which may have replaced
the file). Nothing reads the umask: ``os.umask`` can only be read by setting it, and setting
the process-wide value, even for an instant, races with every other thread creating files.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

_ATTEMPTS = 100


def _create_temporary(target: Path, directory: bool) -> tuple[Path, int]:
    """A new uniquely named hidden sibling of ``target`` (``.NAME.RANDOM.tmp``) and the mode
    the kernel gave it: that of a plain new file or directory under the current umask."""
    for _ in range(_ATTEMPTS):
        candidate = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        try:
            if directory:
                os.mkdir(candidate, 0o777)
            else:
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
                os.close(os.open(candidate, flags, 0o666))
        except FileExistsError:
            continue
        return candidate, stat.S_IMODE(os.stat(candidate).st_mode)
    raise FileExistsError(f"no free temporary name next to {target} after {_ATTEMPTS} tries")


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(temporary_path)``, then move the result to ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary, mode = _create_temporary(target, directory=False)
    try:
        write(str(temporary))
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
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
    staging, mode = _create_temporary(target, directory=True)
    old = staging.with_name(staging.name.removesuffix(".tmp") + ".old")
    try:
        write(staging)
        os.chmod(staging, mode)
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

"""``OUT/gguf/model.gguf``: the pruned model as a file llama.cpp runs.

The model's plugin writes it (``ModelBundle.save_gguf`` / ``ModelEntry.save_gguf``, the
transformers plugin for Llama, Mistral and Qwen2); the app only decides where, in which weight
type, and what the summary says. Like ``OUT/transformers``, a model llama.cpp cannot express
leaves the search successful with a note, and a file from an earlier run is removed so it
never contradicts this one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nasframe.errors import UserInputError

GGUF_DIR = "gguf"
GGUF_FILE = "model.gguf"
GGUF_DTYPES = ("f32", "f16", "bf16")
_DTYPE_NAMES = {torch.float16: "f16", torch.bfloat16: "bf16"}

SaveGguf = Callable[[torch.nn.Module, Path, str], Path]


def default_gguf_path(out: Path) -> Path:
    return Path(out) / GGUF_DIR / GGUF_FILE


def gguf_dtype_of(model: torch.nn.Module) -> str:
    """The weight type that loses nothing: that of the pruned model's weights (f32 unless the
    search ran in f16 or bf16)."""
    parameter = next(model.parameters(), None)
    return "f32" if parameter is None else _DTYPE_NAMES.get(parameter.dtype, "f32")


def write_gguf_output(
    save_gguf: SaveGguf | None,
    model: torch.nn.Module,
    out: Path,
    log: Callable[[str], None],
    dtype: str | None = None,
) -> dict[str, Any]:
    """Write ``OUT/gguf/model.gguf`` when the model's plugin can; the summary's entries:
    ``gguf`` (the file, or None) and, when none was written, ``gguf_note`` saying why."""
    target = default_gguf_path(out)
    if save_gguf is None:
        target.unlink(missing_ok=True)
        return {GGUF_DIR: None, "gguf_note": "this model's plugin writes no GGUF file"}
    try:
        save_gguf(model, target, dtype or gguf_dtype_of(model))
    except UserInputError as error:
        target.unlink(missing_ok=True)
        note = f"no GGUF file was written (llama.cpp cannot run this model): {error}"
        log(note)
        return {GGUF_DIR: None, "gguf_note": note}
    return {GGUF_DIR: str(target)}

"""``nasframe export DIR --to gguf``: a GGUF file from a result saved earlier.

The result (``nasframe.save``'s files, from ``nasframe search`` or a script) is restored with
``nasframe.load``; the tokenizer comes from the model the search started from, which
``summary.json`` names (``--source`` overrides it, or names it for a result without a summary).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nasframe.app.exporting.gguf_output import GGUF_DTYPES, default_gguf_path, gguf_dtype_of
from nasframe.app.job_output import SUMMARY_FILE
from nasframe.app.model_registry import get_model_entry
from nasframe.errors import UserInputError
from nasframe.io.serialization import METADATA_FILE

EXPORT_FORMATS = ("gguf",)


def add_export_parser(commands: argparse._SubParsersAction) -> None:
    """The ``export`` subcommand's arguments (``nasframe.app.cli`` dispatches it)."""
    export = commands.add_parser(
        "export",
        help="convert a saved result to another format (a GGUF file for llama.cpp)",
        description="Convert a nasframe output directory (nasframe search --out, or a "
        "directory nasframe.save wrote) to a GGUF file that llama.cpp runs.",
    )
    export.add_argument("directory", help="the nasframe output directory")
    export.add_argument(
        "--to", default="gguf", choices=EXPORT_FORMATS, help="format (default: gguf)"
    )
    export.add_argument("--out", help="file to write (default: DIRECTORY/gguf/model.gguf)")
    export.add_argument(
        "--dtype",
        choices=GGUF_DTYPES,
        help="weight type (default: that of the saved weights, f32 for a float32 search); "
        "quantize further with llama.cpp's llama-quantize",
    )
    export.add_argument(
        "--source",
        help="the model the result was pruned from, for its tokenizer (default: the one "
        "DIRECTORY/summary.json names)",
    )


def source_model(directory: Path, source: str | None) -> str:
    """The ``--model`` spec the result was searched from (or ``source`` when given)."""
    if source:
        return source
    summary = directory / SUMMARY_FILE
    if not summary.is_file():
        raise UserInputError(
            f"{directory} has no {SUMMARY_FILE} naming the model it was pruned from; pass that "
            "model with --source (a model name, model directory or .gguf file)."
        )
    try:
        model = json.loads(summary.read_text(encoding="utf-8"))["settings"]["model"]
    except (ValueError, KeyError, TypeError):
        raise UserInputError(
            f"{summary} does not name the model the result was pruned from; pass it with --source."
        ) from None
    return str(model)


def export_directory(
    directory: str,
    to: str = "gguf",
    out: str | None = None,
    dtype: str | None = None,
    source: str | None = None,
) -> Path:
    """Convert the nasframe output ``directory`` to ``to``; returns the file written."""
    import nasframe.api as api

    folder = Path(directory).expanduser()
    if to not in EXPORT_FORMATS:
        raise UserInputError(f"unknown export format {to!r}; choose one of {EXPORT_FORMATS}.")
    if dtype is not None and dtype not in GGUF_DTYPES:
        raise UserInputError(f"unknown --dtype {dtype!r}; choose one of {', '.join(GGUF_DTYPES)}.")
    if not (folder / METADATA_FILE).is_file():
        raise UserInputError(
            f"{directory} is not a nasframe output directory (no {METADATA_FILE}); give the "
            "--out directory of nasframe search or a directory written by nasframe.save."
        )
    spec = source_model(folder, source)
    entry = get_model_entry(spec)
    if entry.save_gguf is None:
        raise UserInputError(
            f"the model {spec} has no GGUF export (nasframe writes GGUF for Llama, Mistral and "
            "Qwen2 transformers models); load this result with nasframe.load instead."
        )
    model = api.load(folder).eval()
    target = Path(out).expanduser() if out else default_gguf_path(folder)
    return entry.save_gguf(model, target, dtype or gguf_dtype_of(model))

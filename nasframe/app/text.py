"""Text for calibrating and evaluating language models, with no download.

The built-in corpus is the docstrings of the running interpreter's standard library, so every
installation has a few megabytes of real English-and-code prose available offline.  The
docstrings are read with :mod:`ast` from the source files rather than by importing the modules,
because importing the whole standard library has side effects (``antigravity`` opens a web
browser, ``this`` prints a poem, some modules need a display).

Users can bring their own text with :func:`load_corpus_file`.  Both sources split their text into
disjoint calibration and evaluation parts by a fixed rule, so a pruning run calibrated on one
part is always measured on text it has not seen, and the split can be reproduced outside
nasframe.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import sys
import sysconfig
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from nasframe.errors import UserInputError

MIN_DOCSTRING_CHARS = 40
"""Shorter docstrings ("Return self.", "Helper.") add repetition rather than language."""

EVAL_BUCKETS = 10
"""A standard-library file goes to evaluation when ``zlib.crc32(path) % EVAL_BUCKETS == 0``."""

DOCUMENT_SEPARATOR = "\n\n"

_SKIPPED_DIRS = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
)
_DOCUMENTED_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
_STATEMENT_FIELDS = ("body", "handlers", "orelse", "finalbody", "cases")
_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n")


@dataclass(frozen=True)
class TextCorpus:
    """Calibration and evaluation text cut from different documents.

    A one-document corpus is cut into different character ranges instead; either way the
    evaluation text is text the model was not calibrated on.  ``source`` says where the text
    came from and how it was split, so reports can state which text a perplexity was measured on.
    """

    calibration: str
    evaluation: str
    source: str


@functools.cache
def stdlib_corpus() -> TextCorpus:
    """Return the docstrings of the standard library's Python files, split by source file.

    The files are the ``.py`` files under ``sysconfig.get_paths()["stdlib"]``, visited in sorted
    order of their POSIX path relative to that directory, skipping ``site-packages``,
    ``dist-packages``, ``__pycache__`` and the ``test``/``tests``/``idle_test`` directories (test
    suites are mostly code fixtures, and ``lib2to3``'s test data does not even parse).  Each file
    contributes the docstrings of its module, classes and functions in source order; files that
    cannot be decoded or parsed are skipped, docstrings shorter than ``MIN_DOCSTRING_CHARS``
    characters are dropped, and a docstring identical to an earlier one is kept only at its first
    occurrence.

    A file's docstrings go to the evaluation part when
    ``zlib.crc32(relative_posix_path.encode("utf-8")) % 10 == 0`` and to the calibration part
    otherwise; splitting by file keeps near-duplicate docstrings of one module on the same side.
    Documents are joined with a blank line.  The result is cached because parsing the standard
    library takes a few seconds.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    calibration: list[str] = []
    evaluation: list[str] = []
    seen: set[str] = set()
    n_files = 0
    for relative in _stdlib_source_files(root):
        docstrings = _file_docstrings(root / relative)
        if docstrings is None:
            continue
        n_files += 1
        held_out = zlib.crc32(relative.encode("utf-8")) % EVAL_BUCKETS == 0
        for doc in docstrings:
            if len(doc) < MIN_DOCSTRING_CHARS or doc in seen:
                continue
            seen.add(doc)
            (evaluation if held_out else calibration).append(doc)
    version = ".".join(str(part) for part in sys.version_info[:3])
    source = (
        f"docstrings of {n_files} Python {version} standard-library files under {root} "
        f"({len(calibration)} calibration and {len(evaluation)} evaluation docstrings); a file "
        f"goes to evaluation when zlib.crc32(its POSIX path relative to that directory, UTF-8) "
        f"% {EVAL_BUCKETS} == 0"
    )
    return TextCorpus(
        calibration=DOCUMENT_SEPARATOR.join(calibration),
        evaluation=DOCUMENT_SEPARATOR.join(evaluation),
        source=source,
    )


def _stdlib_source_files(root: Path) -> list[str]:
    """Return the relative POSIX paths of the standard library's ``.py`` files, sorted."""
    found: list[str] = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [name for name in subdirs if name not in _SKIPPED_DIRS]
        base = Path(directory).relative_to(root)
        found.extend((base / name).as_posix() for name in files if name.endswith(".py"))
    return sorted(found)


def _file_docstrings(path: Path) -> list[str] | None:
    """Return a file's docstrings in source order, or None when it cannot be read or parsed."""
    try:
        source = path.read_bytes()
        with warnings.catch_warnings():
            # Old modules contain invalid escape sequences; they parse fine but warn.
            warnings.simplefilter("ignore")
            tree = ast.parse(source, filename=str(path))
    except (OSError, SyntaxError, ValueError, RecursionError):
        # UnicodeDecodeError is a ValueError; so are source files containing null bytes.
        return None
    docstrings = (ast.get_docstring(node, clean=True) for node in _documented_nodes(tree))
    return [doc.strip() for doc in docstrings if doc and doc.strip()]


def _documented_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """Yield the module, class and function nodes in source order.

    Only statement lists are searched, because definitions cannot occur inside expressions;
    that skips most of the tree, which makes this several times faster than ``ast.walk``.
    """
    if isinstance(node, _DOCUMENTED_NODES):
        yield node
    for field in _STATEMENT_FIELDS:
        for child in getattr(node, field, ()):
            yield from _documented_nodes(child)


def load_corpus_file(path: str | os.PathLike[str]) -> TextCorpus:
    """Read a user's corpus and split it into calibration and evaluation parts.

    Two formats are accepted: plain UTF-8 text, whose documents are separated by blank lines,
    and JSON lines (a ``.jsonl`` or ``.json`` suffix, or a first non-blank line starting with
    ``{``), one object per line with a string ``"text"`` field.  Document ``i`` (counting from
    0) goes to evaluation when ``i % 10 == 9``; a file with 2 to 9 documents holds out its last
    document instead, so both parts are never empty.  A single document is split by characters,
    the first 90% to calibration and the rest to evaluation.  Any problem with the file raises
    :class:`UserInputError` naming the problem and the fix.
    """
    file = Path(path)
    if not file.is_file():
        problem = "is a directory" if file.is_dir() else "does not exist"
        raise UserInputError(
            f"Corpus file {file} {problem}; pass the path of a UTF-8 text or JSON-lines file."
        )
    raw = file.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UserInputError(
            f"Corpus file {file} is not UTF-8 (undecodable byte at offset {error.start}); "
            "re-encode it as UTF-8."
        ) from None
    if not text.strip():
        raise UserInputError(f"Corpus file {file} is empty; put the text to calibrate on in it.")
    if _looks_like_json_lines(file, text):
        documents = list(_json_lines_documents(file, text))
        kind = "JSON-lines records"
    else:
        documents = [doc.strip() for doc in _BLANK_LINES.split(text)]
        kind = "blank-line-separated documents"
    documents = [doc for doc in documents if doc.strip()]
    if not documents:
        raise UserInputError(
            f'Corpus file {file} has only empty "text" fields; put the text to calibrate on '
            "in them."
        )
    if len(documents) >= 2:
        return _split_documents(documents, f"{file}: {len(documents)} {kind}")
    return _split_characters(documents[0], file)


def _looks_like_json_lines(file: Path, text: str) -> bool:
    """Decide the format from the suffix, else from whether the first line opens an object."""
    if file.suffix.lower() in {".jsonl", ".json"}:
        return True
    first_line = next(line for line in text.splitlines() if line.strip())
    return first_line.lstrip().startswith("{")


def _json_lines_documents(file: Path, text: str) -> Iterator[str]:
    """Yield the ``"text"`` field of every non-blank line, failing on the first bad line."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserInputError(
                f"Line {number} of corpus file {file} is not valid JSON ({error.msg}); "
                'write one JSON object per line, such as {"text": "..."}.'
            ) from None
        value = record.get("text") if isinstance(record, dict) else None
        if not isinstance(value, str):
            raise UserInputError(
                f'Line {number} of corpus file {file} has no string "text" field; '
                'give every JSON line a "text" string, such as {"text": "..."}.'
            )
        yield value


def _split_documents(documents: list[str], description: str) -> TextCorpus:
    """Hold out every 10th document (the last one when there are fewer than 10)."""
    if len(documents) < EVAL_BUCKETS:
        held_out = {len(documents) - 1}
        rule = "the last document held out for evaluation (fewer than 10 documents)"
    else:
        held_out = {i for i in range(len(documents)) if i % EVAL_BUCKETS == EVAL_BUCKETS - 1}
        rule = "documents with index % 10 == 9 held out for evaluation"
    calibration = [doc for i, doc in enumerate(documents) if i not in held_out]
    evaluation = [doc for i, doc in enumerate(documents) if i in held_out]
    return TextCorpus(
        calibration=DOCUMENT_SEPARATOR.join(calibration),
        evaluation=DOCUMENT_SEPARATOR.join(evaluation),
        source=f"{description}; {rule}",
    )


def _split_characters(document: str, file: Path) -> TextCorpus:
    """Split a single document 90/10 by characters, keeping both parts non-empty."""
    if len(document) < 2:
        raise UserInputError(
            f"Corpus file {file} holds a single character, too little to split into calibration "
            "and evaluation text; give it more text."
        )
    cut = min(max(round(len(document) * 0.9), 1), len(document) - 1)
    return TextCorpus(
        calibration=document[:cut],
        evaluation=document[cut:],
        source=f"{file}: one document; its first 90% of characters for calibration, the rest "
        "for evaluation",
    )

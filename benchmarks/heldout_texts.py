"""Held-out texts of two kinds for the benchmarks, from what every machine here has.

nasframe calibrates on the standard library's docstrings (or on text the model generates).
A result that is good only on more docstrings says little about the text a user evaluates
on, so the benchmarks measure on texts of two kinds, with separate roles:

- **Validation** (chooses defaults and variants; never reported as the result):
  - ``python-reference`` (close kind): the Python Language Reference topics that ``pydoc``
    ships in ``pydoc_data/topics.py``: technical English about Python, but not docstrings.
  - ``man-pages`` (far kind): a fixed sample of the section-1 manual pages under
    ``/usr/share/man/man1``, rendered to plain text with ``groff``.
- **Report** (the figures ``docs/results.md`` gives; never used to choose anything):
  - ``docstrings`` (close kind): the evaluation split of ``stdlib_corpus()``, the
    docstrings of the standard-library files held out from calibration.
  - ``licenses`` (far kind): the license texts under ``/usr/share/common-licenses``
    (Debian's GPL, Apache, MPL, ...): legal English with no code at all.

Each text is returned with a line saying where it came from, so reports can name it.
"""

from __future__ import annotations

import gzip
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path

from nasframe.app.text import stdlib_corpus

MAN_DIR = Path("/usr/share/man/man1")
LICENSE_DIR = Path("/usr/share/common-licenses")
MAN_SAMPLE_BUCKETS = 40
"""A manual page is in the sample when ``zlib.crc32(file name) % 40 == 0`` (about 2.5%)."""
MAX_CHARS = 600_000
"""Longer texts are cut (at a blank line): the benchmarks read far fewer tokens than this."""


@dataclass(frozen=True)
class HeldOutText:
    """One held-out text: its name, kind (close or far from the calibration's), role
    (validation or report), the text and where it came from."""

    name: str
    kind: str
    role: str
    text: str
    source: str


def validation_texts() -> list[HeldOutText]:
    """The texts that choose defaults: ``python-reference`` and ``man-pages``."""
    return [python_reference(), man_pages()]


def report_texts() -> list[HeldOutText]:
    """The texts results are reported on: ``docstrings`` and ``licenses``."""
    return [heldout_docstrings(), licenses()]


def python_reference() -> HeldOutText:
    from pydoc_data.topics import topics  # a dict of strings; importing it runs nothing else

    text = "\n\n".join(topics[key].strip() for key in sorted(topics))
    return HeldOutText(
        "python-reference",
        "close",
        "validation",
        _cut(text),
        f"pydoc_data.topics: the {len(topics)} Python Language Reference topics, sorted by key",
    )


def man_pages() -> HeldOutText:
    files = sorted(
        path
        for path in MAN_DIR.glob("*.gz")
        if zlib.crc32(path.name.encode("utf-8")) % MAN_SAMPLE_BUCKETS == 0
    )
    pages = [page for page in (_render_man_page(path) for path in files) if page]
    if not pages:
        raise RuntimeError(
            f"no manual page under {MAN_DIR} could be rendered with groff; install man-db and "
            "groff, or run the benchmark with its report texts only."
        )
    return HeldOutText(
        "man-pages",
        "far",
        "validation",
        _cut("\n\n".join(pages)),
        f"{len(pages)} section-1 manual pages under {MAN_DIR} (crc32(file name) % "
        f"{MAN_SAMPLE_BUCKETS} == 0), rendered by groff -man -Tutf8 without hyphenation",
    )


def heldout_docstrings() -> HeldOutText:
    corpus = stdlib_corpus()
    return HeldOutText(
        "docstrings",
        "close",
        "report",
        _cut(corpus.evaluation),
        f"the evaluation split of {corpus.source}",
    )


def licenses() -> HeldOutText:
    seen: set[Path] = set()
    texts = []
    for path in sorted(LICENSE_DIR.iterdir()) if LICENSE_DIR.is_dir() else []:
        real = path.resolve()  # GPL is a link to GPL-3: each text once
        if real in seen or not real.is_file():
            continue
        seen.add(real)
        texts.append(real.read_text(encoding="utf-8", errors="replace").strip())
    if not texts:
        raise RuntimeError(f"{LICENSE_DIR} holds no license text (Debian's base-files has them).")
    return HeldOutText(
        "licenses",
        "far",
        "report",
        _cut("\n\n".join(texts)),
        f"the {len(texts)} distinct license texts under {LICENSE_DIR}, sorted by name",
    )


def _render_man_page(path: Path) -> str:
    """A manual page as plain text: no hyphenation, one line per paragraph, no page header."""
    try:
        source = gzip.decompress(path.read_bytes())
        rendered = subprocess.run(
            ["groff", "-man", "-Tutf8", "-P-c", "-P-b", "-P-u", "-rHY=0", "-rLL=2000n"],
            input=source,
            capture_output=True,
            timeout=30,
            check=False,
        ).stdout.decode("utf-8", errors="replace")
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = [line.strip() for line in rendered.splitlines()]
    body = [line for line in lines[1:-1] if line]  # the first and last lines are page headers
    return "\n".join(body)


def _cut(text: str) -> str:
    if len(text) <= MAX_CHARS:
        return text
    cut = text.rfind("\n\n", 0, MAX_CHARS)
    return text[: cut if cut > 0 else MAX_CHARS]

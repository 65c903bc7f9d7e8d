"""Tests for the built-in standard-library corpus and user corpus files."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from nasframe.app import text
from nasframe.app.text import TextCorpus, load_corpus_file, stdlib_corpus
from nasframe.errors import UserInputError


def _doc(name: str) -> str:
    """A docstring long enough to be kept, and unique to ``name``."""
    return f"The {name} docstring explains at some length what this piece of code does."


@pytest.fixture
def fake_stdlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point stdlib_corpus at a small fake standard library, clearing its cache around the test."""
    files = {
        "alpha.py": f'"""{_doc("alpha module")}"""\n\n'
        f'def f():\n    """{_doc("shared")}"""\n\n'
        'def g():\n    """Too short."""\n',
        "pkg/zeta.py": f'class C:\n    """{_doc("zeta class")}"""\n\n'
        f'    async def m(self):\n        """{_doc("shared")}"""\n',
        "rho.py": f'"""{_doc("rho module")}"""\n\nif True:\n'
        f'    def h():\n        """{_doc("rho function")}"""\n',
        "broken.py": f'"""{_doc("broken")}"""\ndef (:\n',
        "test/test_alpha.py": f'"""{_doc("test package")}"""\n',
        "pkg/tests/t.py": f'"""{_doc("tests directory")}"""\n',
        "idlelib/idle_test/i.py": f'"""{_doc("idle test")}"""\n',
        "site-packages/third.py": f'"""{_doc("third party")}"""\n',
        "__pycache__/cached.py": f'"""{_doc("pycache")}"""\n',
        "notes.txt": f'"""{_doc("not python")}"""\n',
    }
    for relative, source in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    (tmp_path / "latin1.py").write_bytes(f'"""{_doc("latin1")} caf\xe9"""\n'.encode("latin-1"))
    monkeypatch.setattr(text.sysconfig, "get_paths", lambda: {"stdlib": str(tmp_path)})
    stdlib_corpus.cache_clear()
    yield tmp_path
    stdlib_corpus.cache_clear()


def test_fake_stdlib_split_follows_the_documented_crc32_rule(fake_stdlib: Path) -> None:
    assert zlib.crc32(b"rho.py") % 10 == 0
    assert zlib.crc32(b"alpha.py") % 10 != 0 and zlib.crc32(b"pkg/zeta.py") % 10 != 0
    corpus = stdlib_corpus()
    assert corpus.calibration == "\n\n".join(
        [_doc("alpha module"), _doc("shared"), _doc("zeta class")]
    )
    assert corpus.evaluation == "\n\n".join([_doc("rho module"), _doc("rho function")])
    assert "crc32" in corpus.source and "% 10 == 0" in corpus.source


def test_fake_stdlib_corpus_is_deterministic_and_cached(fake_stdlib: Path) -> None:
    first = stdlib_corpus()
    assert stdlib_corpus() is first
    stdlib_corpus.cache_clear()
    assert stdlib_corpus() == first


def test_real_stdlib_corpus_parts_are_large_disjoint_and_described() -> None:
    corpus = stdlib_corpus()
    assert len(corpus.calibration) > 100_000
    assert len(corpus.evaluation) > 10_000
    assert len(corpus.calibration) > 3 * len(corpus.evaluation)
    # argparse.py's crc32 % 10 != 0, so its module docstring is calibration text only.
    assert zlib.crc32(b"argparse.py") % 10 != 0
    assert "Command-line parsing library" in corpus.calibration
    assert "Command-line parsing library" not in corpus.evaluation
    assert "standard-library" in corpus.source and "crc32" in corpus.source


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_plain_text_holds_out_every_tenth_document(tmp_path: Path) -> None:
    documents = [f"Document number {i}\nspans two lines." for i in range(25)]
    path = _write(tmp_path, "corpus.txt", "\n\n  \n".join(documents) + "\n")
    corpus = load_corpus_file(path)
    held_out = [documents[9], documents[19]]
    assert corpus.evaluation == "\n\n".join(held_out)
    assert corpus.calibration == "\n\n".join(d for d in documents if d not in held_out)
    assert "25" in corpus.source


def test_json_lines_by_suffix_and_by_content(tmp_path: Path) -> None:
    records = [{"text": f"record {i}", "id": i} for i in range(12)]
    lines = "\n".join(json.dumps(r) for r in records) + "\n\n"
    by_suffix = load_corpus_file(_write(tmp_path, "c.jsonl", lines))
    by_content = load_corpus_file(_write(tmp_path, "c.data", lines))
    assert (by_suffix.calibration, by_suffix.evaluation) == (
        by_content.calibration,
        by_content.evaluation,
    )
    assert "JSON-lines" in by_content.source
    assert by_suffix.evaluation == "record 9"
    assert by_suffix.calibration.split("\n\n") == [f"record {i}" for i in range(12) if i != 9]


def test_few_documents_hold_out_the_last_one(tmp_path: Path) -> None:
    corpus = load_corpus_file(_write(tmp_path, "c.txt", "first\n\nsecond\n\nthird"))
    assert corpus == TextCorpus("first\n\nsecond", "third", corpus.source)


def test_single_document_is_split_ninety_ten_by_characters(tmp_path: Path) -> None:
    corpus = load_corpus_file(_write(tmp_path, "c.txt", "x" * 90 + "y" * 10))
    assert corpus.calibration == "x" * 90
    assert corpus.evaluation == "y" * 10


def test_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    corpus = load_corpus_file(_write(tmp_path, "c.txt", "\ufeffcafé\n\nthé".encode()))
    assert corpus.calibration == "café" and corpus.evaluation == "thé"


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        (None, None, ["does not exist"]),
        ("empty.txt", "", ["empty"]),
        ("blank.txt", "  \n\n \t\n", ["empty"]),
        ("latin1.txt", "caf\xe9".encode("latin-1"), ["not UTF-8", "re-encode"]),
        ("bad.jsonl", '{"text": "ok"}\n\n{"text": oops}\n', ["Line 3", "not valid JSON"]),
        ("missing.jsonl", '{"text": "ok"}\n{"body": "x"}\n', ["Line 2", '"text"']),
        ("number.jsonl", '{"text": 5}\n', ["Line 1", 'string "text"']),
        ("list.jsonl", '["text"]\n', ["Line 1", '"text"']),
        ("blanks.jsonl", '{"text": ""}\n{"text": " "}\n', ["empty", '"text"']),
        ("one.txt", "x", ["single character"]),
    ],
)
def test_bad_corpus_files_raise_user_input_error_naming_the_problem(
    tmp_path: Path, name: str | None, content: str | bytes | None, words: list[str]
) -> None:
    path = tmp_path / "absent.txt" if name is None else _write(tmp_path, name, content or "")
    with pytest.raises(UserInputError) as raised:
        load_corpus_file(path)
    message = str(raised.value)
    for word in words:
        assert word in message
    assert str(path) in message
    assert message.count(";") == 1 and message.endswith(".")


def test_directory_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="is a directory"):
        load_corpus_file(tmp_path)

"""Encoding long text (``nasframe_transformers.tokenizing``): chunks that concatenate to the
text, end where documents end, and encode like the whole text without a length warning."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from hf_models.pretrained import WORDS, documents, tiny_tokenizer  # noqa: E402
from nasframe_transformers.tokenizing import chunk_text, make_encoder  # noqa: E402

LENGTH_WARNING = "longer than the specified maximum sequence length"


@contextlib.contextmanager
def transformers_warnings() -> Iterator[list[str]]:
    """The messages transformers logs while the block runs (it does not propagate to root)."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = Collect(logging.WARNING)
    library = logging.getLogger("transformers")
    library.addHandler(handler)
    try:
        yield messages
    finally:
        library.removeHandler(handler)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab \n", max_size=120), st.integers(min_value=1, max_value=20))
def test_chunks_concatenate_to_the_text_and_respect_the_limit(text: str, limit: int) -> None:
    chunks = chunk_text(text, limit)
    assert "".join(chunks) == text
    assert all(0 < len(chunk) <= limit for chunk in chunks)


def test_chunks_end_where_documents_end_when_documents_fit() -> None:
    docs = documents(40, seed=2)
    limit = 3 * max(len(doc) for doc in docs)
    chunks = chunk_text("\n\n".join(docs), limit)
    assert 1 < len(chunks) < len(docs)  # documents are packed, and there is more than one chunk
    assert all(chunk.startswith("\n\n") for chunk in chunks[1:])


def test_long_text_encodes_like_the_whole_text_without_a_length_warning(tmp_path: Path) -> None:
    tiny_tokenizer(max_length=64).save_pretrained(tmp_path)
    text = "\n\n".join(documents(60, seed=3)) + "\n" + " ".join(WORDS * 20)  # one long paragraph
    reference = transformers.AutoTokenizer.from_pretrained(tmp_path)
    with transformers_warnings() as warned:
        expected = reference(text, add_special_tokens=False)["input_ids"]
    assert any(LENGTH_WARNING in message for message in warned)  # the warning is observable
    encode = make_encoder(transformers.AutoTokenizer.from_pretrained(tmp_path))
    with transformers_warnings() as warned:
        ids = encode(text)
    assert not [message for message in warned if LENGTH_WARNING in message]
    assert len(expected) > 10 * 64
    assert ids == expected

"""Encode megabytes of text with a Hugging Face tokenizer, in chunks it accepts.

Calibration text (the standard library's docstrings are several MB) is far longer than a
model's context, and a tokenizer warns about every sequence longer than its
``model_max_length`` even though nasframe only cuts the ids into short windows afterwards. So
the text is cut into chunks below that length — at blank lines, where documents end, and only
inside a document that is too long at line breaks, then spaces — and the chunks are encoded
in one batch call. A byte-level BPE tokenizer (GPT-2, Llama 3, SmolLM2) splits words before
whitespace anyway, so cutting there gives the same ids as encoding the whole text at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

DEFAULT_CHUNK_CHARS = 4096
"""Chunk size when the tokenizer states no usable maximum length (big enough to be fast)."""

MAX_TOKENS_PER_CHAR = 4
"""A character is at most 4 UTF-8 bytes, and byte-level tokenizers emit at most a token per byte."""

# Cut points from the most to the least natural, each before the whitespace it names, so every
# piece but the first starts with the separator (as the tokenizer sees it mid-text).
_CUT_POINTS = (re.compile(r"(?=\n[ \t]*\n)"), re.compile(r"(?=\n)"), re.compile(r"(?= )"))


def chunk_text(text: str, max_chars: int) -> list[str]:
    """Consecutive chunks of at most ``max_chars`` characters whose concatenation is ``text``.

    Whole documents (blank-line separated) are packed into chunks; a document longer than
    ``max_chars`` is cut at line breaks, then at spaces, and as a last resort every
    ``max_chars`` characters.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, got {max_chars}")
    chunks: list[str] = []
    current = ""
    for piece in _pieces(text, max_chars, 0):
        if current and len(current) + len(piece) > max_chars:
            chunks.append(current)
            current = ""
        current += piece
    if current:
        chunks.append(current)
    return chunks


def _pieces(text: str, max_chars: int, level: int) -> list[str]:
    """``text`` cut at ``_CUT_POINTS[level]`` (and finer ones where needed) into short pieces."""
    if len(text) <= max_chars:
        return [text]
    if level == len(_CUT_POINTS):
        return [text[i : i + max_chars] for i in range(0, len(text), max_chars)]
    pieces: list[str] = []
    for part in _CUT_POINTS[level].split(text):
        if part:
            pieces += _pieces(part, max_chars, level + 1) if len(part) > max_chars else [part]
    return pieces


def chunk_chars_for(tokenizer: Any) -> int:
    """The longest chunk (in characters) that cannot exceed the tokenizer's maximum length."""
    limit = getattr(tokenizer, "model_max_length", None)
    if (
        not isinstance(limit, int)
        or limit <= 0
        or limit > MAX_TOKENS_PER_CHAR * DEFAULT_CHUNK_CHARS
    ):
        return DEFAULT_CHUNK_CHARS  # no limit stated (transformers uses a huge number for that)
    # One token to spare for a prefix some tokenizers add at the start of every sequence.
    return max(1, (limit - 1) // MAX_TOKENS_PER_CHAR)


def make_encoder(tokenizer: Any) -> Callable[[str], list[int]]:
    """``encode(text) -> ids`` without special tokens, for texts of any length."""
    max_chars = chunk_chars_for(tokenizer)

    def encode(text: str) -> list[int]:
        chunks = chunk_text(text, max_chars)
        if not chunks:
            return []
        encoded = tokenizer(chunks, add_special_tokens=False)["input_ids"]
        return [token for ids in encoded for token in ids]

    return encode

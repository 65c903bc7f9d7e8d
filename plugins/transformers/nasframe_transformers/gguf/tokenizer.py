"""The tokenizer's GGUF metadata, copied from the model the search started from.

A GGUF source already holds llama.cpp's ``tokenizer.*`` fields: they are copied as they are
(read with ``gguf.GGUFReader``, which maps the file instead of reading it). A model directory
holds a Hugging Face tokenizer: its vocabulary, merges and special tokens are converted with
the ``gguf`` package's own vocabulary readers (``BpeVocab`` for byte-level BPE, ``LlamaHfVocab``
for Llama-2-style BPE with byte fallback, ``SentencePieceVocab`` for ``tokenizer.model``), and
the pre-tokenizer is named from the split pattern it uses, so llama.cpp splits text the same
way (an unknown pattern is refused rather than silently tokenized differently).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nasframe.errors import UserInputError

TOKENIZER_PREFIX = "tokenizer."
# llama.cpp's names for the split patterns of common byte-level BPE tokenizers, recognised by
# a fragment only that pattern has.
_PRE_TOKENIZERS = (
    ("\\p{N}{1,3}", "llama-bpe"),  # Llama 3
    ("[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|", "qwen2"),  # Qwen2
)


def copy_gguf_tokenizer(writer: Any, source: Path) -> None:
    """Every ``tokenizer.*`` field of the GGUF file ``source``, with its value type."""
    import gguf

    reader = gguf.GGUFReader(str(source))
    copied = 0
    for name, field in reader.fields.items():
        if not name.startswith(TOKENIZER_PREFIX) or not field.types:
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), kind, sub_type=sub)
        copied += 1
    if not copied:
        raise UserInputError(
            f"the source model {source} holds no tokenizer.* fields, so its GGUF would have no "
            "tokenizer; start the search from a GGUF file or directory that has one."
        )


def pre_tokenizer_name(tokenizer_json: dict[str, Any]) -> str:
    """llama.cpp's name for the split pattern of a byte-level BPE tokenizer."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [step.get("type") for step in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    patterns = [
        (step.get("pattern") or {}).get("Regex", "")
        for step in steps
        if step.get("type") == "Split"
    ]
    digits = [step for step in steps if step.get("type") == "Digits"]
    if digits and digits[0].get("individual_digits") and kinds[-1] == "ByteLevel":
        return "smollm"
    for fragment, name in _PRE_TOKENIZERS:
        if any(fragment in pattern for pattern in patterns):
            return name
    raise UserInputError(
        f"the tokenizer's pre-tokenizer ({', '.join(str(k) for k in kinds)}) is not one "
        "nasframe can name for llama.cpp (gpt-2, llama-bpe, qwen2, smollm), so its GGUF "
        "could tokenize differently; start from a GGUF file of the model instead."
    )


def add_directory_tokenizer(writer: Any, directory: Path, n_vocab: int) -> None:
    """The Hugging Face tokenizer in ``directory`` as llama.cpp's tokenizer metadata."""
    import gguf
    from gguf.vocab import BpeVocab, LlamaHfVocab, SentencePieceVocab, SpecialVocab

    tokenizer_file = directory / "tokenizer.json"
    if tokenizer_file.is_file():
        tokenizer_json = json.loads(tokenizer_file.read_text(encoding="utf-8"))
        model = tokenizer_json.get("model", {})
        if model.get("type") == "BPE" and not model.get("byte_fallback", False):
            vocab, pre = BpeVocab(directory), pre_tokenizer_name(tokenizer_json)
        else:
            vocab, pre = LlamaHfVocab(directory), "default"
        special = {t["id"] for t in tokenizer_json.get("added_tokens", []) if t.get("special")}
    elif (directory / "tokenizer.model").is_file():
        vocab, pre, special = SentencePieceVocab(directory), None, set()
    else:
        raise UserInputError(
            f"the source model directory {directory} has no tokenizer.json or tokenizer.model, "
            "so its GGUF would have no tokenizer; save the tokenizer there with "
            "tokenizer.save_pretrained."
        )
    tokens, scores, types = [], [], []
    for index, (text, score, kind) in enumerate(vocab.all_tokens()):
        tokens.append(text)
        scores.append(score)
        types.append(gguf.TokenType.CONTROL if index in special else kind)
    if len(tokens) > n_vocab:
        raise UserInputError(
            f"the tokenizer in {directory} has {len(tokens)} tokens but the model's embedding "
            f"only {n_vocab}; export from the directory the model was trained with."
        )
    for index in range(len(tokens), n_vocab):  # embedding rows no token uses
        tokens.append(f"[PAD{index}]".encode())
        scores.append(-1000.0)
        types.append(gguf.TokenType.UNUSED)
    writer.add_tokenizer_model(vocab.tokenizer_model)
    if pre is not None:
        writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    merges = vocab.tokenizer_model == "gpt2"
    SpecialVocab(directory, load_merges=merges, n_vocab=n_vocab).add_to_gguf(writer, quiet=True)

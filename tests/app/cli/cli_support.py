"""What the CLI tests share: the small ``search`` command on ``byte-mlp-tiny``, a generated
corpus, and reading what a run wrote."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from nasframe.app.lm import ByteTokenizer, token_batches
from nasframe.app.text import load_corpus_file

SEQ_LEN, BATCH_SIZE, CALIBRATION, SCORE, EVAL = 16, 4, 4, 2, 2
SMALL = [
    "--model",
    "byte-mlp-tiny",
    "--seq-len",
    str(SEQ_LEN),
    "--batch-size",
    str(BATCH_SIZE),
    "--calibration-batches",
    str(CALIBRATION),
    "--score-batches",
    str(SCORE),
    "--eval-batches",
    str(EVAL),
]
WORDS_TEXT = (
    "the model prunes every layer to a budget while the search keeps units that matter most "
    "and a byte tokenizer reads plain text from documents split by blank lines"
)
OUTPUT_FILES = {"summary.json", "model.safetensors", "nasframe.json"}


def search_argv(data: Path, out: Path, *extra: str) -> list[str]:
    return ["search", *SMALL, "--data", str(data), "--out", str(out), *extra]


def write_corpus(path: Path, documents: int = 60, seed: int = 0) -> Path:
    """A few KB of blank-line separated documents (every 10th one is evaluation text)."""
    rng, words = random.Random(seed), WORDS_TEXT.split()
    docs = [
        " ".join(rng.choice(words) for _ in range(rng.randint(25, 55))) + "."
        for _ in range(documents)
    ]
    path.write_text("\n\n".join(docs), encoding="utf-8")
    return path


def read_summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))


def evaluation_batches(data: Path) -> list[torch.Tensor]:
    """The evaluation batches the job measures perplexity on, rebuilt as job.py builds them."""
    corpus = load_corpus_file(data)
    return token_batches(ByteTokenizer().encode(corpus.evaluation), SEQ_LEN, BATCH_SIZE, EVAL)


def files_under(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.exists() else []

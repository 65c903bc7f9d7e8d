"""What the GGUF export tests share: the real llama.cpp programs, a tiny Llama trained on the
built-in text (so greedy choices are not near-ties), per-layer pruning and nasframe's own
greedy continuation and perplexity computed the way llama.cpp computes them.

The llama.cpp binaries live in ``../shared/tools/llama.cpp/`` from the project's root; tests
that need them skip, naming that folder, where they are missing.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import transformers

import nasframe
from nasframe.app.exporting.parity import greedy, windowed_perplexity
from nasframe.app.text import stdlib_corpus

LLAMA_CPP = Path(__file__).resolve().parents[1].parent / "shared" / "tools" / "llama.cpp"
PROGRAMS = ("llama-completion", "llama-perplexity", "llama-quantize")
requires_llama_cpp = pytest.mark.skipif(
    not all((LLAMA_CPP / name).is_file() for name in PROGRAMS),
    reason=f"needs the llama.cpp programs {', '.join(PROGRAMS)} in {LLAMA_CPP}",
)
PROMPT = "Return the value of the"
CONTEXT = 128  # llama-perplexity -c

__all__ = ["greedy", "windowed_perplexity"]  # re-exported for the GGUF tests


def llama_cpp(
    program: str,
    *args: str,
    done: Callable[[subprocess.CompletedProcess], bool] = bool,
    timeout: float = 120,
) -> subprocess.CompletedProcess:
    """Run a llama.cpp program; rerun it (up to 8 times) until ``done(run)``.

    llama.cpp logs, generated text included, through a background thread that the program does
    not join at exit, so on a busy machine the end of its output is sometimes lost
    (llama.cpp issue 22142); the run itself is deterministic, so a rerun prints the same text.
    """
    for _ in range(8):
        run = subprocess.run(
            [str(LLAMA_CPP / program), *args],
            stdin=subprocess.DEVNULL,  # with pytest's stdin, llama-completion stops early
            capture_output=True,
            text=True,
            errors="replace",  # a random model may generate bytes that are not UTF-8
            timeout=timeout,
            check=True,
        )
        if done(run):
            break
    return run


def completion(model: Path, prompt: str = PROMPT, tokens: int = 24, margin: int = 8) -> str:
    """llama.cpp's greedy continuation of ``prompt`` (the text after the prompt), at least
    ``tokens`` tokens long.

    It asks for ``margin`` tokens more than needed, so output lost at exit (see
    :func:`llama_cpp`) costs only the extra tokens; compare with ``startswith``.
    """
    run = llama_cpp(
        "llama-completion", "-m", str(model), "-p", prompt, "-n", str(tokens + margin),
        "--temp", "0", "-no-cnv", "--ignore-eos", "-t", "1", "--no-warmup",
        done=lambda run: run.stdout.endswith("\n\n"),
    )  # fmt: skip
    text = run.stdout
    assert text.startswith(prompt), (text, run.stderr[-2000:])
    # llama-completion ends a complete output with two newlines
    return text[len(prompt) :].removesuffix("\n\n")


def perplexity(model: Path, text: Path, context: int = CONTEXT) -> float:
    run = llama_cpp("llama-perplexity", "-m", str(model), "-f", str(text), "-c", str(context),
                    "-t", "1", "-b", str(context),
                    done=lambda run: "Final estimate" in run.stdout + run.stderr)  # fmt: skip
    found = re.search(r"Final estimate: PPL = ([0-9.]+)", run.stdout + run.stderr)
    assert found, run.stderr[-2000:]
    return float(found.group(1))


def quantize(source: Path, target: Path, kind: str = "q8_0") -> Path:
    llama_cpp("llama-quantize", str(source), str(target), kind)
    return target


def corpus_tokenizer():
    """A byte-level BPE tokenizer (GPT-2 style) trained on some of the built-in text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<eos>"],
        show_progress=False,
    )
    tokenizer.train_from_iterator([stdlib_corpus().calibration[:200_000]], trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<eos>")


@functools.cache
def trained_llama() -> tuple[transformers.PreTrainedModel, object]:
    """A 4-layer Llama (GQA: 4 query heads in 2 KV groups) trained for a few seconds on the
    built-in text; callers must not change it (copy it first)."""
    tokenizer = corpus_tokenizer()
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True,
        max_position_embeddings=256,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    ids = torch.tensor(tokenizer(stdlib_corpus().calibration[:150_000])["input_ids"])
    windows = ids[: len(ids) // 64 * 64].view(-1, 64)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(150):
        batch = windows[torch.randint(len(windows), (16,), generator=generator)]
        loss = model(batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), tokenizer


def save_source(model, tokenizer, directory: Path) -> Path:
    """The unpruned model as a ``--model`` directory (its tokenizer is what the GGUF copies)."""
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def save_result(space, pruned, source: Path, out: Path) -> Path:
    """``pruned`` as ``nasframe search`` saves it, with a summary naming its source model."""
    from nasframe_transformers.export import clean_config_dict

    architecture = {
        "name": "transformers",
        "kwargs": {"config": clean_config_dict(space.model.config)},
    }
    nasframe.save(
        pruned,
        out,
        space.config(),
        architecture,
        kept_units=space.kept_units(),
        added_biases=space.added_biases,
    )
    summary = {"settings": {"model": str(source)}}
    (out / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return out

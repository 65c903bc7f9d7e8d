"""A tiny random Llama and a byte-level BPE tokenizer trained here on a few sentences, saved
as ``save_pretrained`` writes them: model directories without a download."""

from __future__ import annotations

import random
from pathlib import Path

import torch
import transformers
from nasframe_transformers import loading

WORDS_TEXT = (
    "the model prunes every layer to a budget while the search keeps units that matter most "
    "and a tokenizer reads plain text from documents split by blank lines"
)
WORDS = WORDS_TEXT.split()


def documents(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(25, 55))) + "." for _ in range(count)
    ]


def tiny_tokenizer(max_length: int | None = None):
    """A byte-level BPE tokenizer (GPT-2 style) trained offline on a few documents."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<eos>"],
        show_progress=False,
    )
    tokenizer.train_from_iterator(documents(50), trainer)
    options = {"model_max_length": max_length} if max_length else {}
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<eos>", **options
    )


def save_tiny_model(directory: Path, dtype: torch.dtype = torch.float32) -> Path:
    """A random tiny Llama and its tokenizer, as ``save_pretrained`` writes them."""
    tokenizer = tiny_tokenizer()
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).to(dtype)
    with loading._no_progress_bars():  # no bars from the test's own save_pretrained
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
    return directory

"""Calibration text sampled from the dense model itself (data-free calibration).

The built-in text is docstrings, and a model calibrated only on docstrings is repaired for
docstrings: its scores and least-squares fits follow that text's statistics, and perplexity
on text of other kinds falls off. The model's own samples follow the distribution it was
trained on, whatever that was, so calibrating on them asks the pruned model to keep what
the model does in general rather than on one corpus.

Each row starts from one token drawn from the calibration text (so the model is not asked
to begin from nothing, and a model without a beginning-of-text token works the same) and
continues by sampling with temperature and nucleus (top-p) truncation, with a seeded
generator: the same model and seed give the same rows.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from nasframe.app.lm import model_device, model_logits

#: Sampling defaults: plain temperature-1 sampling with the 5% least likely tail cut, so the
#: rows read like the model's own text rather than its noise.
TEMPERATURE = 1.0
TOP_P = 0.95
ROWS_PER_CHUNK = 32
"""Rows sampled together: enough to keep the matrix products busy, small enough for a cache."""


def sample_rows(
    model: nn.Module,
    first_tokens: torch.Tensor,
    length: int,
    seed: int = 0,
    temperature: float = TEMPERATURE,
    top_p: float = TOP_P,
    progress: Callable[[Iterable[Any]], Iterable[Any]] = lambda it: it,
) -> torch.Tensor:
    """``len(first_tokens)`` rows of ``length`` tokens, each starting with its first token
    and continued by sampling from ``model``; on the CPU, dtype int64.

    A model whose forward takes a key/value cache (``cache``, or ``past_key_values`` before
    transformers 5.2x) and ``use_cache`` (Hugging Face causal LMs) is run with it, one new
    token per step; any other model that maps token ids to logits is run on the whole prefix
    at every step.
    """
    if length < 1:
        raise ValueError(f"length must be at least 1, got {length}")
    generator = torch.Generator().manual_seed(seed)
    device = model_device(model)
    cached = _cache_argument(model)
    rows = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for chunk in progress(first_tokens.view(-1, 1).split(ROWS_PER_CHUNK)):
                rows.append(
                    _sample_chunk(
                        model, chunk, length, generator, temperature, top_p, device, cached
                    )
                )
    finally:
        model.train(was_training)
    return torch.cat(rows) if rows else torch.empty(0, length, dtype=torch.long)


def _sample_chunk(
    model: nn.Module,
    start: torch.Tensor,
    length: int,
    generator: torch.Generator,
    temperature: float,
    top_p: float,
    device: torch.device,
    cached: str | None,
) -> torch.Tensor:
    ids = start.to(torch.long)
    cache = None
    while ids.shape[1] < length:
        if cached:
            step = ids if cache is None else ids[:, -1:]
            output = model(input_ids=step.to(device), use_cache=True, **{cached: cache})
            cache = getattr(output, cached)
        else:
            output = model(ids.to(device))
        logits = model_logits(output)[:, -1].float().cpu()
        ids = torch.cat([ids, _sample(logits, generator, temperature, top_p)], dim=1)
    return ids


def _sample(
    logits: torch.Tensor, generator: torch.Generator, temperature: float, top_p: float
) -> torch.Tensor:
    """One token per row from softmax(logits / temperature), keeping the smallest set of
    most likely tokens whose probability reaches ``top_p``."""
    probs = torch.softmax(logits / temperature, dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    before = sorted_probs.cumsum(dim=-1) - sorted_probs
    sorted_probs[before >= top_p] = 0.0  # the most likely token always stays (before = 0)
    choice = torch.multinomial(sorted_probs, 1, generator=generator)
    return order.gather(-1, choice)


def _cache_argument(model: nn.Module) -> str | None:
    """The name of the forward's key/value cache argument (also its output's attribute),
    or None when the model takes none."""
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return None
    if "use_cache" not in parameters:
        return None
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)

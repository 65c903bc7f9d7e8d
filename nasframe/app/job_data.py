"""The job's text cut into token batches: calibration, held-back score batches, evaluation.

Calibration batches feed gradnas's scoring and the reconstruction; the held-back ones are
fastnas's ``score_func`` (never calibrated on); the evaluation batches, from text the model
was not calibrated on, give the perplexity before and after.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

import torch

from nasframe.app.job_settings import JobSettings
from nasframe.app.lm import token_batches
from nasframe.app.text import TextCorpus
from nasframe.errors import UserInputError


@dataclass(frozen=True)
class JobBatches:
    """The token batches of a job, cut once from its text."""

    calibration: list[torch.Tensor]  # scoring (gradnas) and reconstruction
    held_back: list[torch.Tensor]  # fastnas's score_func
    evaluation: list[torch.Tensor]  # perplexity before and after
    # The model's device: batches stay on the CPU (the loss moves each one), the dummy
    # input, which the cost model runs the model on directly, goes there.
    device: torch.device = torch.device("cpu")

    @property
    def dummy_input(self) -> torch.Tensor:
        """One sequence: what the cost model and the FLOP count run the model on."""
        return self.evaluation[0][:1, :-1].to(self.device)


def job_batches(
    corpus: TextCorpus,
    encode: Callable[[str], list[int]],
    settings: JobSettings,
    device: torch.device | None = None,
) -> JobBatches:
    """Calibration batches, held-back score batches (fastnas), evaluation batches; the dummy
    input on ``device`` (the model's; the CPU when None)."""
    wanted = settings.calibration_batches + settings.score_batches
    row = settings.batch_size * (settings.seq_len + 1)
    calibration_ids = encode_enough(encode, corpus.calibration, wanted * row)
    batches = token_batches(calibration_ids, settings.seq_len, settings.batch_size, wanted)
    if len(batches) < 2:
        raise UserInputError(
            f"the calibration text gives {len(batches)} batch of {settings.batch_size} x "
            f"{settings.seq_len} tokens; give more text or lower --batch-size/--seq-len."
        )
    if len(batches) == wanted:  # enough text: exactly the batches the flags ask for
        held = settings.score_batches
    else:  # short text: hold back a fifth at most, calibrate on the rest
        held = min(settings.score_batches, max(1, len(batches) // 5))
    evaluation_ids = encode_enough(encode, corpus.evaluation, settings.eval_batches * row)
    evaluation = token_batches(
        evaluation_ids, settings.seq_len, settings.batch_size, settings.eval_batches
    )
    calibration = batches[: min(settings.calibration_batches, len(batches) - held)]
    return JobBatches(
        calibration, batches[len(batches) - held :], evaluation, device or torch.device("cpu")
    )


def encode_enough(encode: Callable[[str], list[int]], text: str, needed: int) -> list[int]:
    """The token ids of the shortest prefix of ``text``, cut at a blank line, that gives at
    least ``needed`` tokens (all of ``text`` when it has fewer).

    The built-in corpus is megabytes of text, and a subword tokenizer spends seconds on it
    when the job needs a few batches; the prefix depends only on the text, so the batches
    are as deterministic as before.
    """
    length = max(8 * needed, 1 << 14)  # characters; doubled until there are enough tokens
    while length < len(text):
        cut = text.rfind("\n\n", 0, length)
        ids = encode(text[: cut if cut > 0 else length])
        if len(ids) >= needed:
            return ids
        length *= 2
    return encode(text)


def job_key(settings: JobSettings, corpus: TextCorpus) -> str:
    """Digest of everything a checkpoint's scores depend on, so stale ones are never reused."""
    inputs = {
        "model": settings.model,
        "divisor": settings.divisor,
        "seq_len": settings.seq_len,
        "batch_size": settings.batch_size,
        "calibration_batches": settings.calibration_batches,
        "score_batches": settings.score_batches,
        "text": hashlib.sha256(corpus.calibration.encode()).hexdigest(),
    }
    if settings.uniform:  # only when set, so earlier checkpoints keep their names
        inputs["uniform"] = True
    if settings.calibration != "text":
        inputs["calibration"] = settings.calibration
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]

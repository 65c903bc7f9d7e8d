"""The model and its token batches: the same calibration, held-back, validation and evaluation
batches for every method of a run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from nasframe.app.lm import token_batches
from nasframe.app.model_registry import ModelBundle, get_model_entry
from nasframe.app.text import stdlib_corpus

from .settings import MODEL_NAME, Settings


@dataclass
class Data:
    """Token batches; calibration and held-back are disjoint slices of the calibration text."""

    calibration: list[torch.Tensor]
    held_back: list[torch.Tensor]
    evaluation: list[torch.Tensor]
    source: str  # where the text came from and how it was split
    validation: list[torch.Tensor] = field(default_factory=list)


def calibration_ids(bundle: ModelBundle) -> list[int]:
    return bundle.encode(stdlib_corpus().calibration)


def calibration_batches(ids: Sequence[int], settings: Settings) -> list[torch.Tensor]:
    """The first ``calibration_batches`` batches of the calibration text, in order."""
    batches = token_batches(
        ids, settings.seq_len, settings.batch_size, settings.calibration_batches
    )
    if len(batches) < settings.calibration_batches:
        raise SystemExit(f"the calibration text gives only {len(batches)} calibration batches")
    return batches


def make_data(bundle: ModelBundle, settings: Settings) -> Data:
    """Calibration batches, then held-back and validation batches cut from the tokens after
    them, and the evaluation batches from the evaluation text (other files than calibration)."""
    ids = calibration_ids(bundle)
    calibration = calibration_batches(ids, settings)
    used = sum(batch.numel() for batch in calibration)
    held_back = token_batches(
        ids[used:], settings.seq_len, settings.held_back_batch_size, settings.held_back_batches
    )
    used += sum(batch.numel() for batch in held_back)
    validation = token_batches(
        ids[used:], settings.seq_len, settings.batch_size, settings.validation_batches
    )
    evaluation = token_batches(
        bundle.encode(stdlib_corpus().evaluation),
        settings.seq_len,
        settings.batch_size,
        settings.eval_batches,
    )
    return Data(calibration, held_back, evaluation, stdlib_corpus().source, validation)


def load_model(progress: bool) -> ModelBundle:
    """SmolLM2 in float32 and eval mode, with its tokenizer (about 30-40 s on 2 cores)."""
    bundle = get_model_entry(MODEL_NAME).load(progress=progress)
    bundle.model.eval()
    return bundle


def count_params(model: nn.Module) -> int:
    """Distinct parameters: tied input/output embeddings count once."""
    return sum(p.numel() for p in model.parameters())

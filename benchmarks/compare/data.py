"""The model and its token batches: the same calibration, held-back, validation and report
batches for every method of a run, and the one evaluation every row goes through."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from heldout_texts import report_texts, validation_texts
from torch import nn

from nasframe.app.lm import perplexity, token_batches
from nasframe.app.model_registry import ModelBundle, get_model_entry
from nasframe.app.text import stdlib_corpus

from .settings import MODEL_NAME, Settings

#: The docstrings at the calibration's sequence length: the figure earlier runs reported.
LEGACY = "docstrings@128"


@dataclass
class Data:
    """Token batches; calibration and held-back are disjoint slices of the calibration text.

    ``evaluation`` is the docstring text at the calibration's sequence length (``LEGACY``);
    ``report`` and ``validation`` hold, per text of ``benchmarks/heldout_texts.py``, batches
    at the report sequence length: the report texts give the figures, the validation texts
    only choose variants. ``texts`` says where each came from; ``plain_biases`` is the
    family's rule for biases a plain config can hold (what the job passes for --uniform).
    """

    calibration: list[torch.Tensor]
    held_back: list[torch.Tensor]
    evaluation: list[torch.Tensor]
    source: str  # where the text came from and how it was split
    validation: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    report: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    texts: dict[str, dict[str, str]] = field(default_factory=dict)
    plain_biases: Callable[[str], bool] | None = None
    legacy: str = LEGACY


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
    """Calibration batches, then held-back batches cut from the tokens after them; the
    docstrings' evaluation split at the calibration's sequence length; and the held-out
    texts (validation and report) in windows of ``report_seq_len`` tokens."""
    ids = calibration_ids(bundle)
    calibration = calibration_batches(ids, settings)
    used = sum(batch.numel() for batch in calibration)
    held_back = token_batches(
        ids[used:], settings.seq_len, settings.held_back_batch_size, settings.held_back_batches
    )
    evaluation = token_batches(
        bundle.encode(stdlib_corpus().evaluation),
        settings.seq_len,
        settings.batch_size,
        settings.eval_batches,
    )
    data = Data(calibration, held_back, evaluation, stdlib_corpus().source)
    data.legacy = f"docstrings@{settings.seq_len}"
    for text, count in [(t, settings.validation_batches) for t in validation_texts()] + [
        (t, settings.report_batches) for t in report_texts()
    ]:
        batches = token_batches(
            bundle.encode(text.text), settings.report_seq_len, settings.batch_size, count
        )
        target = data.validation if text.role == "validation" else data.report
        target[f"{text.name}@{settings.report_seq_len}"] = batches
        data.texts[text.name] = {"kind": text.kind, "role": text.role, "source": text.source}
    if bundle.plain_biases is not None:
        data.plain_biases = bundle.plain_biases(bundle.model).__contains__
    return data


def evaluate(model: nn.Module, data: Data) -> dict[str, float]:
    """Perplexity on every report text, then on the docstrings at the calibration's length:
    the same function (``nasframe.app.lm.perplexity``) and batches for every row."""
    figures = {name: perplexity(model, batches) for name, batches in data.report.items()}
    figures[data.legacy] = perplexity(model, data.evaluation)
    return figures


def validate(model: nn.Module, data: Data) -> dict[str, float]:
    """Perplexity on every validation text (these figures only choose variants)."""
    return {name: perplexity(model, batches) for name, batches in data.validation.items()}


def geometric_mean(figures: Mapping[str, float]) -> float:
    """The one number a variant is chosen by: the geometric mean of its validation figures."""
    values = list(figures.values())
    if not values:
        return math.nan
    return math.exp(sum(math.log(v) if v > 0 else math.inf for v in values) / len(values))


def dense_figures(model: nn.Module, data: Data) -> dict[str, Any]:
    """The dense model's figures: ``perplexity`` is the legacy one the targets were set on."""
    figures = evaluate(model, data)
    return {
        "perplexity": figures[data.legacy],
        "perplexities": figures,
        "validation": validate(model, data),
        "params": count_params(model),
    }


def load_model(progress: bool) -> ModelBundle:
    """SmolLM2 in float32 and eval mode, with its tokenizer (about 30-40 s on 2 cores)."""
    bundle = get_model_entry(MODEL_NAME).load(progress=progress)
    bundle.model.eval()
    return bundle


def count_params(model: nn.Module) -> int:
    """Distinct parameters: tied input/output embeddings count once."""
    return sum(p.numel() for p in model.parameters())

"""Calibration rows the dense model samples itself, and the job's ``--calibration`` source.

What a user relies on: the same model and seed give the same rows; each row starts with the
token it was given and is as long as the text rows it replaces; a cached Hugging Face model
samples what it would sample without its cache; ``mix`` replaces every second row only; the
held-back and evaluation rows stay text; a checkpoint of one source is never resumed for
another; ``nasframe search --calibration generated`` runs end to end and says so in
``summary.json``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from nasframe.app.calibration import generated
from nasframe.app.calibration.generated import sample_rows
from nasframe.app.calibration.sources import calibrate_on
from nasframe.app.job_data import JobBatches, job_key
from nasframe.app.job_settings import JobSettings
from nasframe.app.text import TextCorpus


class Bigram(nn.Module):
    """Logits from the last token alone: a model with no cache, any length."""

    def __init__(self, vocab: int = 11) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.table = nn.Embedding(vocab, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table(ids)


def test_the_same_seed_gives_the_same_rows_starting_with_the_tokens_given() -> None:
    first = torch.tensor([1, 2, 3, 4, 5])
    rows = sample_rows(Bigram(), first, 9, seed=3)
    assert rows.shape == (5, 9) and rows.dtype == torch.long
    assert torch.equal(rows[:, 0], first)
    assert torch.equal(rows, sample_rows(Bigram(), first, 9, seed=3))
    assert not torch.equal(rows, sample_rows(Bigram(), first, 9, seed=4))


def test_top_p_keeps_the_most_likely_token_and_cuts_the_tail() -> None:
    logits = torch.tensor([[5.0, 0.0, -1.0, -9.0]])
    generator = torch.Generator().manual_seed(0)
    picks = {int(generated._sample(logits, generator, 1.0, 0.5)) for _ in range(50)}
    assert picks == {0}  # token 0 alone holds more than half the probability


def test_a_cached_hugging_face_model_samples_what_it_samples_without_its_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("transformers")
    from hf_models import llama

    model = llama.tiny_model("llama").double()
    first = torch.tensor([3, 7, 9])
    assert generated._cache_argument(model) is not None
    cached = sample_rows(model, first, 8, seed=1)
    monkeypatch.setattr(generated, "_cache_argument", lambda _: None)
    assert torch.equal(cached, sample_rows(model, first, 8, seed=1))


def batches_of(rows: int = 4, length: int = 6) -> JobBatches:
    ids = torch.arange(rows * 2 * length).view(rows * 2, length) % 11
    calibration = list(ids[:rows].split(2))
    return JobBatches(calibration, [ids[rows : rows + 2]], [ids[rows + 2 :]])


@pytest.mark.parametrize("source", ["text", "generated", "mix"])
def test_a_source_replaces_only_the_calibration_rows_it_names(source: str) -> None:
    text = batches_of()
    batches, info = calibrate_on(source, text, Bigram())
    old = torch.cat(text.calibration)
    new = torch.cat(batches.calibration)
    assert [b.shape for b in batches.calibration] == [b.shape for b in text.calibration]
    assert torch.equal(new[:, 0], old[:, 0])  # every row starts from the text's first token
    changed = [i for i in range(len(old)) if not torch.equal(old[i], new[i])]
    expected = {"text": [], "generated": [0, 1, 2, 3], "mix": [1, 3]}[source]
    assert changed == expected
    assert info.generated_rows == len(expected) and info.rows == 4
    assert batches.held_back is text.held_back and batches.evaluation is text.evaluation


def test_a_checkpoint_of_one_calibration_source_is_not_resumed_for_another() -> None:
    corpus = TextCorpus("calibration text", "evaluation text", "a test")
    settings = JobSettings(seq_len=8, batch_size=2, calibration_batches=2, score_batches=1)
    keys = {job_key(replace(settings, calibration=s), corpus) for s in ("text", "generated", "mix")}
    assert len(keys) == 3


def test_search_calibrated_on_generated_rows_runs_and_says_so(tmp_path: Path) -> None:
    from cli_runner import run_main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        "\n\n".join(
            f"Document {i}: the quick brown fox jumps over the lazy dog." for i in range(200)
        )
    )
    out = tmp_path / "out"
    argv = ["search", "--algo", "gradnas", "--model", "byte-mlp-tiny", "--data", str(corpus)]
    argv += ["--out", str(out), "--constraint", "params=80%", "--divisor", "8", "--quiet"]
    argv += ["--calibration", "generated", "--calibration-batches", "2", "--seq-len", "16"]
    argv += ["--ridge", "0.5"]
    code, _, stderr = run_main(argv)
    assert code == 0, stderr[-2000:]
    import json

    summary = json.loads((out / "summary.json").read_text())
    assert summary["calibration"]["source"] == "generated"
    assert summary["calibration"]["generated_rows"] == summary["calibration"]["rows"] > 0
    assert summary["settings"]["calibration"] == "generated"
    assert summary["settings"]["ridge"] == 0.5


def test_an_unknown_calibration_source_is_one_line_and_exit_2(tmp_path: Path) -> None:
    from cli_runner import run_main

    code, _, stderr = run_main(
        ["search", "--model", "byte-mlp-tiny", "--out", str(tmp_path), "--calibration", "web"]
    )
    assert code == 2 and "--calibration" in stderr and len(stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("ridge", ["-1", "nan", "inf"])
def test_a_bad_ridge_is_one_line_and_exit_2_before_any_model_loads(
    tmp_path: Path, ridge: str
) -> None:
    from cli_runner import run_main

    out = tmp_path / "out"
    code, _, stderr = run_main(
        ["search", "--model", "byte-mlp-tiny", "--out", str(out), "--ridge", ridge]
    )
    assert code == 2 and "--ridge" in stderr and len(stderr.strip().splitlines()) == 1
    assert not out.exists()

"""``nasframe search --algo gradnas --model DIR --constraint params=85%`` on saved tiny model
directories of families no code names (Starcoder2, Granite): the command line prunes them as
it prunes Llama, to the budget, and what it writes loads back with the same logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from cli_runner import run_main  # noqa: E402
from hf_models.pretrained import documents, tiny_tokenizer  # noqa: E402
from hf_models.structural import tiny_config  # noqa: E402
from nasframe_transformers import loading  # noqa: E402

import nasframe  # noqa: E402

FAMILIES = ["granite", "starcoder2"]
SMALL = [
    *("--seq-len", "16", "--batch-size", "4", "--calibration-batches", "4"),
    *("--score-batches", "2", "--eval-batches", "2", "--divisor", "8", "--quiet"),
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text("\n\n".join(documents(120, seed=1)), encoding="utf-8")
    return path


@pytest.fixture(scope="module", params=FAMILIES)
def run(request, tmp_path_factory, corpus):
    family = request.param
    directory = tmp_path_factory.mktemp("models") / family
    tokenizer = tiny_tokenizer()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        config = tiny_config(family, vocab_size=len(tokenizer))
        model = transformers.AutoModelForCausalLM.from_config(config)
        with loading._no_progress_bars():
            model.save_pretrained(directory)
            tokenizer.save_pretrained(directory)
        out = tmp_path_factory.mktemp("out") / family
        argv = ["search", "--algo", "gradnas", "--model", str(directory), "--constraint"]
        argv += ["params=85%", "--data", str(corpus), "--out", str(out), *SMALL]
        code, _, stderr = run_main(argv)
    finally:
        torch.set_num_threads(threads)
    assert code == 0, stderr
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    return family, directory, out, summary


def _logits(model, vocab):
    tokens = torch.randint(0, vocab, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return model(tokens).logits


def test_the_search_prunes_to_the_budget(run):
    family, directory, _, summary = run
    assert summary["params"]["fraction"] <= 0.85, (family, summary["params"])
    assert summary["params"]["after"] <= summary["search"]["limit"]
    pruned = [name for name, h in summary["hparams"].items() if h["kept"] < h["max"]]
    assert pruned, "the search pruned nothing"


def test_what_the_search_wrote_loads_back_with_the_same_logits(run):
    family, _, out, summary = run
    restored = nasframe.load(out)
    assert sum(p.numel() for p in restored.parameters()) == summary["params"]["after"]
    plain_dir = summary["exports"]["transformers"]
    if plain_dir is None:  # a per-layer result no plain config can hold: the summary says why
        assert summary["exports"]["note"], summary["exports"]
        return
    plain = transformers.AutoModelForCausalLM.from_pretrained(plain_dir).eval()
    expected = _logits(restored, plain.config.vocab_size)
    error = (_logits(plain, plain.config.vocab_size) - expected).norm() / expected.norm()
    assert error <= 1e-4, (family, float(error))

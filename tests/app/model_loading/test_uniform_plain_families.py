"""``--uniform`` on tiny Llama, Mistral, Qwen2 and Gemma 3 directories: the budget is used (no
uniform step left that fits) and the plain transformers directory is always written. Where
the family's plain config cannot hold a reconstruction bias (Mistral, Qwen2, Gemma 3's
``down_proj``), the kept columns are refitted without one and summary.json says so."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from cli_runner import run_main  # noqa: E402
from hf_models.decoders import CONFIGS  # noqa: E402
from hf_models.llama import FAMILIES  # noqa: E402
from hf_models.pretrained import tiny_tokenizer  # noqa: E402
from loading_support import logits, read_summary, search_argv, token_ids  # noqa: E402
from nasframe_transformers import loading  # noqa: E402

import nasframe  # noqa: E402
from nasframe.app.job_settings import job_rules  # noqa: E402
from nasframe.cost.cost_model import CostModel  # noqa: E402
from nasframe.searchers.allocation import uniform_groups  # noqa: E402

BUILDERS = {
    **{
        name: lambda vocab, config=config: config(
            vocab_size=vocab,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
        for name, config in FAMILIES.items()
    },
    "gemma3": lambda vocab: CONFIGS["gemma3"](vocab_size=vocab),
}
# Families whose plain config holds a down-projection bias (Llama's mlp_bias).
HOLDS_BIAS = {"llama"}
DIVISOR = 16  # loading_support.SMALL's


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def run(request, tmp_path_factory, corpus: Path):
    family = request.param
    directory = tmp_path_factory.mktemp("models") / family
    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(BUILDERS[family](len(tokenizer)))
    with loading._no_progress_bars():
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
    out = tmp_path_factory.mktemp("out") / family
    argv = search_argv(directory, corpus, out, "--constraint", "params=85%", "--uniform")
    code, _, stderr = run_main(argv)
    assert code == 0, stderr
    return family, directory, out, read_summary(out)


def test_the_plain_directory_is_written_and_holds_the_same_model(run) -> None:
    family, _, out, summary = run
    assert summary["exports"]["transformers"] == str(out / "transformers"), summary["exports"]
    plain = transformers.AutoModelForCausalLM.from_pretrained(out / "transformers").eval()
    ids = token_ids(plain.config.vocab_size)
    expected = logits(nasframe.load(out), ids)
    error = (logits(plain, ids) - expected).norm() / expected.norm()
    assert error <= 1e-4, (family, float(error))


def test_summary_records_the_reconstruction_actually_used(run) -> None:
    family, _, _, summary = run
    repaired = summary["reconstruct"]
    assert repaired["mode"] == "lsq"
    assert repaired["reconstructed"], "the run pruned nothing a refit repairs"
    if family in HOLDS_BIAS:
        assert repaired["mode_used"] == "lsq" and repaired["mode_reason"] is None
        assert repaired["added_biases"] and not repaired["without_bias"]
    else:
        assert repaired["mode_used"].startswith("lsq without added biases")
        assert repaired["without_bias"]
        assert not set(repaired["without_bias"]) & {
            name.removesuffix(".bias") for name in repaired["added_biases"]
        }
        assert "cannot hold a bias" in repaired["mode_reason"]
        assert all(name in repaired["mode_reason"] for name in repaired["without_bias"])
        assert not any(name.endswith("down_proj.bias") for name in repaired["added_biases"])


def test_the_budget_is_used_up_to_the_smallest_open_uniform_step(run) -> None:
    _, directory, _, summary = run
    search = summary["search"]
    assert summary["params"]["after"] <= search["limit"]
    model = transformers.AutoModelForCausalLM.from_pretrained(directory)
    space = nasframe.convert(model, job_rules(DIVISOR))
    space.restrict_to_uniform()
    costs = CostModel(space)
    config = space.max_config() | {n: h["kept"] for n, h in summary["hparams"].items()}
    kept = costs.cost("params", config)
    assert kept == search["cost_after"]
    full = {name: hparam.max for name, hparam in space.hparams.items()}
    steps = []
    for members in uniform_groups(list(space.hparams), full).values():
        larger = [c for c in space.hparams[members[0]].choices if c > config[members[0]]]
        if larger:
            grown = {**config, **dict.fromkeys(members, min(larger))}
            steps.append(costs.cost("params", grown) - kept)
    assert steps, "the search pruned nothing"
    assert kept >= search["searched_limit"] - min(steps), (kept, search, steps)

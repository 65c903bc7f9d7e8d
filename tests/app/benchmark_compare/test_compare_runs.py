"""``benchmarks/smollm2_compare.py`` runs, without SmolLM2: the random searcher, the settings,
and the whole method comparison end to end on a tiny random Llama, so checkpoint reuse across
budgets is checked where it is cheap."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from compare_script import compare, report
from torch import nn

import nasframe
from nasframe.app.lm import next_token_loss

# --------------------------------------------------------------------------- random searcher


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 4)
    )


def _random_search(seed: int, budget: str = "params=70%"):
    space = nasframe.convert(_mlp(), {"*": {"divisor": 4}})
    searcher = compare.RandomBinarySearcher()
    result = searcher.search(space, budget, config={"seed": seed, "verbose": False})
    return space, result


def test_random_searcher_meets_a_params_constraint():
    space, result = _random_search(seed=0)
    assert result.cost_after <= result.limit
    pruned = nasframe.export(space)
    kept = sum(p.numel() for p in pruned.parameters())
    assert kept <= 0.7 * sum(p.numel() for p in _mlp().parameters())
    assert pruned(torch.randn(3, 8)).shape == (3, 4)
    # Scores sum to 1 per hparam, so the sensitivity of a size is the random fraction pruned.
    for name, scores in result.importance.items():
        assert scores.sum().item() == pytest.approx(1.0)
        assert result.sensitivity[name][space.hparams[name].max] == 0.0


def test_random_searcher_is_seeded():
    _, first = _random_search(seed=0)
    _, again = _random_search(seed=0)
    _, other = _random_search(seed=1)
    assert first.config == again.config
    assert all(torch.equal(first.importance[n], again.importance[n]) for n in first.importance)
    assert not all(torch.equal(first.importance[n], other.importance[n]) for n in first.importance)


# --------------------------------------------------------------------------- settings


def test_quick_defaults_and_explicit_flags(tmp_path):
    quick = compare.parse_settings(["--quick"])
    assert quick.budgets == (90, 80) and quick.methods == ("gradnas", "random")
    assert (quick.seq_len, quick.batch_size, quick.calibration_batches) == (32, 2, 2)
    assert quick.out_md.parent != compare.REPO / "docs"  # a temp dir, never the docs
    full = compare.parse_settings(["--out-md", str(tmp_path / "r.md"), "--budgets", "80,70"])
    assert full.budgets == (80, 70) and full.seq_len == 128 and full.calibration_batches == 16
    assert full.out_png == tmp_path / "results.png"
    assert full.command.endswith("--budgets 80,70")
    with pytest.raises(SystemExit):
        compare.parse_settings(["--methods", "gradnas,magic"])
    with pytest.raises(SystemExit):
        compare.parse_settings(["--budgets", "90,0"])


# --------------------------------------------------------------------------- end to end, tiny


def _tiny_llama():
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def _tiny_run(model: nn.Module, tmp_path: Path, methods: tuple[str, ...]):
    """Random-token batches, quick settings at 90% and 80% for ``methods``, dense figures."""
    generator = torch.Generator().manual_seed(0)

    def batches(n):
        return [torch.randint(0, 64, (2, 9), generator=generator) for _ in range(n)]

    data = compare.Data(
        batches(2),
        batches(1),
        batches(1),
        source="random tokens",
        validation={"validation@8": batches(1)},
        report={"report@8": batches(1)},
    )
    settings = replace(
        compare.parse_settings(["--quick", "--no-progress", "--out-md", str(tmp_path / "r.md")]),
        budgets=(90, 80),
        methods=methods,
        divisor=16,
    )
    dense = {
        "perplexity": 64.0,
        "params": sum(p.numel() for p in model.parameters()),
        "perplexities": {"report@8": 64.0, "docstrings@128": 64.0},
        "validation": {"validation@8": 64.0},
    }
    return data, settings, dense


def test_methods_on_a_tiny_llama_reuse_their_checkpoints_and_render(tmp_path, one_thread):
    model = _tiny_llama()
    reference = copy.deepcopy(model)
    methods = ("gradnas", "fastnas", "random", "torch-pruning")
    data, settings, dense = _tiny_run(model, tmp_path, methods)
    runs, methods, space = compare.compare_methods(model, data, dense, settings, str(tmp_path))
    variants = compare.compare_variants(model, data, dense, settings, tmp_path)

    # the model itself is never converted or sorted: every run works on a copy
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), reference.state_dict().values(), strict=True)
    )
    by_key = {(run.method, run.budget): run for run in runs}
    for method in ("gradnas", "fastnas", "random"):
        assert by_key[(method, 90)].fraction <= 0.9 and by_key[(method, 80)].fraction <= 0.8
    for method in ("gradnas", "fastnas"):
        assert not by_key[(method, 90)].resumed and by_key[(method, 80)].resumed
        assert methods[method]["search_s"] == by_key[(method, 90)].search_s
    if compare.torch_pruning_missing():
        assert methods["torch-pruning"]["status"].startswith("not installed, not run")
    assert space["fastnas_evaluations"] == sum(
        len(hp.choices)
        for hp in nasframe.convert(copy.deepcopy(model), compare.search_rules(16)).hparams.values()
    )

    results = {
        "command": settings.command,
        "date": "2026-01-01",
        "wall_s": 1.0,
        "phases_s": {},
        "machine": compare.machine_info(1, [0.5, 0.5, 0.5], None),
        "protocol": compare.protocol_info(settings, data),
        "space": space,
        "dense": dense,
        "runs": [compare.asdict(run) for run in runs],
        "methods": methods,
        "variants": variants,
        "scoring": compare.summarize_scoring(
            {"seconds": [2.0], "batches": 2, "peak_above_load_kb": 100},
            {"seconds": [4.0], "batches": 2, "peak_above_load_kb": 200},
        ),
    }
    (tmp_path / "r.md").write_text("# Results\n\nkept\n")
    compare.write_report(results, settings)
    written = (tmp_path / "r.md").read_text()
    assert written.startswith("# Results\n\nkept\n")
    assert written.count(report.MARK_START) == 1 and "| gradnas | 80% |" in written
    assert "### Allocation, normalisation and reconstruction" in written
    assert "Target (issue 6)" in written
    raw = (tmp_path / "results-smollm2.json").read_text()
    assert "resumed" in report.format_table(results)

    # --from-json renders the same section elsewhere and leaves the raw numbers alone
    again = tmp_path / "again" / "results.md"
    compare.main(["--from-json", str(tmp_path / "results-smollm2.json"), "--out-md", str(again)])
    assert "| gradnas | 80% |" in again.read_text()
    assert "(../results-smollm2.json)" in again.read_text()
    assert (tmp_path / "results-smollm2.json").read_text() == raw


def test_variants_cover_the_grid_and_every_reconstruction(tmp_path, one_thread):
    model = _tiny_llama()
    data, settings, dense = _tiny_run(model, tmp_path, ("gradnas", "random"))
    variants = compare.compare_variants(model, data, dense, settings, tmp_path)
    runs = variants["runs"]
    grid = {(r["allocation"], r["normalize"]) for r in runs if r["reconstruct"] == "none"}
    assert grid == {(a, n) for a in report.ALLOCATIONS for n in report.NORMALIZATIONS}
    chosen = variants["selected"]["gradnas"]
    for budget in (90, 80):
        modes = {
            r["reconstruct"]
            for r in runs
            if r["budget"] == budget
            and (r["allocation"], r["normalize"]) == (chosen["allocation"], chosen["normalize"])
        }
        assert modes == set(report.RECONSTRUCTIONS)
    assert all(r["fraction"] <= r["budget"] / 100 for r in runs)
    best = min(
        (r for r in runs if r["budget"] == 80 and r["reconstruct"] == "none"),
        key=lambda r: r["validation_perplexity"],
    )
    assert (best["allocation"], best["normalize"]) == (chosen["allocation"], chosen["normalize"])


def test_held_back_score_is_minus_the_mean_loss(one_thread):
    model = _tiny_llama()
    batches = [
        torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(s)) for s in (1, 2)
    ]
    with torch.no_grad():
        expected = -(next_token_loss(model, batches[0]) + next_token_loss(model, batches[1])) / 2
    assert compare.held_back_score(batches)(model) == pytest.approx(expected.item())

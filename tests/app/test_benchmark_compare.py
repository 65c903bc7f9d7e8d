"""The pure parts of ``benchmarks/smollm2_compare.py``, without SmolLM2.

The script is imported from its path (``benchmarks/`` is no package); its report helpers sit
beside it in ``_compare_report.py``. The whole method comparison also runs end to end on a
tiny random Llama, so checkpoint reuse across budgets is checked where it is cheap.
"""

from __future__ import annotations

import copy
import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

import nasframe
from nasframe.app.lm import next_token_loss

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load_script():
    sys.path.insert(0, str(BENCHMARKS))  # the script imports _compare_report beside it
    try:
        spec = importlib.util.spec_from_file_location(
            "smollm2_compare", BENCHMARKS / "smollm2_compare.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


compare = _load_script()
report = sys.modules["_compare_report"]


# --------------------------------------------------------------------------- markdown block


def test_block_replacement_keeps_the_rest_of_the_file():
    before = "# Results\n\nintro\n\n"
    after = "\n\n## Later section\n\ntext\n"
    old = f"{report.MARK_START}\nold table\n{report.MARK_END}"
    new = f"{report.MARK_START}\nnew table\n{report.MARK_END}"
    assert report.replace_marked_block(before + old + after, new) == before + new + after


def test_block_is_appended_when_absent_and_replaced_on_the_next_run():
    text = "# Results\n\nsomething measured\n"
    block = f"{report.MARK_START}\nfirst\n{report.MARK_END}"
    once = report.replace_marked_block(text, block)
    assert once.startswith(text) and once.endswith(block + "\n")
    second = f"{report.MARK_START}\nsecond\n{report.MARK_END}"
    twice = report.replace_marked_block(once, second)
    assert twice == once.replace(block, second)
    assert report.replace_marked_block("", block) == block + "\n"


def test_unbalanced_markers_are_refused():
    with pytest.raises(ValueError, match="unbalanced"):
        report.replace_marked_block(f"x\n{report.MARK_START}\ny\n", "block")


# --------------------------------------------------------------------------- targets


def _results(gradnas, fastnas, dense=20.0, times=(5.0, 200.0), scoring=(0.8, 1000, 2000)):
    """A results dict with gradnas/fastnas perplexities per budget, as the script writes it."""
    runs = []
    for method, perplexities in (("gradnas", gradnas), ("fastnas", fastnas)):
        for budget, ppl in perplexities.items():
            runs.append(
                {
                    "method": method,
                    "budget": budget,
                    "perplexity": ppl,
                    "ratio_to_dense": ppl / dense,
                    "params": budget,
                    "fraction": budget / 100,
                    "search_s": 1.0,
                }
            )
    ratio, gradnas_kb, plain_kb = scoring
    return {
        "dense": {"perplexity": dense, "params": 100},
        "runs": runs,
        "methods": {
            "gradnas": {"status": "run", "search_s": times[0], "search_budget": 90},
            "fastnas": {"status": "run", "search_s": times[1], "search_budget": 90},
        },
        "scoring": {
            "time_ratio": ratio,
            "memory_ratio": gradnas_kb / plain_kb,
            "gradnas": {"peak_above_load_kb": gradnas_kb},
            "plain": {"peak_above_load_kb": plain_kb},
        },
    }


def _verdicts(results):
    return [target.met for target in report.check_targets(results)]


def test_every_target_met():
    results = _results({90: 22.0, 80: 29.0, 70: 40.0}, {90: 50.0, 80: 70.0, 70: 90.0})
    assert _verdicts(results) == [True, True, True, True]


def test_each_target_can_fail_on_its_own():
    fastnas = {90: 50.0, 80: 70.0, 70: 90.0}
    # 80%: 31 > 1.5 x 20
    assert _verdicts(_results({90: 22.0, 80: 31.0, 70: 40.0}, fastnas))[0] is False
    # 70%: 46 > 0.5 x 90, although the other budgets pass
    assert _verdicts(_results({90: 22.0, 80: 29.0, 70: 46.0}, fastnas))[1] is False
    # 190 s / 10 s = 19x < 20x
    slow = _results({80: 29.0}, {80: 70.0}, times=(10.0, 190.0))
    assert _verdicts(slow)[2] is False
    # time ratio over 1.0, then memory higher than the plain backward
    assert _verdicts(_results({80: 29.0}, {80: 70.0}, scoring=(1.2, 1000, 2000)))[3] is False
    assert _verdicts(_results({80: 29.0}, {80: 70.0}, scoring=(0.8, 2001, 2000)))[3] is False


def test_boundaries_count_as_met():
    results = _results({80: 30.0}, {80: 60.0}, times=(10.0, 200.0), scoring=(1.0, 2000, 2000))
    assert _verdicts(results) == [True, True, True, True]


def test_targets_not_measured_say_so():
    results = _results({90: 22.0}, {}, scoring=(0.8, 1, 1))
    del results["methods"]["fastnas"]
    results["scoring"] = None
    targets = report.check_targets(results)
    assert [t.met for t in targets] == [None, None, None, None]
    assert all("not measured" in t.measured for t in targets)


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


@pytest.fixture
def one_thread():
    """Tiny ops on 2 threads crawl when another process holds a core; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
        batches(2), batches(1), batches(1), source="random tokens", validation=batches(1)
    )
    settings = replace(
        compare.parse_settings(["--quick", "--no-progress", "--out-md", str(tmp_path / "r.md")]),
        budgets=(90, 80),
        methods=methods,
        divisor=16,
    )
    dense = {"perplexity": 64.0, "params": sum(p.numel() for p in model.parameters())}
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
        assert methods["torch-pruning"]["status"] == "not installed, not run"
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


def test_the_variant_target_reads_the_selected_gradnas_run():
    def run(reconstruct, ratio, validation):
        return {
            "method": "gradnas",
            "budget": 80,
            "allocation": "global",
            "normalize": "none",
            "reconstruct": reconstruct,
            "perplexity": 20.0 * ratio,
            "ratio_to_dense": ratio,
            "validation_perplexity": validation,
            "fraction": 0.8,
            "reconstruct_s": 1.0,
        }

    results = _results({80: 29.0}, {80: 70.0})
    results["variants"] = {
        "grid_budget": 80,
        "runs": [run("none", 1.5, 9.0), run("lsq", 1.25, 8.0)],
        "selected": {
            "gradnas": {"allocation": "global", "normalize": "none", "reconstruct": "lsq"}
        },
    }
    target = report.check_variant_target(results)
    assert target.met is True and "1.25x" in target.measured
    results["variants"]["runs"][1]["ratio_to_dense"] = 1.31
    assert report.check_variant_target(results).met is False
    del results["variants"]
    assert report.check_variant_target(results).met is None


def test_held_back_score_is_minus_the_mean_loss(one_thread):
    model = _tiny_llama()
    batches = [
        torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(s)) for s in (1, 2)
    ]
    with torch.no_grad():
        expected = -(next_token_loss(model, batches[0]) + next_token_loss(model, batches[1])) / 2
    assert compare.held_back_score(batches)(model) == pytest.approx(expected.item())

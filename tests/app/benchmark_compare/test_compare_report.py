"""The pure report parts of ``benchmarks/smollm2_compare.py``, without SmolLM2: the markdown
block it maintains in a results file and the verdicts on its targets."""

from __future__ import annotations

import pytest
from compare_script import report

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

"""The protocol paragraph of the report: how the batches, the search space and each method
were set up, in words, from the results dict."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .settings import TORCH_PRUNING


def protocol_section(results: Mapping[str, Any]) -> list[str]:
    protocol, space = results["protocol"], results.get("space") or {}
    texts = protocol.get("texts") or {}
    report_tokens = protocol.get("report_tokens") or {}
    validation_tokens = protocol.get("validation_tokens") or {}
    defaults = protocol.get("job_defaults") or {}
    job = ", ".join(f"{key}={value}" for key, value in defaults.items())
    lines = [
        "Protocol:",
        "",
        f"- Model: {protocol['model']}; {results['dense']['params']:,} parameters (tied "
        "embeddings counted once).",
        f"- Calibration: `nasframe.app.text.stdlib_corpus()`: {protocol['text']}. "
        f"{protocol['calibration_batches']} batches of {protocol['batch_size']} x "
        f"{protocol['seq_len']} tokens ({protocol['calibration_tokens']:,} predicted tokens), "
        "the same for every method (gradnas's scoring, every reconstruction, FLAP's "
        "statistics, Torch-Pruning's gradients).",
        "- Report texts, each in batches of "
        f"{protocol['batch_size']} x {protocol.get('report_seq_len')} tokens: "
        + "; ".join(
            f"`{name}` ({texts.get(name.split('@')[0], {}).get('source', '?')}; {count:,} tokens)"
            for name, count in report_tokens.items()
        )
        + f"; and `{protocol.get('legacy', 'docstrings@128')}`, {protocol['eval_batches']} "
        f"batches of {protocol['batch_size']} x {protocol['seq_len']} tokens of the docstrings "
        f"({protocol['eval_tokens']:,} tokens): the figure earlier runs reported and the "
        "targets of issues 5 and 6 were set on. Every row is measured by the same function "
        "(`nasframe.app.lm.perplexity`) on the same batches.",
        "- Validation texts (they choose variants and are never reported as the result): "
        + "; ".join(
            f"`{name}` ({texts.get(name.split('@')[0], {}).get('source', '?')}; {count:,} tokens)"
            for name, count in validation_tokens.items()
        )
        + ".",
        f"- Search space (nasframe rows): rules `{json.dumps(protocol['rules'])}`"
        + (f"; {_space_text(space)}" if space else "")
        + ".",
        f"- nasframe rows use the main job's defaults, read at run time ({job}): the budget "
        "is searched lower by `nasframe.bias_reserve` and the result repaired on the "
        "calibration batches, as `nasframe search` does. gradnas: `Sum((d loss / d mask)^2)` "
        "per unit over the calibration batches. gradnas --uniform: the same with "
        "`uniform=True` (the same size in every layer) and the repair the job uses for "
        "--uniform (biases only where the plain Llama config can hold them).",
        f"- fastnas: units ranked by the L1 norm of their weights; `score_func` is minus the "
        f"mean next-token loss on {protocol['held_back_batches']} held-back batch(es) of "
        f"{protocol['held_back_batch_size']} x {protocol['seq_len']} tokens "
        f"({protocol['held_back_tokens']:,} tokens) cut from the calibration text right after "
        "the calibration batches (small, so that its one evaluation per allowed size of every "
        f"hparam fits the run).{_token_budget(protocol, space)}",
        f"- random: the same search with seeded random unit scores (seed "
        f"{protocol['random_seed']}; each hparam's scores sum to 1).",
        "- FLAP-style (written from An et al., AAAI 2024): fluctuation `Var(x_j) * "
        "||W[:, j]||^2` of every input channel of each o_proj and down_proj over the "
        "calibration tokens; standardised within each layer and kind; one global threshold "
        "over GQA groups (their query heads' channels, with their K/V head) and FFN channels "
        "until the budget is met, compensation biases included; bias `W[:, removed] @ "
        "mean(x_removed)` on every pruned projection. Widths are not rounded.",
        f"- Torch-Pruning: {_torch_pruning_text(results)}.",
        "- gradnas, gradnas --uniform and fastnas search at the first budget with a "
        "checkpoint and resume it at the others on a fresh copy of the model (importance and "
        "sensitivity do not depend on the budget); the search time reported for them is the "
        "first, fresh search's"
        + _kept_checkpoints(results)
        + ". fastnas ran in a second process beside the others, both with one torch thread.",
        "- Variants (allocation x normalisation x reconstruction) resume the same "
        "checkpoints and are chosen on the validation texts only.",
        "- No finetuning after pruning.",
    ]
    return lines


def _kept_checkpoints(results: Mapping[str, Any]) -> str:
    """Which methods resumed a checkpoint kept from an earlier run (``--checkpoint-dir``)."""
    kept = [m for m, info in results["methods"].items() if info.get("search_from_checkpoint")]
    if not kept:
        return ""
    return (
        f", except {', '.join(kept)}'s: a checkpoint kept from an earlier run of this script "
        "on the same model, batches and search space (`--checkpoint-dir`) was resumed at "
        "every budget, and the time reported is the importance and sensitivity time that "
        "run recorded in it plus this run's allocation"
    )


def _token_budget(protocol: Mapping[str, Any], space: Mapping[str, Any]) -> str:
    """What each search reads: the speedup of gradnas over fastnas follows from it."""
    if not space:
        return ""
    evaluations = space["fastnas_evaluations"]
    return (
        f" Its search runs {evaluations:,} forwards x {protocol['held_back_tokens']:,} tokens "
        f"= {evaluations * protocol['held_back_tokens']:,} tokens; gradnas's runs "
        f"{protocol['calibration_tokens']:,} tokens forward and backward once."
    )


def _space_text(space: Mapping[str, Any]) -> str:
    groups = ", ".join(
        f"{pattern} ({info['count']}x, {info['sizes']} sizes of {info['max']})"
        for pattern, info in space["groups"].items()
    )
    return (
        f"{space['hparams']} hparams: {groups}; fastnas evaluates `score_func` "
        f"{space['fastnas_evaluations']:,} times"
    )


def _torch_pruning_text(results: Mapping[str, Any]) -> str:
    info = results["methods"].get(TORCH_PRUNING)
    if info is None:
        return "not requested"
    if info["status"] != "run":
        return info["status"]
    return (
        "its MetaPruner with GroupTaylorImportance (`|w * g|`, g the summed per-sequence "
        "gradients) and GroupHessianImportance (`w^2 * E[g^2]` over the sequences), global "
        "ranking, `round_to` the divisor, pruning ratio bisected to the largest model within "
        "the budget (the search time includes the gradients and the bisection). "
        + info.get("note", "")
    )

"""The protocol paragraph of the report: how the batches, the search space and each method
were set up, in words, from the results dict."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .settings import TORCH_PRUNING


def protocol_section(results: Mapping[str, Any]) -> list[str]:
    protocol, space = results["protocol"], results.get("space") or {}
    lines = [
        "Protocol:",
        "",
        f"- Model: {protocol['model']}; {results['dense']['params']:,} parameters (tied "
        "embeddings counted once).",
        f"- Text: `nasframe.app.text.stdlib_corpus()`: {protocol['text']}.",
        f"- Batches of {protocol['batch_size']} x {protocol['seq_len']} tokens: "
        f"{protocol['calibration_batches']} calibration batches "
        f"({protocol['calibration_tokens']:,} predicted tokens), the same for every method; "
        "perplexity on "
        f"{protocol['eval_batches']} evaluation batches ({protocol['eval_tokens']:,} tokens).",
        f"- Search space: rules `{json.dumps(protocol['rules'])}`"
        + (f"; {_space_text(space)}" if space else "")
        + ".",
        "- gradnas: `Sum((d loss / d mask)^2)` per unit over the calibration batches; the "
        "sensitivity of a size is the score mass of the units it prunes.",
        f"- fastnas: units ranked by the L1 norm of their weights; `score_func` is minus the "
        f"mean next-token loss on {protocol['held_back_batches']} held-back batch(es) of "
        f"{protocol['held_back_batch_size']} x {protocol['seq_len']} tokens "
        f"({protocol['held_back_tokens']:,} tokens) cut from the calibration text right after "
        "the calibration batches — small so that its one evaluation per allowed size of every "
        "hparam fits the run in about an hour; a larger held-back set may rank its choices "
        f"better.{_token_budget(protocol, space)}",
        f"- Validation: {protocol.get('validation_batches', 0)} batches of "
        f"{protocol['batch_size']} x {protocol['seq_len']} tokens "
        f"({protocol.get('validation_tokens', 0):,} tokens) cut from the calibration text "
        "after the held-back batch, used by neither scoring nor fastnas; the only figure that "
        "chooses a variant. The methods table uses the seed's threshold allocation without "
        "reconstruction; the variants resume the same checkpoints, and a variant that "
        "reconstructs searches its budget lower by `nasframe.bias_reserve` (the parameters "
        "of the biases reconstruction may add), as `nasframe search` does.",
        f"- random: the same threshold search, with seeded random unit scores (seed "
        f"{protocol['random_seed']}; each hparam's scores sum to 1, so the sensitivity of a "
        "size is the random fraction of the hparam it prunes).",
        f"- Torch-Pruning: {_torch_pruning_text(results)}.",
        "- gradnas and fastnas search at the first budget with a checkpoint and resume it at the "
        "others on a fresh copy of the model (importance and sensitivity do not depend on the "
        "budget); the search time reported for them is the first, fresh search's"
        + _kept_checkpoints(results)
        + ".",
        "- No finetuning after pruning. These perplexities are on standard-library docstrings "
        f"at {protocol['seq_len']} tokens: not comparable with figures on other text.",
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
        "group Taylor importance (|w * dL/dw| summed over the calibration batches), global "
        "ranking of hidden and FFN channels (heads and head dims kept), pruning ratio bisected "
        "to the largest model within the budget; the search time includes the bisection"
    )

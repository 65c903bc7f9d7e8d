"""How the search time after scoring grows with the number of hparams: TinyLlama-1.1B-wide
Llamas (hidden 2048, FFN 5632, 32 heads, 4 KV heads: every width allowed) of 10 to 99 layers,
built on the meta device, so no weight is allocated and only the model-independent work is
timed: the cost model, gradnas's sensitivities (from random unit scores) and both
allocations. Sorting the weights, the one step that touches them, is timed by
``benchmarks/tinyllama_phases.py`` on real weights. Usage:

    OMP_NUM_THREADS=1 python benchmarks/allocation/scaling.py [--layers 10,33,66,99]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from gradnas import GradientBinarySearcher

import nasframe
from nasframe.cost.budget import Constraint
from nasframe.cost.cost_model import CostModel
from nasframe.searchers.allocator import Allocator
from nasframe.searchers.config import BinarySearchConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared shapes
from model_shapes import TINYLLAMA  # noqa: E402


def meta_llama(layers: int) -> torch.nn.Module:
    import transformers

    config = transformers.LlamaConfig(**{**TINYLLAMA, "num_hidden_layers": layers})
    with torch.device("meta"):
        return transformers.LlamaForCausalLM(config).eval()


def measure(layers: int, constraint: str) -> dict[str, float]:
    space = nasframe.convert(meta_llama(layers))
    start = time.perf_counter()
    cost_model = CostModel(space)
    limit = cost_model.resolve(Constraint.from_mapping(constraint))
    cost_s = time.perf_counter() - start
    generator = torch.Generator().manual_seed(0)
    searcher = GradientBinarySearcher()
    searcher.space = space
    for hparam in space.hparams.values():
        scores = torch.rand(hparam.max, generator=generator)
        # As after sort_parameters: the units that can be reordered are, most important first.
        hparam.importance = scores.sort(descending=True).values if hparam.permutable else scores
    start = time.perf_counter()
    sensitivity = {name: searcher.compute_sensitivity(name) for name in space.hparams}
    sensitivity_s = time.perf_counter() - start
    figures = {
        "hparams": len(space.hparams),
        "choices": sum(len(hp.choices) for hp in space.hparams.values()),
        "cost_model_s": cost_s,
        "sensitivity_s": sensitivity_s,
    }
    for allocation in ("threshold", "global"):
        settings = BinarySearchConfig.from_mapping({"allocation": allocation}, "binary")
        start = time.perf_counter()
        Allocator(space, cost_model, settings, "gradnas").allocate(sensitivity, "params", limit)
        figures[f"{allocation}_s"] = time.perf_counter() - start
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layers", default="10,33,66,99")
    parser.add_argument("--constraint", default="params=80%")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.constraint}")
    print(
        f"{'layers':>6} {'hparams':>7} {'sizes':>8} {'cost model s':>12} {'sensitivity s':>13} "
        f"{'threshold s':>11} {'global s':>8}"
    )
    for layers in (int(n) for n in args.layers.split(",")):
        f = measure(layers, args.constraint)
        print(
            f"{layers:>6} {f['hparams']:>7} {f['choices']:>8} {f['cost_model_s']:>12.2f} "
            f"{f['sensitivity_s']:>13.2f} {f['threshold_s']:>11.2f} {f['global_s']:>8.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()

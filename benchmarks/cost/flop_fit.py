"""How long the FLOP model's fit takes on a real-shaped Llama, and whether it is exact.

A SmolLM2-135M-shaped Llama with random weights (30 layers, hidden 576, FFN 1536, 9 heads,
3 KV heads, vocab 49152) is converted with the main job's rules (widths in multiples of 8,
depth and heads by one) and fitted on the job's dummy input (one sequence of 127 tokens):
the fit's wall time, how many forwards it measured, whether it is exact (else every
prediction measures), and ``--verify`` random configs predicted against measured.
``--reference FILE`` times another ``flop_model.py`` (an older version, from ``git show``) in
the same way, each in a fresh process:

    git show HEAD:nasframe/cost/flop_model.py > /tmp/flop_model_before.py
    OMP_NUM_THREADS=1 python benchmarks/cost/flop_fit.py --reference /tmp/flop_model_before.py
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared shapes
from model_shapes import SMOLLM2  # noqa: E402


def _implementation(path: str | None) -> ModuleType:
    if path is None:
        import nasframe.cost.flop_model as current

        return current
    spec = importlib.util.spec_from_file_location("reference_flop_model", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def child(args: argparse.Namespace) -> None:
    import transformers

    import nasframe
    from nasframe.app.job_settings import job_rules

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(max_position_embeddings=2048, **SMOLLM2)
    space = nasframe.convert(transformers.LlamaForCausalLM(config).eval(), job_rules(8))
    dummy = torch.randint(0, 49152, (1, 127), generator=torch.Generator().manual_seed(0))
    flop_model = _implementation(args.path)
    measure, forwards = flop_model.measure_flops, [0]

    def counted(*a, **k):
        forwards[0] += 1
        return measure(*a, **k)

    flop_model.measure_flops = counted
    start = time.perf_counter()
    fitted = flop_model.FlopModel(space, dummy)
    seconds = time.perf_counter() - start
    flop_model.measure_flops = measure
    rng = random.Random(5)
    agree = []
    for _ in range(args.verify):
        sizes = {name: rng.choice(hp.choices) for name, hp in space.hparams.items()}
        agree.append(fitted.predict(sizes) == measure(space, sizes, dummy)[0])
    print(json.dumps({"seconds": seconds, "forwards": forwards[0], "exact": fitted.exact,
                      "predictions_equal_counts": agree}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reference", help="another flop_model.py to time the same way")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--verify", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    for label, path in (("reference", args.reference), ("current", None)):
        if label == "reference" and path is None:
            continue
        command = [sys.executable, __file__, "--child", f"--threads={args.threads}"]
        command += [f"--verify={args.verify}", *([f"--path={path}"] if path else [])]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        figures = json.loads(out.strip().splitlines()[-1])
        print(
            f"{label:<9} fit {figures['seconds']:6.1f} s, {figures['forwards']} forwards, "
            f"exact={figures['exact']}, predictions equal counts: "
            f"{figures['predictions_equal_counts']}"
        )


if __name__ == "__main__":
    main()

"""gradnas scoring's peak memory against a plain training step's, on the CPU, and where it goes.

A Llama of a real shape with random weights (``smollm2``: SmolLM2-135M's; ``tinyllama``:
TinyLlama-1.1B's) runs, in a fresh process per measurement, either

- ``plain``: a training step without the optimizer: ``next_token_loss`` forward + backward
  with every weight's gradient (``model.zero_grad(set_to_none=True)`` first), or
- ``frozen``: the same with every weight frozen and one mask on the embedding output, no
  other hook: what backward stores for the loss alone, without weight gradients, or
- ``gradnas``: gradnas's scoring of the same batches, by the code path
  ``GradientBinarySearcher`` runs (``compute_importance``: masks attached, weights frozen,
  gated activations rebuilt in backward: ``gradnas.rebuild``), or
- ``kept``: the same scoring with every gate keeping what it multiplies
  (``gradnas.rebuild.keeping_activations``, what plain ``x * m`` hooks keep).

Each child builds the model and the batches (gradnas's also converts the model and prepares
its searcher), runs the work once to warm up, then resets the kernel's peak-RSS mark
(``/proc/self/clear_refs``), reads the RSS and runs the work again; its figure is the peak
(``VmHWM``) minus that RSS: the memory the work needs above the weights. The figure of each
kind is the median over ``--repeats`` children, with the wall time of the measured run. A
``--breakdown`` child also counts, through ``torch.autograd.graph.saved_tensors_hooks``, the
bytes autograd saves for backward (unique storages that are not parameters) and the bytes of
the weights' gradients: where it goes. ``--mmap-threshold BYTES`` runs the children with
glibc's ``MALLOC_MMAP_THRESHOLD_`` fixed there, so every block above it is its own mapping,
returned when freed: the RSS then follows the live tensors, without the freed heap blocks
glibc keeps resident (what the default allocator adds to each figure).

    OMP_NUM_THREADS=1 python benchmarks/scoring_memory.py --threads 1 [--shape smollm2|tinyllama]
        [--batches 2] [--batch-size 8] [--seq-len 128] [--repeats 3] [--kinds plain,gradnas]
        [--mmap-threshold 1048576] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from model_shapes import SHAPES
from torch import nn

MIB = 2**20


def _status_kb(key: str) -> int:
    status = Path("/proc/self/status").read_text()
    match = re.search(rf"^{key}:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None, key
    return int(match.group(1))


def _trim() -> None:
    """glibc keeps freed memory in its arenas; ``malloc_trim`` returns it to the kernel."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def build(shape: str) -> nn.Module:
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(max_position_embeddings=2048, **SHAPES[shape])
    return transformers.LlamaForCausalLM(config).eval()


def batches_for(args: argparse.Namespace, vocab: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [
        torch.randint(0, vocab, (args.batch_size, args.seq_len), generator=generator)
        for _ in range(args.batches)
    ]


def plain_work(model: nn.Module, batches: list[torch.Tensor]) -> Callable[[], None]:
    """A training step's memory: forward + backward with every weight's gradient."""
    from nasframe.app.lm import next_token_loss

    for param in model.parameters():
        param.requires_grad_(True)

    def work() -> None:
        for batch in batches:
            model.zero_grad(set_to_none=True)
            next_token_loss(model, batch).backward()

    return work


def frozen_work(model: nn.Module, batches: list[torch.Tensor]) -> Callable[[], None]:
    """The floor under any mask scoring: weights frozen, one mask on the embedding output
    (so backward still runs through every layer), no other hook: what backward must store
    for the loss alone, without weight gradients."""
    from nasframe.app.lm import next_token_loss

    for param in model.parameters():
        param.requires_grad_(False)
    mask = torch.ones(model.config.hidden_size, requires_grad=True)
    model.get_input_embeddings().register_forward_hook(lambda _, __, out: out * mask)

    def work() -> None:
        for batch in batches:
            next_token_loss(model, batch).backward()
            mask.grad = None

    return work


def gradnas_work(model: nn.Module, batches: list[torch.Tensor]) -> Callable[[], None]:
    """gradnas's scoring exactly as its search runs it (``compute_importance``)."""
    from gradnas.searcher import GradientBinarySearcher

    import nasframe
    from nasframe.app.lm import next_token_loss

    searcher = GradientBinarySearcher()
    searcher.space = nasframe.convert(model)
    searcher.configure(
        {
            "data_loader": batches,
            "loss_func": next_token_loss,
            "max_iter_data_loader": len(batches),
            "verbose": False,
        }
    )
    names = searcher.hparam_names_for_search()
    return lambda: searcher.compute_importance(names)


def kept_work(model: nn.Module, batches: list[torch.Tensor]) -> Callable[[], None]:
    """gradnas's scoring with every gate keeping what it multiplies (no rebuilding)."""
    from gradnas.rebuild import keeping_activations

    score = gradnas_work(model, batches)

    def work() -> None:
        with keeping_activations():
            score()

    return work


WORKS = {"plain": plain_work, "frozen": frozen_work, "gradnas": gradnas_work, "kept": kept_work}


def breakdown(
    model: nn.Module, work: Callable[[], None], batches: list[torch.Tensor]
) -> dict[str, int]:
    """Bytes autograd saves for one batch's backward (unique storages that are not
    parameters) and the bytes of the weights' gradients after it. The work runs on the first
    batch only (``batches`` is the list the work reads, cut in place and restored)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    for p in model.parameters():
        p.grad = None
    everything = list(batches)
    del batches[1:]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            work()
    finally:
        batches[:] = everything
    grads = sum(p.grad.nbytes for p in model.parameters() if p.grad is not None)
    return {"saved_bytes": sum(saved.values()), "weight_grad_bytes": grads}


def child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    model = build(args.shape)
    batches = batches_for(args, model.config.vocab_size)
    work = WORKS[args.child](model, batches)
    work()  # warm up: the allocator's and the searcher's first-call state
    if args.child == "plain":
        model.zero_grad(set_to_none=True)
    figures: dict[str, Any] = {"kind": args.child}
    if args.breakdown:
        figures.update(breakdown(model, work, batches))
        if args.child == "plain":
            model.zero_grad(set_to_none=True)
    gc.collect()
    _trim()  # hand the warm-up's freed memory back, so the base RSS is the weights' own
    Path("/proc/self/clear_refs").write_text("5")
    base = _status_kb("VmRSS")
    start = time.perf_counter()
    work()
    figures["seconds"] = time.perf_counter() - start
    figures["peak_above_kb"] = _status_kb("VmHWM") - base
    figures["weights_bytes"] = sum(p.nbytes for p in model.parameters())
    print(json.dumps(figures))


def run_child(args: argparse.Namespace, kind: str, breakdown_flag: bool) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", kind, *_shared_flags(args)]
    if breakdown_flag:
        command.append("--breakdown")
    env = dict(os.environ)
    if args.mmap_threshold is not None:
        env["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def _shared_flags(args: argparse.Namespace) -> list[str]:
    return [
        f"--shape={args.shape}",
        f"--batches={args.batches}",
        f"--batch-size={args.batch_size}",
        f"--seq-len={args.seq_len}",
        f"--threads={args.threads}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", default="smollm2", choices=sorted(SHAPES))
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--kinds", default=",".join(WORKS), help="comma-separated kinds (plain is always run)"
    )
    parser.add_argument(
        "--mmap-threshold", type=int, help="glibc MALLOC_MMAP_THRESHOLD_ for the children"
    )
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--child", choices=sorted(WORKS), help=argparse.SUPPRESS)
    parser.add_argument("--breakdown", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    figures: dict[str, Any] = {"shape": args.shape, **vars(args)}
    kinds = ["plain", *(k for k in args.kinds.split(",") if k and k != "plain")]
    for kind in kinds:
        runs = [run_child(args, kind, breakdown_flag=i == 0) for i in range(args.repeats)]
        peaks = [run["peak_above_kb"] * 1024 for run in runs]
        figures[kind] = {
            "peaks_bytes": peaks,
            "median_bytes": statistics.median(peaks),
            "median_seconds": statistics.median(run["seconds"] for run in runs),
            "saved_bytes": runs[0]["saved_bytes"],
            "weight_grad_bytes": runs[0]["weight_grad_bytes"],
            "weights_bytes": runs[0]["weights_bytes"],
        }
    plain = figures["plain"]["median_bytes"]
    ratios = {kind: figures[kind]["median_bytes"] / plain for kind in kinds}
    figures["ratios"] = ratios
    print(
        f"{args.shape}: fp32 weights {figures['plain']['weights_bytes'] / MIB:,.0f} MiB; "
        f"{args.batches} batches of {args.batch_size} x {args.seq_len} tokens"
        + ("" if args.mmap_threshold is None else f"; mmap threshold {args.mmap_threshold}")
    )
    for kind in kinds:
        entry = figures[kind]
        print(
            f"{kind:<8} peak above weights {entry['median_bytes'] / MIB:8,.0f} MiB (median of "
            + ", ".join(f"{p / MIB:,.0f}" for p in entry["peaks_bytes"])
            + f"); saved for backward {entry['saved_bytes'] / MIB:,.0f} MiB, weight grads "
            f"{entry['weight_grad_bytes'] / MIB:,.0f} MiB; {entry['median_seconds']:.1f} s; "
            f"{ratios[kind]:.2f}x plain"
        )
    print("target (issue 15): gradnas <= 1.0x plain, aim 0.8x")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()

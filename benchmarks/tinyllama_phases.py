"""A TinyLlama-1.1B-shaped Llama with random weights through every step of a search, on the
CPU: the time and peak RSS of each phase, against the fp32 weights.

Phases: build (random init), convert, score (gradnas: 2 batches of short sequences), search
(everything of ``nasframe.search`` but the scoring: cost model, sorting, sensitivities,
allocation), reconstruct (``lsq``, as the main job) and export (in place, as the main job;
``--copy`` exports a copy and keeps the space). RSS is sampled every 10 ms in a thread and
attributed to the phase running; the whole run's peak is also read from ``getrusage``.
The target of issue 15: peak RSS at most 2.0x the fp32 weights. Usage (about 4.5 GB of
weights; run one at a time):

    OMP_NUM_THREADS=2 python benchmarks/tinyllama_phases.py [--allocation global] [--copy]
        [--max-stats-gib G] [--layers 22] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from gradnas import GradientBinarySearcher
from model_shapes import TINYLLAMA

import nasframe
from nasframe.app.lm import next_token_loss

PAGE = 4096


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


class PhaseSampler:
    """Peak RSS and wall time per phase label, sampled in a background thread."""

    def __init__(self, interval_s: float = 0.01) -> None:
        self.interval_s = interval_s
        self.label = "start"
        self.started = time.perf_counter()
        self.peaks: dict[str, int] = {}
        self.seconds: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        self.peaks[self.label] = max(self.peaks.get(self.label, 0), rss_bytes())

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def mark(self, label: str) -> None:
        """Close the running phase and open ``label`` (phases may recur; they add up)."""
        self._sample()
        now = time.perf_counter()
        self.seconds[self.label] = self.seconds.get(self.label, 0.0) + now - self.started
        self.label, self.started = label, now
        self._sample()

    def stop(self) -> None:
        self.mark("end")
        self._stop.set()
        self._thread.join()


class MarkedSearcher(GradientBinarySearcher):
    """gradnas, with its scoring marked as the phase ``score`` (the rest is ``search``)."""

    sampler: PhaseSampler

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if name == "importance":
            self.sampler.mark("score")
        try:
            with super().phase(name):
                yield
        finally:
            if name == "importance":
                self.sampler.mark("search")


def build(layers: int, vocab: int) -> torch.nn.Module:
    import transformers

    shape = {**TINYLLAMA, "vocab_size": vocab, "num_hidden_layers": layers}
    config = transformers.LlamaConfig(max_position_embeddings=2048, **shape)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layers", type=int, default=22)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--constraint", default="params=80%")
    parser.add_argument("--allocation", default="global", choices=("global", "threshold"))
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--reconstruct", default="lsq")
    parser.add_argument(
        "--max-stats-gib",
        type=float,
        default=None,
        help="reconstruction statistics bound (default: the library's, relative to the model)",
    )
    parser.add_argument("--copy", action="store_true", help="export a copy (inplace=False)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    baseline = rss_bytes()
    sampler = PhaseSampler()
    sampler.mark("build")
    model = build(args.layers, args.vocab)
    weights = sum(p.numel() for p in model.parameters()) * 4
    generator = torch.Generator().manual_seed(1)
    batches = [
        torch.randint(0, args.vocab, (1, args.seq_len), generator=generator)
        for _ in range(args.batches)
    ]
    sampler.mark("convert")
    space = nasframe.convert(model)
    sampler.mark("search")
    searcher = MarkedSearcher()
    searcher.sampler = sampler
    search_config = {
        "data_loader": batches,
        "loss_func": next_token_loss,
        "max_iter_data_loader": args.batches,
        "allocation": args.allocation,
        "verbose": False,
    }
    result = searcher.search(space, args.constraint, config=search_config)
    space.select(result.config)
    sampler.mark("reconstruct")
    report = nasframe.reconstruct(
        space,
        batches,
        next_token_loss,
        args.reconstruct,
        max_stats_bytes=None if args.max_stats_gib is None else int(args.max_stats_gib * 2**30),
    )
    sampler.mark("export")
    exported = nasframe.export(space, inplace=not args.copy)
    sampler.stop()
    exported_params = sum(p.numel() for p in exported.parameters())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    phases = ["build", "convert", "score", "search", "reconstruct", "export"]
    figures: dict[str, Any] = {
        "machine": f"{platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "hparams": len(space.hparams),
        "fp32_weights_bytes": weights,
        "baseline_rss_bytes": baseline,
        "peak_rss_bytes": peak,
        "peak_over_weights": peak / weights,
        "target_met": peak <= 2.0 * weights,
        "search_timings": result.timings,
        "kept_params": exported_params,
        "reconstructed_maps": len(report.reconstructed),
        "phases": {
            p: {"seconds": sampler.seconds.get(p, 0.0), "peak_rss_bytes": sampler.peaks.get(p, 0)}
            for p in phases
        },
    }
    gib = 2**30
    print(
        f"{figures['machine']}; {figures['hparams']} hparams; fp32 weights {weights / gib:.2f} GiB"
    )
    print(f"{'phase':<12} {'seconds':>8} {'peak RSS GiB':>13} {'x weights':>10}")
    for name in phases:
        entry = figures["phases"][name]
        print(
            f"{name:<12} {entry['seconds']:8.1f} {entry['peak_rss_bytes'] / gib:13.2f} "
            f"{entry['peak_rss_bytes'] / weights:10.2f}"
        )
    print(
        f"whole run: peak RSS {peak / gib:.2f} GiB = {peak / weights:.2f}x the fp32 weights "
        f"(target 2.0x: {'met' if figures['target_met'] else 'not met'}); search timings "
        + ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items())
        + f"; kept {exported_params:,} params"
    )
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=1)


if __name__ == "__main__":
    main()

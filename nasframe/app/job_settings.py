"""What ``nasframe search`` can be told, its defaults, and the checks made before any work.

:class:`JobSettings` is the job's input (the CLI's flags, one field each); sizes the user
leaves unset come from the model (``ModelEntry.job_defaults``), then :data:`FALLBACK_SIZES`.
:func:`check_job_settings` refuses a bad or unsupported option before the model is loaded:
a typo must not cost a model load.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from nasframe.app.calibration.sources import CALIBRATION_SOURCES
from nasframe.errors import UserInputError
from nasframe.reconstruction.reconstruct import RECONSTRUCT_MODES
from nasframe.searchers.allocator import check_allocation_settings
from nasframe.searchers.config import SearchConfig
from nasframe.space.hparam import ChoiceRule


@dataclass
class JobSettings:
    """Everything ``nasframe search`` can be told; the defaults are the built-in main job."""

    algorithm: str = "gradnas"
    constraint: str = "params=80%"
    model: str = "smollm2-135m"
    data: str | None = None
    out: str = "nasframe-out"
    checkpoint: str | None = None  # None: a file in OUT named after the job's inputs
    use_checkpoint: bool = True
    # Sizes: None takes the model's own job defaults (ModelEntry.job_defaults), then these.
    divisor: int | None = None
    seq_len: int | None = None
    batch_size: int | None = None
    calibration_batches: int | None = None
    score_batches: int | None = None
    eval_batches: int | None = None
    verbose: bool = True
    uniform: bool = False  # the same size in every layer, so plain transformers loads it
    trust_remote_code: bool = False  # let a model directory run its own Python code
    # How sensitivities become sizes (see nasframe.searchers.allocator); None:
    # JOB_SEARCH_DEFAULTS.
    allocation: str | None = None
    normalize: str | None = None
    min_keep: float | None = None
    # Repair of the kept weights after pruning (see nasframe.reconstruct); the default is the
    # mode the SmolLM2 benchmark measured best (docs/results.md).
    reconstruct: str = "lsq"
    # What the model is scored and repaired on: the text, rows the dense model generates
    # itself, or half of each (see nasframe.app.calibration.sources).
    calibration: str = "text"
    # A named set of sizes (PRESETS): "thorough" calibrates on more text, for a better
    # result in more time; flags still beat it.
    preset: str = "default"
    # The least-squares damping, relative to the inputs' variance: 0.1 had the lowest
    # validation perplexity of 0.01, 0.1 and 1 (docs/results.md, "Calibration and repair that
    # generalise"); the library's reconstruct keeps 0.01.
    ridge: float = 0.1
    # Where the model runs (auto: CUDA when available) and the dtype of its weights (None:
    # the model's own: a directory's saved dtype, float32 for a GGUF file or a built-in model).
    device: str = "auto"
    dtype: str | None = None


#: ``--dtype`` names and the weight dtypes they mean. Masks, scores and reconstruction
#: statistics stay in float32/float64 whatever the weights' dtype.
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


#: The allocation settings of the main job where the algorithm accepts them: the combination
#: the SmolLM2 benchmark measured best (docs/results.md, "Allocation, normalisation and
#: reconstruction"), with the exact allocation, which finds the least total damage and gave
#: SmolLM2 the same config as the greedy global one ("Calibration and repair that
#: generalise"). A library search keeps the searcher's own defaults.
JOB_SEARCH_DEFAULTS: dict[str, Any] = {
    "allocation": "exact",
    "normalize": "none",
    "min_keep": 0.0,
}


# Sizes for a model that states none (a byte-level model: long sequences are cheap).
FALLBACK_SIZES = {
    "divisor": 8,
    "seq_len": 64,
    "batch_size": 16,
    "calibration_batches": 32,
    "score_batches": 4,
    "eval_batches": 32,
}


#: ``--preset`` names and what each multiplies of the model's default sizes. "thorough"
#: scores and repairs on four times the calibration text: on SmolLM2-135M at 80% params it
#: took the held-out docstrings from 1.38x to 1.24x dense and the license texts from 2.27x to
#: 2.07x, and the validation texts (which chose it) from 1.53 to 1.40 (geometric mean); the
#: main job took 9 min 48 s instead of 3 min 38 s on 2 idle cores (docs/results.md, "The main
#: job"). The default keeps the main job under 5 minutes.
PRESETS: dict[str, dict[str, int]] = {
    "default": {},
    "thorough": {"calibration_batches": 4},
}


def with_model_defaults(settings: JobSettings, job_defaults: Mapping[str, int]) -> JobSettings:
    """``settings`` with every size the user left unset filled from the model (scaled by the
    preset), then the fallback: flags beat the preset and the model's defaults, which beat
    nasframe's."""
    if settings.preset not in PRESETS:
        raise UserInputError(
            f"--preset must be one of {', '.join(PRESETS)}, got {settings.preset!r}."
        )
    factors = PRESETS[settings.preset]
    filled = {
        key: value
        if (value := getattr(settings, key)) is not None
        else job_defaults.get(key, fallback) * factors.get(key, 1)
        for key, fallback in FALLBACK_SIZES.items()
    }
    return replace(settings, **filled)


def job_rules(divisor: int) -> dict[str, ChoiceRule]:
    """Widths in multiples of ``divisor`` (hardware-friendly); counts of layers and heads by
    one, since a multiple of 8 or 32 would leave them nothing to choose."""
    return {
        "*.depth": ChoiceRule(),
        "*heads*": ChoiceRule(),
        "*": ChoiceRule(divisor=divisor),
    }


def check_job_settings(settings: JobSettings, config_type: type[SearchConfig]) -> None:
    """Fail before any work when an option is bad, or given to an algorithm whose search
    config (``config_type``) does not accept it, or when an output path cannot be created."""
    _check_search_options_supported(settings, config_type)
    resolve_device(settings.device)
    weights_dtype(settings.dtype)
    out = Path(settings.out)
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out} is a file; pass a directory path.")
    _check_parents(out, "--out")
    if settings.use_checkpoint and settings.checkpoint:
        _check_parents(Path(settings.checkpoint), "--checkpoint")


def _check_search_options_supported(settings: JobSettings, config_type: type[SearchConfig]) -> None:
    """Refuse an option the algorithm's config type lacks, and check the values themselves."""
    for key in JOB_SEARCH_DEFAULTS:
        if getattr(settings, key) is not None and not config_type.supports(key):
            flag = "--" + key.replace("_", "-")
            raise UserInputError(
                f"{flag} is not supported by --algo {settings.algorithm}; drop {flag} or "
                "choose an algorithm built on the binary search (gradnas, fastnas)."
            )
    filled = {
        key: default if getattr(settings, key) is None else getattr(settings, key)
        for key, default in JOB_SEARCH_DEFAULTS.items()
    }
    check_allocation_settings(**filled)
    if not (isinstance(settings.ridge, int | float) and math.isfinite(settings.ridge)) or (
        settings.ridge < 0
    ):
        raise UserInputError(f"--ridge must be a finite number >= 0, got {settings.ridge!r}.")
    if settings.calibration not in CALIBRATION_SOURCES:
        raise UserInputError(
            f"--calibration must be one of {', '.join(CALIBRATION_SOURCES)}, got "
            f"{settings.calibration!r}."
        )
    if settings.reconstruct not in RECONSTRUCT_MODES:
        raise UserInputError(
            f"--reconstruct must be one of {', '.join(RECONSTRUCT_MODES)}, got "
            f"{settings.reconstruct!r}."
        )
    if settings.uniform and not config_type.supports("uniform"):
        raise UserInputError(
            f"--uniform is not supported by --algo {settings.algorithm}; drop --uniform or "
            "choose an algorithm that supports it (see `nasframe algos`)."
        )


def resolve_device(spec: str) -> torch.device:
    """The device ``--device spec`` names, checked: ``auto`` is CUDA when available, else the
    CPU. Under torchrun, ``auto`` and ``cuda`` mean this rank's GPU (``LOCAL_RANK``).

    Raises UserInputError for CUDA on a machine without it, or a GPU index it lacks.
    """
    text = spec.strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return torch.device("cpu")
    kind, _, index = text.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise UserInputError(f"--device {spec} is not a device; pass {DEVICE_CHOICES}.")
    if not torch.cuda.is_available():
        raise UserInputError(
            f"--device {spec} asks for CUDA, but this machine has no usable CUDA GPU (torch "
            f"{torch.__version__}, CUDA build {torch.version.cuda or 'none'}); pass --device cpu "
            "or --device auto."
        )
    count = torch.cuda.device_count()
    number = int(index) if index else int(os.environ.get("LOCAL_RANK", "0"))
    if number >= count:
        raise UserInputError(
            f"--device {spec} asks for GPU {number}, but this machine has {count} (0 to "
            f"{count - 1}); pass --device cuda:0 .. cuda:{count - 1}."
        )
    return torch.device("cuda", number)


def weights_dtype(name: str | None) -> torch.dtype | None:
    """The dtype ``--dtype name`` names (None: keep the model's own)."""
    if name is None:
        return None
    if name not in DTYPES:
        raise UserInputError(f"--dtype {name} is not supported; pass one of {', '.join(DTYPES)}.")
    return DTYPES[name]


def _check_parents(path: Path, flag: str) -> None:
    """Fail before any work when ``path`` cannot be created because an ancestor is a file."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserInputError(
                    f"{flag} {path} is inside {parent}, which is a file; pass a path whose "
                    "parent folders are directories."
                )
            return

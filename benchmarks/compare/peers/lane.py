"""A second process for fastnas: its sensitivity (one evaluation per allowed size of every
hparam) takes most of a full run, so it runs beside the other methods, each process with one
torch thread on its own core. Both processes build the same batches from the same text, and
each times its own search in wall and process CPU time, so gradnas's and fastnas's searches
are measured in the same run, under the same load."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from nasframe.io.atomic import atomic_write_json

from ..settings import REPO, SCRIPT, Settings


def lane_command(settings: Settings, methods: list[str], folder: str, out: Path) -> list[str]:
    """The child's command line: this run's resolved sizes, its methods, the shared
    checkpoint folder and where to write the rows."""
    return [
        sys.executable,
        str(SCRIPT),
        f"--budgets={','.join(map(str, settings.budgets))}",
        f"--methods={','.join(methods)}",
        f"--calibration-batches={settings.calibration_batches}",
        f"--held-back-batches={settings.held_back_batches}",
        f"--held-back-batch-size={settings.held_back_batch_size}",
        f"--validation-batches={settings.validation_batches}",
        f"--report-batches={settings.report_batches}",
        f"--report-seq-len={settings.report_seq_len}",
        f"--eval-batches={settings.eval_batches}",
        f"--seq-len={settings.seq_len}",
        f"--batch-size={settings.batch_size}",
        f"--divisor={settings.divisor}",
        f"--threads={settings.threads}",
        "--no-progress",
        f"--checkpoint-dir={folder}",
        f"--lane={','.join(methods)}",
        f"--lane-out={out}",
    ]


def start_lane(settings: Settings, methods: list[str], folder: str) -> tuple[Any, Path]:
    """Start the child (its log goes to ``lane.log`` in the checkpoint folder)."""
    out = Path(folder) / "lane.json"
    out.unlink(missing_ok=True)
    log = open(Path(folder) / "lane.log", "w")  # noqa: SIM115 - closed by finish_lane
    process = subprocess.Popen(
        lane_command(settings, methods, folder, out), cwd=REPO, stdout=log, stderr=log
    )
    process.log = log  # type: ignore[attr-defined]
    return process, out


def finish_lane(process: Any, out: Path, dense: dict[str, Any]) -> dict[str, Any]:
    """Wait for the child and return its rows, their ratios taken against this process's
    dense figures (the child measures no dense model)."""
    code = process.wait()
    process.log.close()
    if code != 0 or not out.exists():
        tail = Path(process.log.name).read_text(errors="replace")[-2000:]
        raise RuntimeError(f"the fastnas lane exited with {code}:\n{tail}")
    lane = json.loads(out.read_text())
    for run in lane["runs"]:
        run["ratio_to_dense"] = run["perplexity"] / dense["perplexity"]
    return lane


def join_lane(path: Path, pid: int | None, dense: dict[str, Any]) -> dict[str, Any]:
    """Wait for a lane this process did not start (``--join-lane``: one left running by an
    earlier, stopped run) to write ``path``, and return its rows as :func:`finish_lane` does."""
    import os
    import time

    while not path.exists():
        if pid is not None:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                if not path.exists():
                    raise RuntimeError(f"the fastnas lane {pid} ended without {path}") from None
        time.sleep(10)
    lane = json.loads(path.read_text())
    for run in lane["runs"]:
        run["ratio_to_dense"] = run["perplexity"] / dense["perplexity"]
    return lane


def lane_main(settings: Settings, compare_methods: Any, log: Any) -> None:
    """In the child: load, build the batches, run ``settings.methods``, write the rows."""
    import torch

    from ..data import count_params, load_model, make_data

    torch.set_num_threads(settings.threads)
    bundle = load_model(progress=False)
    data = make_data(bundle, settings)
    dense = {"params": count_params(bundle.model), "perplexity": float("nan")}

    def write(runs: list[Any], methods: dict[str, Any], space: dict[str, Any], done: bool) -> None:
        rows = {"runs": [asdict(run) for run in runs], "methods": methods, "space": space}
        # the rows so far beside the file, the whole set as the file the main run waits for
        target = settings.lane_out if done else settings.lane_out.with_suffix(".partial.json")
        atomic_write_json(target, rows)

    runs, methods, space = compare_methods(
        bundle.model,
        data,
        dense,
        settings,
        str(settings.checkpoint_dir),
        lambda runs, methods, space: write(runs, methods, space, False),
    )
    write(runs, methods, space, True)
    log(f"lane {settings.lane}: wrote {settings.lane_out}")

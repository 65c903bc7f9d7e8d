"""The smaller SmolLM2 benchmark scripts, without SmolLM2: ``smollm2_ffn.py``'s rules leave
only FFN widths searchable, and ``default_job.py`` passes ``--job-args`` to every job."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

import nasframe

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ffn_rules_leave_only_ffn_widths_searchable():
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    model = transformers.AutoModelForCausalLM.from_config(config)
    space = nasframe.convert(model, _script("smollm2_ffn").ffn_only_rules(32))
    assert sorted(space.hparams) == [f"model.layers.{i}.mlp.intermediate_size" for i in range(3)]
    assert space.hparams["model.layers.0.mlp.intermediate_size"].choices == [32, 64, 96, 128]


def test_default_job_passes_its_job_args(tmp_path, monkeypatch):
    module = _script("default_job")
    commands = []

    def fake_run(command, check, stdout):
        commands.append(command)
        out = Path(command[command.index("--out") + 1])
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps({"ok": True}))

    monkeypatch.setattr(module.subprocess, "run", fake_run)
    flags = ["--allocation", "threshold", "--reconstruct", "none"]
    wall, summary = module.run("gradnas", tmp_path / "g", "byte-mlp", flags)
    assert summary == {"ok": True} and wall >= 0
    (command,) = commands
    assert command[:4] == [sys.executable, "-m", "nasframe", "search"]
    assert command[-6:] == [
        "--model",
        "byte-mlp",
        "--allocation",
        "threshold",
        "--reconstruct",
        "none",
    ]

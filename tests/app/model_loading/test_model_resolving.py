"""``--model`` given as a Hugging Face model directory or a path: what it resolves to, how it
loads, and the one-line errors for specs that are no model.

The directory holds a tiny random Llama (2 layers, FFN width 48) and a byte-level BPE tokenizer
trained here on a few sentences, saved with ``save_pretrained``: nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from cli_runner import run_main  # noqa: E402
from hf_models.pretrained import documents, save_tiny_model  # noqa: E402
from loading_support import search_argv  # noqa: E402

from nasframe.api import build_architecture  # noqa: E402
from nasframe.app.cli import EXIT_USAGE  # noqa: E402
from nasframe.app.model_registry import get_model_entry  # noqa: E402


def test_importing_nasframe_and_resolving_a_path_does_not_import_transformers(
    model_dir: Path,
) -> None:
    script = (
        "import sys, nasframe\n"
        "from nasframe.app.model_registry import get_model_entry, model_entries\n"
        "assert 'smollm2-135m' in model_entries()\n"
        f"entry = get_model_entry({str(model_dir)!r})\n"
        "assert 'Hugging Face model directory' in entry.description, entry\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'transformers'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_a_model_directory_loads_in_eval_mode_with_its_tokenizer(model_dir: Path) -> None:
    bundle = get_model_entry(str(model_dir)).load_bundle(progress=False)
    model = bundle.model
    reference = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert not model.training
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    for (name, mine), (_, theirs) in zip(
        model.state_dict().items(), reference.state_dict().items(), strict=True
    ):
        assert torch.equal(mine, theirs), name
    text = "\n\n".join(documents(3, seed=5))
    expected = transformers.AutoTokenizer.from_pretrained(model_dir)(
        text, add_special_tokens=False
    )["input_ids"]
    assert bundle.encode(text) == expected and len(expected) > 10
    assert bundle.architecture["name"] == "transformers"
    config = bundle.architecture["kwargs"]["config"]
    assert config["model_type"] == "llama" and config["intermediate_size"] == 48
    json.dumps(bundle.architecture)  # JSON-able, as nasframe.json needs
    rebuilt = build_architecture("transformers", bundle.architecture["kwargs"])
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in model.parameters()]
    assert bundle.save_plain is not None


def test_a_bfloat16_model_directory_keeps_its_dtype_unless_one_is_asked_for(
    tmp_path: Path,
) -> None:
    """Issue 15 changed this: a bf16 directory used to load in float32 (twice the memory)."""
    directory = save_tiny_model(tmp_path / "bf16", dtype=torch.bfloat16)
    bundle = get_model_entry(str(directory)).load_bundle(progress=False)
    assert {p.dtype for p in bundle.model.parameters()} == {torch.bfloat16}
    asked = get_model_entry(str(directory)).load_bundle(progress=False, dtype=torch.float32)
    assert {p.dtype for p in asked.model.parameters()} == {torch.float32}


def test_registered_names_win_over_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_dir: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    os.symlink(model_dir, tmp_path / "byte-mlp-tiny")  # a model directory named like a model
    assert get_model_entry("./byte-mlp-tiny").description.startswith("Hugging Face model")
    assert get_model_entry("byte-mlp-tiny").description.startswith("smoke-test size")


@pytest.mark.parametrize(
    ("spec", "patterns"),
    [
        pytest.param(
            "{tmp}/missing/model",
            [r"--model .*missing/model: no such file or directory", r"\.gguf file"],
            id="missing-path",
        ),
        pytest.param(
            "missing.gguf", [r"missing\.gguf: no such file or directory"], id="missing-gguf"
        ),
        pytest.param(
            "{tmp}/no-config",
            [r"no-config is a directory without config\.json", r"save_pretrained"],
            id="directory-without-config",
        ),
        pytest.param(
            "{tmp}/weights.bin", [r"weights\.bin is not a \.gguf file"], id="not-a-gguf-file"
        ),
        pytest.param(
            "nope",
            [r"unknown model 'nope'", r"smollm2-135m", r"model directory or a \.gguf file"],
            id="unknown-name",
        ),
        pytest.param(
            "{tmp}/broken.gguf",
            [r"--model .*broken\.gguf", r"(?i)gguf"],
            id="broken-gguf",
        ),
        pytest.param(
            "{tmp}/custom-code",
            [r"custom-code ships its own Python code", r"--trust-remote-code"],
            id="custom-code",
        ),
        pytest.param(  # transformers 5 builds an empty Qwen2 tokenizer from the config alone
            "{tmp}/no-tokenizer",
            [r"no-tokenizer: its tokenizer encodes text to no tokens", r"save_pretrained"],
            id="directory-without-tokenizer",
        ),
    ],
)
def test_bad_model_specs_are_one_line_and_exit_code_2(
    spec: str, patterns: list[str], tmp_path: Path, corpus: Path, model_dir: Path
) -> None:
    import re

    (tmp_path / "no-config").mkdir()
    (tmp_path / "no-config" / "tokenizer.json").write_text("{}", encoding="utf-8")
    (tmp_path / "weights.bin").write_bytes(b"\0" * 16)
    (tmp_path / "broken.gguf").write_bytes(b"this is not a GGUF file")
    custom = tmp_path / "custom-code"  # a config only custom code understands, and a tokenizer
    custom.mkdir()
    for file in model_dir.glob("tokenizer*"):
        (custom / file.name).write_bytes(file.read_bytes())
    auto_map = {"AutoConfig": "custom.Config", "AutoModelForCausalLM": "custom.Model"}
    (custom / "config.json").write_text(
        json.dumps({"model_type": "custom-tiny", "auto_map": auto_map}), encoding="utf-8"
    )
    qwen2 = transformers.Qwen2Config(  # a model saved without its tokenizer
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    transformers.Qwen2ForCausalLM(qwen2).save_pretrained(tmp_path / "no-tokenizer")
    out = tmp_path / "out"
    code, stdout, stderr = run_main(search_argv(spec.format(tmp=tmp_path), corpus, out))
    assert code == EXIT_USAGE, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nasframe: error: "), stderr
    for pattern in patterns:
        assert re.search(pattern, lines[0]), (pattern, lines[0])
    assert not out.exists()

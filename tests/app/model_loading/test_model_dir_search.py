"""The search job on a Hugging Face model directory: the nasframe and plain transformers
exports, ``--uniform``, and the flags an algorithm without them refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from cli_runner import run_main  # noqa: E402
from loading_support import logits, read_summary, search_argv, token_ids  # noqa: E402

import nasframe  # noqa: E402
import nasframe.app.job  # noqa: E402
import nasframe.app.job_output  # noqa: E402
from nasframe.app.cli import EXIT_USAGE  # noqa: E402
from nasframe.app.model_registry import ModelBundle, get_model_entry  # noqa: E402
from nasframe.errors import UserInputError  # noqa: E402
from nasframe.searchers.config import SearchConfig  # noqa: E402


def test_search_on_a_model_directory_writes_nasframe_and_plain_transformers(
    model_dir: Path, corpus: Path, tmp_path: Path
) -> None:
    """At params=100% every layer keeps its width, so the plain transformers directory is written
    and must hold the same model as the nasframe directory."""
    out = tmp_path / "out"
    code, stdout, stderr = run_main(
        search_argv(model_dir, corpus, out, "--constraint", "params=100%")
    )
    assert code == 0, stderr
    assert stderr == ""  # --quiet: no progress bar from loading, de-quantising or saving
    assert {"nasframe.json", "model.safetensors", "summary.json"} <= {p.name for p in out.iterdir()}
    exports = read_summary(out)["exports"]
    assert exports == {
        "nasframe": str(out),
        "transformers": str(out / "transformers"),
        "note": None,
        "gguf": str(out / "gguf" / "model.gguf"),
    }
    assert "also as" in stdout
    plain = transformers.AutoModelForCausalLM.from_pretrained(out / "transformers")
    restored = nasframe.load(out)
    ids = token_ids(plain.config.vocab_size)
    torch.testing.assert_close(logits(plain, ids), logits(restored, ids))
    tokenizer = transformers.AutoTokenizer.from_pretrained(out / "transformers")
    assert (
        tokenizer("the model prunes")["input_ids"]
        == transformers.AutoTokenizer.from_pretrained(model_dir)("the model prunes")["input_ids"]
    )
    assert not list(tmp_path.rglob("*.tmp"))


def uniform_supported() -> bool:
    return "uniform" in nasframe.plugins.get_algorithm("gradnas")().default_search_config


def test_uniform_search_gives_a_pruned_model_plain_transformers_loads(
    model_dir: Path, corpus: Path, tmp_path: Path
) -> None:
    if not uniform_supported():
        pytest.skip("gradnas does not offer a uniform search yet")
    out = tmp_path / "out"
    argv = search_argv(model_dir, corpus, out, "--constraint", "params=85%", "--uniform")
    code, _, stderr = run_main(argv)
    assert code == 0, stderr
    summary = read_summary(out)
    assert summary["settings"]["uniform"] is True
    assert summary["exports"]["transformers"] == str(out / "transformers")
    assert summary["params"]["fraction"] <= 0.85
    plain = transformers.AutoModelForCausalLM.from_pretrained(out / "transformers")
    # Llama's bias flags give every projection they cover a bias: the reconstructed ones, and
    # zeros for the others, which the nasframe format does not store.
    zero_biases = sum(
        p.numel() for name, p in plain.named_parameters() if name.endswith(".bias") and not p.any()
    )
    assert summary["reconstruct"]["added_biases"]
    assert sum(p.numel() for p in plain.parameters()) - zero_biases == summary["params"]["after"]
    widths = {layer.mlp.down_proj.in_features for layer in plain.model.layers}
    assert len(widths) == 1
    ids = token_ids(plain.config.vocab_size)
    torch.testing.assert_close(logits(plain, ids), logits(nasframe.load(out), ids))


def test_uniform_is_refused_by_an_algorithm_that_lacks_it(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class NoUniform:
        config_type = SearchConfig

    monkeypatch.setattr(nasframe.app.job, "get_algorithm", lambda name: NoUniform)
    code, _, stderr = run_main(search_argv("nope", corpus, tmp_path / "out", "--uniform"))
    assert code == EXIT_USAGE
    assert stderr.strip() == (
        "nasframe: error: --uniform is not supported by --algo gradnas; drop --uniform or "
        "choose an algorithm that supports it (see `nasframe algos`)."
    )


def test_allocation_flags_are_refused_by_an_algorithm_without_them(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class NoAllocation:
        config_type = SearchConfig

    monkeypatch.setattr(nasframe.app.job, "get_algorithm", lambda name: NoAllocation)
    argv = search_argv("nope", corpus, tmp_path / "out", "--min-keep", "0.5")
    code, _, stderr = run_main(argv)
    assert code == EXIT_USAGE
    assert stderr.strip() == (
        "nasframe: error: --min-keep is not supported by --algo gradnas; drop --min-keep or "
        "choose an algorithm built on the binary search (gradnas, fastnas)."
    )
    assert not (tmp_path / "out").exists()


def test_per_layer_widths_keep_only_the_nasframe_format(tmp_path: Path) -> None:
    """save_plain refuses; the job says so in one line and in summary.json, and removes the
    plain directory an earlier run left, which would no longer match."""
    out = tmp_path / "out"
    stale = out / "transformers"
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}", encoding="utf-8")

    def refuse(model: torch.nn.Module, directory: Path) -> Path:
        (directory / "partial.bin").write_bytes(b"half")
        raise UserInputError("the intermediate_size differ between layers.")

    bundle = ModelBundle(torch.nn.Identity(), list, "m", save_plain=refuse)
    lines: list[str] = []
    exports = nasframe.app.job_output.save_plain(bundle, torch.nn.Identity(), out, lines.append)
    assert exports["transformers"] is None
    assert exports["reason"] == "the intermediate_size differ between layers."
    assert lines == [exports["note"]]
    assert lines[0] == (
        f"no plain transformers directory was written to {out} (load the result with "
        "nasframe.load): plain transformers cannot hold this model: the intermediate_size "
        "differ between layers."
    )
    assert list(out.iterdir()) == []  # neither the stale directory nor a partial one


def test_a_model_without_a_plain_format_writes_only_nasframe(tmp_path: Path) -> None:
    bundle = ModelBundle(torch.nn.Identity(), list, "m")
    exports = nasframe.app.job_output.save_plain(bundle, torch.nn.Identity(), tmp_path, print)
    assert exports == {"nasframe": str(tmp_path), "transformers": None, "note": None}
    assert list(tmp_path.iterdir()) == []


def test_save_plain_refuses_per_layer_ffn_widths(model_dir: Path, tmp_path: Path) -> None:
    bundle = get_model_entry(str(model_dir)).load_bundle(progress=False)
    space = nasframe.convert(bundle.model, rules={"*": {"divisor": 16}})
    widths = {f"model.layers.{i}.mlp.intermediate_size": 32 + 16 * i for i in range(2)}
    space.select({**space.config(), **widths})
    pruned = nasframe.export(space)
    with pytest.raises(UserInputError, match="--uniform"):
        bundle.save_plain(pruned, tmp_path)

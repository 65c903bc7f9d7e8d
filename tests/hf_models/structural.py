"""Tiny decoders of every family the structure description recognises (no download), for
one parametrised suite (``tests/plugins/transformers/decoder/test_structural_*.py``). Each
entry says which patterns it exercises and what its tests may expect of it:

- Qwen3, Gemma 3, OPT, GPT-J (``hf_models.decoders``) and Phi-3 (``hf_models.phi3``, fused
  ``qkv_proj`` and ``gate_up_proj``): 3 layers, hidden 32-48, 6 query heads in 3 KV groups
  where they have GQA.
- GPT-NeoX (both residual layouts): ``query_key_value`` of [q, k, v] rows per head, partial
  rotary, ``dense_h_to_4h``/``dense_4h_to_h``, biases, an untied head; every head is its own
  KV group.
- OLMo 2 and OLMo 3: q_norm/k_norm over all heads (heads kept whole), norms after each block;
  OLMo 3 with alternating sliding-window layers.
- Gemma 2: logit soft-capping (final and attention), alternating sliding window, sandwich
  norms, scaled embeddings. transformers runs it with eager attention only.
- Outside every named list: Starcoder2 (LayerNorm with biases, ``c_fc``/``c_proj``, a sliding
  window on every layer), Granite (embedding, residual, attention and logit multipliers),
  SmolLM3 (NoPE layers listed per layer in the config), OLMo (LayerNorm without parameters),
  Nemotron (a LayerNorm subclass with a ``1 + weight`` gain, an up/down ReLU^2 MLP),
  Persimmon (GPT-NeoX's per-head ``query_key_value`` with LayerNorms over one head).

Sliding windows are 4 tokens, under the tests' 10-token inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import transformers

from hf_models import decoders
from hf_models.decoders import VOCAB
from hf_models.phi3 import tiny_phi3

HEAD_DIM = 8
IDS = {"pad_token_id": None, "bos_token_id": 1, "eos_token_id": 2}
ALTERNATING = ["sliding_attention", "full_attention", "sliding_attention"]


@dataclass(frozen=True)
class Spec:
    """A tiny config and what the tests may expect of the model built from it."""

    config: str  # transformers config class ("" for a family built elsewhere)
    sizes: dict[str, Any]
    layers: str = "model.layers"
    attention: str = "self_attn"
    #: Attention implementations transformers runs the family with.
    attentions: tuple[str, ...] = ("eager", "sdpa")
    #: Whether heads can be removed exactly (False: a norm over all heads keeps them whole).
    heads_prunable: bool = True
    #: Whether KV groups hold more than one query head.
    gqa: bool = True
    #: Whether the config states head_dim (else hidden size and heads stay whole in a
    #: uniform search, since head_dim = hidden_size / num_attention_heads).
    states_head_dim: bool = False
    #: The fused q/k/v projection ("qkv_proj", "query_key_value"), "" for separate ones.
    fused: str = ""
    #: Builds the model (attention, seed, config overrides) of a family built elsewhere.
    build: Callable[..., Any] | None = None

    @property
    def prefix(self) -> str:
        """The base model's path with its dot ("model.")."""
        return self.layers.rpartition(".")[0] + "."

    def attention_path(self, index: int) -> str:
        return f"{self.layers}.{index}.{self.attention}"


def _sizes(layers: int = 2, kv: int | None = 2, **extra: Any) -> dict[str, Any]:
    sizes = {
        "hidden_size": 32,
        "intermediate_size": 40,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
    }
    if kv is not None:
        sizes["num_key_value_heads"] = kv
    return sizes | extra


def _neox(parallel: bool) -> Spec:
    sizes = _sizes(kv=None, rotary_pct=0.5, use_parallel_residual=parallel)
    return Spec(
        "GPTNeoXConfig", sizes, "gpt_neox.layers", "attention", gqa=False, fused="query_key_value"
    )


def _named(family: str, layers: str = "model.layers", **expect: Any) -> Spec:
    """A family whose tiny model ``hf_models.decoders`` builds."""

    def build(attention: str, seed: int, **extra: Any):
        return decoders.tiny_model(family, attention, seed, **extra)

    states = family in decoders.STATES_HEAD_DIM
    return Spec("", {}, layers, states_head_dim=states, build=build, **expect)


def _sliding(layers: list[str]) -> dict[str, Any]:
    return {"num_hidden_layers": len(layers), "sliding_window": 4, "layer_types": layers}


SPECS: dict[str, Spec] = {
    "qwen3": _named("qwen3"),
    "gemma3": _named("gemma3"),
    "opt": _named("opt", "model.decoder.layers", gqa=False),
    "gptj": _named("gptj", "transformer.h", attention="attn", gqa=False),
    "phi3": Spec("", {}, fused="qkv_proj", build=lambda a, s, **x: tiny_phi3(a, s, **x)),
    "gpt_neox": _neox(parallel=True),
    "gpt_neox_sequential": _neox(parallel=False),
    "olmo2": Spec("Olmo2Config", _sizes(), heads_prunable=False),
    "olmo3": Spec("Olmo3Config", _sizes(**_sliding(ALTERNATING)), heads_prunable=False),
    "gemma2": Spec(
        "Gemma2Config",
        _sizes(
            **_sliding(ALTERNATING),
            head_dim=HEAD_DIM,
            query_pre_attn_scalar=HEAD_DIM,
            final_logit_softcapping=2.0,
            attn_logit_softcapping=1.0,
            initializer_range=0.1,  # scores and logits large enough for both caps to act
        ),
        attentions=("eager",),
        states_head_dim=True,
    ),
    "starcoder2": Spec("Starcoder2Config", _sizes(sliding_window=4)),
    "granite": Spec(
        "GraniteConfig",
        _sizes(
            embedding_multiplier=2.0,
            residual_multiplier=0.5,
            attention_multiplier=0.3,
            logits_scaling=2.0,
        ),
    ),
    "smollm3": Spec("SmolLM3Config", _sizes(layers=3, no_rope_layer_interval=2)),
    "olmo": Spec("OlmoConfig", _sizes()),
    "persimmon": Spec("PersimmonConfig", _sizes(kv=None), gqa=False, fused="query_key_value"),
    "nemotron": Spec("NemotronConfig", _sizes(head_dim=HEAD_DIM), states_head_dim=True),
}
#: Families outside every list of names (none is named in nasframe's code).
OUTSIDE = ("starcoder2", "granite", "smollm3", "olmo", "nemotron", "persimmon")


def tiny_config(family: str, attention: str = "sdpa", **extra: Any):
    """The tiny config of a family this module builds (not those built elsewhere)."""
    spec = SPECS[family]
    config_class = getattr(transformers, spec.config)
    options = {"vocab_size": VOCAB, **IDS, **spec.sizes, **extra}
    return config_class(attn_implementation=attention, **options)


def tiny_model(family: str, attention: str = "sdpa", seed: int = 0, **extra: Any):
    spec = SPECS[family]
    if spec.build is not None:
        return spec.build(attention, seed, **extra)
    config = tiny_config(family, attention, **extra)
    torch.manual_seed(seed)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def head_counts(model) -> tuple[int, int]:
    """(query heads, KV heads) of the model's config."""
    heads = model.config.num_attention_heads
    return heads, getattr(model.config, "num_key_value_heads", None) or heads

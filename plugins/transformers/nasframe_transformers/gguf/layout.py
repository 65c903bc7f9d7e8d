"""How an exported Llama-style model maps onto llama.cpp: its architecture and per-layer sizes.

llama.cpp's ``llama`` graph builds attention with one head count for every layer; its ``deci``
graph (NVIDIA's Nemotron-NAS models) reads the FFN width, query heads and KV heads of each
layer from per-layer arrays, and optional ``attn_output``/``ffn_down`` biases — exactly what a
per-layer nasframe result needs. So a result with the same sizes in every layer is written as
plain ``llama`` (every llama.cpp-based runtime reads it), any other as ``deci``.

Layers that lost a whole part: in ``deci`` a layer with ``n_ff == 0`` skips the rest of the
layer, dropping its attention output too, and a layer with no query heads makes the head size
of layer 0 undefined. Such a part is written instead as one unit of zeros (FFN width 1, or
one query and one KV head) whose output is exactly zero, plus the part's bias: the same
function at a cost of a few thousand parameters, and loadable by every graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from nasframe.errors import UserInputError

# Families whose decoder layer is llama.cpp's Llama layer: RMSNorm, RoPE attention with
# optional q/k/v/o biases, a SwiGLU FFN. (Qwen2's NEOX-style RoPE is the same rotation as
# Llama's after the q/k row permutation, so it is written as Llama.)
GGUF_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2"})
UNIFORM_ARCH = "llama"
PER_LAYER_ARCH = "deci"


@dataclass(frozen=True)
class LayerSizes:
    """The sizes of one decoder layer as written (after zero-unit padding)."""

    heads: int
    kv_heads: int
    ffn: int
    pad_attention: bool = False  # no query heads kept: one zero head is written
    pad_ffn: bool = False  # no FFN width kept: one zero unit is written


@dataclass(frozen=True)
class GgufLayout:
    """Everything the writer needs to know about the model's shape."""

    arch: str
    hidden: int
    head_dim: int
    vocab: int
    layers: tuple[LayerSizes, ...]
    tied: bool

    @property
    def uniform(self) -> bool:
        return len({(s.heads, s.kv_heads, s.ffn) for s in self.layers}) <= 1


def decoder_parts(model: nn.Module) -> tuple[nn.Module, nn.Module | None]:
    """The base model (embeddings, layers, final norm) and the LM head (None without one)."""
    base = getattr(model, "model", model)
    return base, getattr(model, "lm_head", None)


def check_supported(model: nn.Module) -> Any:
    """The model's config, or one sentence saying why llama.cpp cannot run this model."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in GGUF_MODEL_TYPES:
        raise UserInputError(
            f"nasframe writes GGUF files only for Llama, Mistral and Qwen2 models, not "
            f"{model_type or type(model).__name__}; load this result with nasframe.load instead."
        )
    if getattr(model, "lm_head", None) is None:
        raise UserInputError(
            f"this {model_type} model has no language-model head, and llama.cpp runs only causal "
            "language models; prune an AutoModelForCausalLM to export GGUF."
        )
    if getattr(model.lm_head, "bias", None) is not None:
        raise UserInputError(
            "this model's LM head has a bias, which llama.cpp's Llama graph has no place for; "
            "load this result with nasframe.load instead."
        )
    act = getattr(config, "hidden_act", "silu")
    if act != "silu":
        raise UserInputError(
            f"this {model_type} model's FFN uses {act!r}, but llama.cpp's Llama graph uses SiLU; "
            "load this result with nasframe.load instead."
        )
    base, _ = decoder_parts(model)
    if len(base.layers) == 0:
        raise UserInputError(
            "the pruned model kept no decoder layer, which llama.cpp cannot run; search with a "
            "budget that keeps at least one layer."
        )
    return config


def gguf_layout(model: nn.Module) -> GgufLayout:
    """Per-layer sizes read from the exported weights (never from the config, which keeps
    the unpruned head counts when layers differ)."""
    check_supported(model)
    base, lm_head = decoder_parts(model)
    layers = []
    head_dim = base.layers[0].self_attn.head_dim
    for layer in base.layers:
        attention, mlp = layer.self_attn, layer.mlp
        heads = attention.q_proj.out_features // head_dim
        kv = attention.k_proj.out_features // head_dim if heads else 0
        ffn = mlp.down_proj.in_features
        layers.append(
            LayerSizes(
                heads=heads or 1,
                kv_heads=kv or 1,
                ffn=ffn or 1,
                pad_attention=heads == 0,
                pad_ffn=ffn == 0,
            )
        )
    embed = base.embed_tokens
    tied = lm_head.weight is embed.weight or (lm_head.weight.data_ptr() == embed.weight.data_ptr())
    uniform = len({(s.heads, s.kv_heads, s.ffn) for s in layers}) == 1
    return GgufLayout(
        arch=UNIFORM_ARCH if uniform else PER_LAYER_ARCH,
        hidden=embed.embedding_dim,
        head_dim=head_dim,
        vocab=embed.num_embeddings,
        layers=tuple(layers),
        tied=tied,
    )

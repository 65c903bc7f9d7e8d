"""The model's hyperparameters as llama.cpp reads them: sizes, RoPE, norm epsilon.

Per-layer sizes are written as arrays only when they differ (``deci``); a uniform model gets
plain numbers (``llama``). RoPE scaling: none and ``linear`` are metadata; ``llama3`` also
needs the ``rope_freqs`` tensor, computed here as llama.cpp's own converter does. A
sliding-window Mistral/Qwen2 is written with its window as the context length: llama.cpp's
Llama graph has no sliding window, and within the window the two attentions are equal.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nasframe.errors import UserInputError
from nasframe_transformers.gguf.layout import GgufLayout

DEFAULT_ROPE_THETA = 10000.0


def rope_parameters(config: Any) -> dict[str, Any]:
    """RoPE settings from a transformers 5 ``rope_parameters`` or an older ``rope_scaling``."""
    params = dict(getattr(config, "rope_parameters", None) or {})
    scaling = getattr(config, "rope_scaling", None)
    if isinstance(scaling, dict):
        params = {**scaling, **params}
    params.setdefault("rope_theta", getattr(config, "rope_theta", DEFAULT_ROPE_THETA))
    params["rope_type"] = params.get("rope_type", params.get("type", "default")) or "default"
    return params


def context_length(config: Any) -> int:
    length = int(getattr(config, "max_position_embeddings", 2048) or 2048)
    window = getattr(config, "sliding_window", None)
    uses_window = getattr(config, "use_sliding_window", True)
    if window and uses_window and int(window) < length:
        length = int(window)
    return length


def add_hparams(writer: Any, config: Any, layout: GgufLayout) -> np.ndarray | None:
    """Write the architecture's keys; returns the ``rope_freqs`` tensor llama3 RoPE needs."""
    import gguf

    per_layer = not layout.uniform
    layers = layout.layers

    def sizes(values: list[int]) -> int | list[int]:
        return values if per_layer else values[0]

    writer.add_context_length(context_length(config))
    writer.add_embedding_length(layout.hidden)
    writer.add_block_count(len(layers))
    writer.add_feed_forward_length(sizes([s.ffn for s in layers]))
    writer.add_head_count(sizes([s.heads for s in layers]))
    writer.add_head_count_kv(sizes([s.kv_heads for s in layers]))
    writer.add_key_length(layout.head_dim)
    writer.add_value_length(layout.head_dim)
    writer.add_rope_dimension_count(layout.head_dim)
    writer.add_layer_norm_rms_eps(float(getattr(config, "rms_norm_eps", 1e-6)))
    writer.add_vocab_size(layout.vocab)
    rope = rope_parameters(config)
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    kind = rope["rope_type"]
    if kind == "default":
        return None
    if kind == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
        return None
    if kind == "llama3":
        return llama3_rope_factors(rope, layout.head_dim)
    raise UserInputError(
        f"this model's RoPE scaling {kind!r} has no llama.cpp equivalent nasframe writes (it "
        "writes none, linear and llama3); load this result with nasframe.load instead."
    )


def llama3_rope_factors(rope: dict[str, Any], head_dim: int) -> np.ndarray:
    """Llama 3's per-frequency RoPE factors (as llama.cpp's convert_hf_to_gguf computes them)."""
    base = float(rope["rope_theta"])
    factor = float(rope.get("factor", 8.0))
    low = float(rope.get("low_freq_factor", 1.0))
    high = float(rope.get("high_freq_factor", 4.0))
    old_context = float(rope.get("original_max_position_embeddings", 8192))
    low_wavelen, high_wavelen = old_context / low, old_context / high
    factors = []
    for index in range(0, head_dim, 2):
        wavelen = 2 * math.pi * base ** (index / head_dim)
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(factor)
        else:
            smooth = (old_context / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(factors, dtype=np.float32)

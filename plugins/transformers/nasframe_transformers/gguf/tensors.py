"""The model's weights under llama.cpp's tensor names, in its row order and weight type.

llama.cpp's Llama graphs rotate interleaved pairs of each head's dimensions, transformers
rotates its two halves, so every head's q and k rows are permuted (as llama.cpp's converter
does) — per layer, with that layer's kept query and KV head counts. Matrices are written in the
chosen type (f32, f16 or bf16); norms, biases and RoPE factors stay f32, as llama.cpp expects.
Parts a layer lost entirely are written as one zero unit (see ``layout``).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from nasframe.errors import UserInputError
from nasframe_transformers.gguf.layout import GgufLayout, decoder_parts

DTYPES = ("f32", "f16", "bf16")


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise UserInputError(
            f"unknown GGUF weight type {dtype!r}; choose one of {', '.join(DTYPES)} (quantize "
            "further with llama.cpp's llama-quantize)."
        )
    return dtype


def permute_rotary(rows: torch.Tensor, heads: int) -> torch.Tensor:
    """Each head's rows from halves order (transformers) to interleaved pairs (llama.cpp)."""
    if heads == 0 or rows.shape[0] == 0:
        return rows
    shape = rows.shape
    return rows.reshape(heads, 2, shape[0] // heads // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def _array(tensor: torch.Tensor, dtype: str) -> tuple[np.ndarray, object | None]:
    """The tensor as numpy data and, for bf16, the raw GGML type to declare."""
    import gguf

    data = tensor.detach().to("cpu", torch.float32).contiguous()
    if data.dim() == 1 or dtype == "f32":
        return data.numpy(), None
    if dtype == "f16":
        return data.to(torch.float16).numpy(), None
    bits = data.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    return bits, gguf.GGMLQuantizationType.BF16


def _layer_tensors(
    layer: nn.Module, index: int, layout: GgufLayout
) -> Iterator[tuple[str, torch.Tensor]]:
    sizes = layout.layers[index]
    prefix = f"blk.{index}"
    attention, mlp = layer.self_attn, layer.mlp
    yield f"{prefix}.attn_norm.weight", layer.input_layernorm.weight
    if sizes.pad_attention:
        width, hidden = layout.head_dim, layout.hidden
        for name in ("attn_q", "attn_k", "attn_v"):
            yield f"{prefix}.{name}.weight", torch.zeros(width, hidden)
        yield f"{prefix}.attn_output.weight", torch.zeros(hidden, width)
    else:
        q, k, v = attention.q_proj, attention.k_proj, attention.v_proj
        yield f"{prefix}.attn_q.weight", permute_rotary(q.weight, sizes.heads)
        yield f"{prefix}.attn_k.weight", permute_rotary(k.weight, sizes.kv_heads)
        yield f"{prefix}.attn_v.weight", v.weight
        if q.bias is not None:
            yield f"{prefix}.attn_q.bias", permute_rotary(q.bias, sizes.heads)
        if k.bias is not None:
            yield f"{prefix}.attn_k.bias", permute_rotary(k.bias, sizes.kv_heads)
        if v.bias is not None:
            yield f"{prefix}.attn_v.bias", v.bias
        yield f"{prefix}.attn_output.weight", attention.o_proj.weight
    if attention.o_proj.bias is not None:
        yield f"{prefix}.attn_output.bias", attention.o_proj.bias
    yield f"{prefix}.ffn_norm.weight", layer.post_attention_layernorm.weight
    gate, up, down = mlp.gate_proj, mlp.up_proj, mlp.down_proj
    if sizes.pad_ffn:
        yield f"{prefix}.ffn_gate.weight", torch.zeros(1, layout.hidden)
        yield f"{prefix}.ffn_up.weight", torch.zeros(1, layout.hidden)
        yield f"{prefix}.ffn_down.weight", torch.zeros(layout.hidden, 1)
        # gate/up biases of a removed FFN have no units left: the zero unit needs none
    else:
        yield f"{prefix}.ffn_gate.weight", gate.weight
        yield f"{prefix}.ffn_up.weight", up.weight
        yield f"{prefix}.ffn_down.weight", down.weight
        for name, linear in (("ffn_gate", gate), ("ffn_up", up)):
            if linear.bias is not None:
                yield f"{prefix}.{name}.bias", linear.bias
    if down.bias is not None:
        yield f"{prefix}.ffn_down.bias", down.bias


def gguf_tensors(
    model: nn.Module, layout: GgufLayout, rope_freqs: np.ndarray | None
) -> Iterator[tuple[str, torch.Tensor]]:
    """(llama.cpp name, tensor) for every weight, in the order llama.cpp's converter writes."""
    base, lm_head = decoder_parts(model)
    yield "token_embd.weight", base.embed_tokens.weight
    if rope_freqs is not None:
        yield "rope_freqs.weight", torch.from_numpy(rope_freqs)
    for index, layer in enumerate(base.layers):
        yield from _layer_tensors(layer, index, layout)
    yield "output_norm.weight", base.norm.weight
    if not layout.tied:  # tied embeddings: llama.cpp reuses token_embd for the output
        yield "output.weight", lm_head.weight


def add_tensors(writer: object, model: nn.Module, layout: GgufLayout, dtype: str, rope) -> None:
    for name, tensor in gguf_tensors(model, layout, rope):
        data, raw = _array(tensor, dtype)
        if raw is None:
            writer.add_tensor(name, data)
        else:
            writer.add_tensor(name, data, raw_shape=data.shape, raw_dtype=raw)

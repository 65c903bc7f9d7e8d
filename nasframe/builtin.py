"""nasframe's own registrations, made through the same hooks a third-party plugin uses."""

from __future__ import annotations

from typing import Any

from torch import nn

from nasframe.attention import DynamicMultiheadAttention
from nasframe.bundle import ModelBundle, ModelEntry
from nasframe.dynamic import DynamicEmbedding, DynamicLayerNorm, DynamicLinear, DynamicRMSNorm
from nasframe.hookspecs import hookimpl


@hookimpl
def nasframe_dynamic_modules() -> dict[type[nn.Module], type]:
    return {
        nn.Linear: DynamicLinear,
        nn.Embedding: DynamicEmbedding,
        nn.LayerNorm: DynamicLayerNorm,
        nn.RMSNorm: DynamicRMSNorm,
        nn.MultiheadAttention: DynamicMultiheadAttention,
    }


@hookimpl
def nasframe_passthrough_modules() -> list[type[nn.Module]]:
    return [
        nn.ReLU,
        nn.ReLU6,
        nn.GELU,
        nn.SiLU,
        nn.Tanh,
        nn.Sigmoid,
        nn.LeakyReLU,
        nn.ELU,
        nn.SELU,
        nn.CELU,
        nn.Mish,
        nn.Hardswish,
        nn.Hardsigmoid,
        nn.Hardtanh,
        nn.Softplus,
        nn.Softsign,
        nn.Tanhshrink,
        nn.Identity,
        nn.Dropout,
        nn.AlphaDropout,
    ]


def _load_byte_mlp(steps: int, kwargs: dict[str, int], name: str, progress: bool) -> ModelBundle:
    """Train a built-in byte-level model on the calibration part of the built-in text.

    Training is deterministic (fixed seed, batches in order), so every run prunes the same
    model and a checkpointed search can resume against it.
    """
    from nasframe.lm import ByteTokenizer, token_batches
    from nasframe.models.byte_mlp import DEFAULT_BATCH_SIZE, DEFAULT_SEQ_LEN, train_byte_mlp
    from nasframe.text import stdlib_corpus

    tokenizer = ByteTokenizer()
    ids = tokenizer.encode(stdlib_corpus().calibration)
    batches = token_batches(ids, DEFAULT_SEQ_LEN, DEFAULT_BATCH_SIZE)
    model = train_byte_mlp(batches, steps, seed=0, progress=progress, model_kwargs=kwargs)
    return ModelBundle(model, tokenizer.encode, name, {"name": name, "kwargs": dict(kwargs)})


def _byte_mlp_architecture(**kwargs: Any) -> nn.Module:
    from nasframe.models.byte_mlp import ByteMLPLM

    return ByteMLPLM(**kwargs)


@hookimpl
def nasframe_models() -> dict[str, ModelEntry]:
    from nasframe.models.byte_mlp import DEFAULT_TRAIN_STEPS, TINY_MODEL_KWARGS, TINY_TRAIN_STEPS

    return {
        "byte-mlp": ModelEntry(
            description="byte-level MLP language model (560k params), trained on the built-in "
            "text at load time (about 20 s on 2 CPU cores)",
            load=lambda progress=True: _load_byte_mlp(
                DEFAULT_TRAIN_STEPS, {}, "byte-mlp", progress
            ),
            architecture=_byte_mlp_architecture,
        ),
        "byte-mlp-tiny": ModelEntry(
            description="smoke-test size of byte-mlp (33k params, a few seconds of training)",
            load=lambda progress=True: _load_byte_mlp(
                TINY_TRAIN_STEPS, TINY_MODEL_KWARGS, "byte-mlp-tiny", progress
            ),
            architecture=_byte_mlp_architecture,
        ),
    }

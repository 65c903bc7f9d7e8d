"""The app's own registrations: the built-in byte-mlp models, through the same hooks (and the
same ``nasframe`` entry-point group) a third-party plugin uses."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nasframe.app.hookspecs import hookimpl
from nasframe.app.model_registry import ModelBundle, ModelEntry

BYTE_MLP_NAMES = ("byte-mlp", "byte-mlp-tiny")


def _load_byte_mlp(
    steps: int,
    kwargs: dict[str, int],
    name: str,
    progress: bool,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> ModelBundle:
    """Train a built-in byte-level model on the calibration part of the built-in text, then
    put it on ``device`` with weights in ``dtype`` (float32 when None).

    Training is deterministic (fixed seed, batches in order, always float32 on the CPU), so
    every run prunes the same model on any device and a checkpointed search can resume
    against it.
    """
    from nasframe.app.byte_mlp import DEFAULT_BATCH_SIZE, DEFAULT_SEQ_LEN, train_byte_mlp
    from nasframe.app.lm import ByteTokenizer, token_batches
    from nasframe.app.text import stdlib_corpus

    tokenizer = ByteTokenizer()
    ids = tokenizer.encode(stdlib_corpus().calibration)
    batches = token_batches(ids, DEFAULT_SEQ_LEN, DEFAULT_BATCH_SIZE)
    model = train_byte_mlp(batches, steps, seed=0, progress=progress, model_kwargs=kwargs)
    model.to(device=device or torch.device("cpu"), dtype=dtype or torch.float32)
    return ModelBundle(model, tokenizer.encode, name, {"name": name, "kwargs": dict(kwargs)})


def _byte_mlp_architecture(**kwargs: Any) -> nn.Module:
    from nasframe.app.byte_mlp import ByteMLPLM

    return ByteMLPLM(**kwargs)


@hookimpl
def nasframe_architectures() -> dict[str, Any]:
    """``nasframe.load`` rebuilds a saved byte-mlp model from its name."""
    return dict.fromkeys(BYTE_MLP_NAMES, _byte_mlp_architecture)


@hookimpl
def nasframe_models() -> dict[str, ModelEntry]:
    from nasframe.app.byte_mlp import DEFAULT_TRAIN_STEPS, TINY_MODEL_KWARGS, TINY_TRAIN_STEPS

    return {
        "byte-mlp": ModelEntry(
            description="byte-level MLP language model (560k params), trained on the built-in "
            "text at load time (about 20 s on 2 CPU cores)",
            load=lambda progress=True, trust_remote_code=False, device=None, dtype=None: (
                _load_byte_mlp(DEFAULT_TRAIN_STEPS, {}, "byte-mlp", progress, device, dtype)
            ),
            architecture=_byte_mlp_architecture,
        ),
        "byte-mlp-tiny": ModelEntry(
            description="smoke-test size of byte-mlp (33k params, a few seconds of training)",
            load=lambda progress=True, trust_remote_code=False, device=None, dtype=None: (
                _load_byte_mlp(
                    TINY_TRAIN_STEPS, TINY_MODEL_KWARGS, "byte-mlp-tiny", progress, device, dtype
                )
            ),
            architecture=_byte_mlp_architecture,
        ),
    }

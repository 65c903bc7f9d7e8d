"""A small byte-level language model that the CLI prunes when no model is given.

It is a causal n-gram MLP: position ``t`` sums embeddings of the last ``context`` bytes
(``t, t-1, ...``), then pre-norm residual MLP blocks and a linear head predict byte ``t + 1``.
It is deliberately built only from ``nn.Embedding``, ``nn.Linear``, ``nn.LayerNorm``, ``nn.GELU``,
additions, and padding/slicing of the integer ids: the pruning core discovers which dimensions
are tied together (the residual width, each block's hidden width) from the ``torch.fx`` graph,
and concatenations, reshapes or other ops on float activations would tie or hide dimensions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from nasframe.app.lm import next_token_loss

# Measured on a 2-core CPU (torch 2.13, 2 threads) training on the calibration part of
# stdlib_corpus() (Python 3.11.7, ~1.5 MB) cut by token_batches(seq_len=64, batch_size=16):
# 400 steps take 17.7-20.6 s (44-51 ms/step) and reach an evaluation-part perplexity of 7.47,
# against 26.0 for a unigram byte model fitted on the calibration part.  300 steps gave 8.50,
# 200 steps 10.45.  lr=1e-2 gave 8.10 at 300 steps (3e-3: 8.50), too small a gain to
# leave the conventional default.
DEFAULT_SEQ_LEN = 64
DEFAULT_BATCH_SIZE = 16
DEFAULT_TRAIN_STEPS = 400
# A smoke-test size for quick end-to-end runs (`--model byte-mlp-tiny`, the CLI tests).
TINY_MODEL_KWARGS = {"context": 2, "dim": 32, "hidden": 64, "layers": 2}
TINY_TRAIN_STEPS = 60
DEFAULT_LR = 3e-3
WARMUP_FRACTION = 0.05
MIN_LR_FRACTION = 0.1
WEIGHT_DECAY = 0.01
GRAD_CLIP_NORM = 1.0


class Block(nn.Module):
    """Pre-norm residual MLP: ``x + fc2(act(fc1(norm(x))))``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.act(self.fc1(self.norm(x))))


class ByteMLPLM(nn.Module):
    """Causal byte n-gram MLP language model mapping ``(B, T)`` ids to ``(B, T, vocab)`` logits.

    Position ``t`` sees only tokens ``t - context + 1 .. t`` (ids before the start of the
    sequence read as 0), so its logits never depend on later tokens.
    """

    def __init__(
        self,
        context: int = 4,
        dim: int = 128,
        hidden: int = 512,
        layers: int = 3,
        vocab_size: int = 256,
    ) -> None:
        super().__init__()
        if context < 1 or dim < 1 or hidden < 1 or layers < 0 or vocab_size < 1:
            raise ValueError(
                "context, dim, hidden and vocab_size must be positive and layers non-negative, "
                f"got {context=}, {dim=}, {hidden=}, {layers=}, {vocab_size=}"
            )
        self.context = context
        self.vocab_size = vocab_size
        self.embeds = nn.ModuleList(nn.Embedding(vocab_size, dim) for _ in range(context))
        self.blocks = nn.ModuleList(Block(dim, hidden) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embeds[0](ids)
        for shift in range(1, self.context):
            # Position t reads token t - shift; padding on the left keeps the model causal.
            x = x + self.embeds[shift](F.pad(ids, (shift, 0))[:, :-shift])
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def train_byte_mlp(
    batches: Sequence[torch.Tensor],
    steps: int,
    seed: int = 0,
    lr: float = DEFAULT_LR,
    progress: bool = True,
    model_kwargs: Mapping[str, int] | None = None,
) -> ByteMLPLM:
    """Train a :class:`ByteMLPLM` (default size unless ``model_kwargs``) and return it in eval mode.

    Deterministic for a given seed: the seed fixes the initialisation, and batches are used in
    order, cycling when ``steps`` exceeds their number.  AdamW with a short linear warmup and a
    cosine decay to ``MIN_LR_FRACTION * lr`` trains this small model quickly without tuning.
    """
    if steps < 0:
        raise ValueError(f"steps must be non-negative, got {steps}")
    if steps > 0 and len(batches) == 0:
        raise ValueError("training needs at least one batch")
    torch.manual_seed(seed)
    model = ByteMLPLM(**(model_kwargs or {}))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=WEIGHT_DECAY)
    warmup = max(1, round(steps * WARMUP_FRACTION))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _lr_factor(step, steps, warmup)
    )
    model.train()
    bar = tqdm(range(steps), desc="training byte MLP", disable=not progress, leave=False)
    for step in bar:
        loss = next_token_loss(model, batches[step % len(batches)])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP_NORM)
        optimizer.step()
        schedule.step()
        if step % 10 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return model.eval()


def _lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to ``MIN_LR_FRACTION``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return MIN_LR_FRACTION + (1 - MIN_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress))

"""``GatedByteLM``: a tiny byte-level language model made of ``GatedMLP`` blocks.

Position ``t`` reads tokens ``t - context + 1 .. t`` through one embedding per offset (a
causal n-gram model, like nasframe's built-in ``byte-mlp``), then pre-norm residual
``GatedMLP`` blocks and a Linear head. ``load_gated_byte_lm`` trains it for a few seconds.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from nasframe.app.model_registry import ModelBundle
from nasframe_example_plugin.gated_mlp import GatedMLP

MODEL_NAME = "example-gated-lm"
TRAIN_STEPS = 80
SEQ_LEN = 64
BATCH_SIZE = 16


class GatedBlock(nn.Module):
    """``x + mlp(norm(x))``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(dim)
        self.mlp = GatedMLP(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


class GatedByteLM(nn.Module):
    """Maps ``(B, T)`` byte ids to ``(B, T, vocab_size)`` next-byte logits."""

    def __init__(
        self,
        context: int = 2,
        dim: int = 32,
        hidden: int = 96,
        layers: int = 2,
        vocab_size: int = 256,
    ) -> None:
        super().__init__()
        self.context = context
        self.embeds = nn.ModuleList(nn.Embedding(vocab_size, dim) for _ in range(context))
        self.blocks = nn.ModuleList(GatedBlock(dim, hidden) for _ in range(layers))
        self.norm = nn.RMSNorm(dim)
        self.head = nn.Linear(dim, vocab_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embeds[0](ids)
        for shift in range(1, self.context):
            x = x + self.embeds[shift](F.pad(ids, (shift, 0))[:, :-shift])
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def load_gated_byte_lm(progress: bool = True, trust_remote_code: bool = False) -> ModelBundle:
    """Train a default ``GatedByteLM`` on the built-in text (deterministic, a few seconds).

    ``ModelEntry.load`` is called as ``load(progress=..., trust_remote_code=...)``: show a
    progress bar only when asked; it runs no model-supplied code, so the flag changes nothing.
    """
    from nasframe.app.lm import ByteTokenizer, next_token_loss, token_batches
    from nasframe.app.text import stdlib_corpus

    tokenizer = ByteTokenizer()
    batches = token_batches(
        tokenizer.encode(stdlib_corpus().calibration), SEQ_LEN, BATCH_SIZE, TRAIN_STEPS
    )
    torch.manual_seed(0)
    model = GatedByteLM()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for step in tqdm(range(TRAIN_STEPS), desc=f"training {MODEL_NAME}", disable=not progress):
        loss = next_token_loss(model, batches[step % len(batches)])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return ModelBundle(
        model.eval(), tokenizer.encode, MODEL_NAME, {"name": MODEL_NAME, "kwargs": {}}
    )

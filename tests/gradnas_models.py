"""Small models for the gradnas tests, and a custom module type that gradnas cannot score.

Kept apart from ``tests/models.py`` so the gradnas tests only depend on what they build here.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from nasframe.hookspecs import hookimpl
from nasframe.space.dynamic import DynamicModule, SlotDim


class MLP(nn.Module):
    """``fc2(act(fc1(x)))``: one searchable hidden width, ``fc1.out_features``."""

    def __init__(self, d: int = 5, hidden: int = 7, out: int = 3, act: nn.Module | None = None):
        super().__init__()
        self.fc1 = nn.Linear(d, hidden)
        self.act = act if act is not None else nn.Tanh()
        self.fc2 = nn.Linear(hidden, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class AttentionLM(nn.Module):
    """Embedding, one multi-head self-attention with a residual, and a Linear head."""

    def __init__(
        self, vocab: int = 11, dim: int = 8, heads: int = 4, need_weights: bool = False
    ) -> None:
        super().__init__()
        self.need_weights = need_weights
        self.emb = nn.Embedding(vocab, dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.head = nn.Linear(dim, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids)
        attended, _ = self.attn(x, x, x, need_weights=self.need_weights)
        return self.head(x + attended)


class Projection(nn.Module):
    """A module type of our own: ``x @ weight.T`` with a raw parameter (no ``nn.Linear``)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / in_features**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


class DynamicProjection(DynamicModule):
    """Dynamic version of :class:`Projection`; deliberately has no gradnas setup."""

    SLOTS = {
        "in_features": (SlotDim("weight", 1),),
        "out_features": (SlotDim("weight", 0),),
    }
    TRACE_INPUTS = (("x", "in_features"),)
    TRACE_OUTPUT = "out_features"

    def __init__(self, module: Projection) -> None:
        super().__init__()
        self.weight = module.weight

    @classmethod
    def convert(cls, module: nn.Module) -> DynamicProjection:
        return cls(module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.sliced("weight"))

    def export(self) -> Projection:
        weight = self.sliced("weight")
        plain = Projection(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            plain.weight.copy_(weight)
        return plain


class ProjectionPlugin:
    """Registers :class:`DynamicProjection` (and nothing for gradnas)."""

    @hookimpl
    def nasframe_dynamic_modules(self) -> dict[type, type]:
        return {Projection: DynamicProjection}


class ChainWithProjections(nn.Module):
    """``projB(relu(projA(relu(fc1(relu(fc0(x)))))))``.

    ``fc0.out_features`` is consumed by a Linear (gradnas scores it); ``fc1.out_features`` and
    ``projA.out_features`` are consumed only by :class:`Projection` modules (no gradient setup).
    """

    def __init__(self, d: int = 4, h0: int = 6, h1: int = 5, h2: int = 4, out: int = 3) -> None:
        super().__init__()
        self.fc0 = nn.Linear(d, h0)
        self.fc1 = nn.Linear(h0, h1)
        self.projA = Projection(h1, h2)
        self.projB = Projection(h2, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc0(x))
        x = torch.relu(self.fc1(x))
        return self.projB(torch.relu(self.projA(x)))


def squared_error(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """``0.5 * sum((model(x) - target) ** 2)``: a loss whose gradient is easy to write down."""
    x, target = batch
    y = model(x)
    if y.dtype in (torch.float16, torch.bfloat16):
        y = y.float()  # half-precision outputs are compared in float32; float64 stays float64
    return 0.5 * ((y - target.to(y.dtype)) ** 2).sum()


def token_loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of predicting the next id (the loss shape a language model uses)."""
    logits = model(ids[:, :-1]).float()
    return F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())


def regression_batches(
    n: int, d: int = 5, out: int = 3, rows: int = 4, positions: int = 3, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` batches of ``(x, target)`` with a positions axis, so sums run over batch and time."""
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(rows, positions, d, generator=generator),
            torch.randn(rows, positions, out, generator=generator),
        )
        for _ in range(n)
    ]


def token_batches(n: int, vocab: int = 11, rows: int = 3, length: int = 6, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (rows, length), generator=generator) for _ in range(n)]


class CountingLoader:
    """An iterable of batches that counts how many were drawn from it (over all passes)."""

    def __init__(self, batches, repeat_forever: bool = False) -> None:
        self.batches = list(batches)
        self.repeat_forever = repeat_forever
        self.drawn = 0

    def __iter__(self):
        index = 0
        while self.repeat_forever or index < len(self.batches):
            batch = self.batches[index % len(self.batches)]
            self.drawn += 1
            index += 1
            yield batch


def no_hooks_left(model: nn.Module) -> bool:
    """Whether no module of ``model`` has a forward hook or forward pre-hook attached."""
    return all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())

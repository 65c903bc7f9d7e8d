"""Small model builders shared by the core tests.

Every builder seeds its own generator, so two calls with the same arguments build identical
models (tests compare a search on two fresh copies).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """``Linear -> GELU -> Linear -> ...``: every hidden width is its own hparam."""

    def __init__(self, in_features: int, widths: Sequence[int], out_features: int) -> None:
        super().__init__()
        sizes = [in_features, *widths, out_features]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:], strict=False))
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            if index:
                x = self.act(x)
            x = layer(x)
        return x


class Block(nn.Module):
    """Pre-norm residual MLP block: ``x + fc2(act(fc1(norm(x))))``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.act(self.fc1(self.norm(x))))


class ResidualMLP(nn.Module):
    """``inp -> blocks -> norm -> head``: the residual stream is ``inp.out_features``."""

    def __init__(self, in_features: int, dim: int, hiddens: Sequence[int], out: int) -> None:
        super().__init__()
        self.inp = nn.Linear(in_features, dim)
        self.blocks = nn.ModuleList(Block(dim, h) for h in hiddens)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


class RawResidualMLP(nn.Module):
    """Residual blocks applied straight to the input features (no embedding, no projection).

    The residual stream *is* the model input, so it must stay frozen at full width.
    """

    def __init__(self, dim: int, hiddens: Sequence[int], out: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, h) for h in hiddens)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


class TiedLM(nn.Module):
    """Embedding -> residual blocks -> norm -> head, the head sharing the embedding weight."""

    def __init__(self, vocab: int, dim: int, hiddens: Sequence[int], tied: bool = True) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList(Block(dim, h) for h in hiddens)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        if tied:
            self.head.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


class AttentionBlock(nn.Module):
    """Pre-norm transformer block with ``nn.MultiheadAttention`` (self-attention)."""

    def __init__(self, dim: int, heads: int, hidden: int, batch_first: bool = True) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=batch_first)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class TransformerLM(nn.Module):
    """Embedding -> attention blocks -> norm -> head (ids ``(batch, seq)``, batch first)."""

    def __init__(self, vocab: int, dim: int, heads: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList(AttentionBlock(dim, heads, hidden) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


class AttentionOnly(nn.Module):
    """``proj -> attention -> head``: heads and width both searchable, nothing else in the way."""

    def __init__(self, in_features: int, dim: int, heads: int, out: int, batch_first: bool):
        super().__init__()
        self.proj = nn.Linear(in_features, dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=batch_first)
        self.head = nn.Linear(dim, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x)
        return self.head(self.attn(h, h, h, need_weights=False)[0])


def seeded(builder, *args, seed: int = 0, **kwargs) -> nn.Module:
    """``builder(*args, **kwargs)`` built under a fixed torch seed, in eval mode."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = builder(*args, **kwargs)
        # Make biases and norm affines non-trivial, so pruning them changes the output.
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith("bias") or "norm" in name:
                    param.add_(0.1 * torch.randn_like(param))
    return model.eval()


def random_mlp(rng: random.Random, seed: int = 0) -> MLP:
    depth = rng.randint(1, 3)
    widths = [rng.randint(2, 12) for _ in range(depth)]
    return seeded(MLP, rng.randint(2, 6), widths, rng.randint(1, 4), seed=seed)


def random_residual(rng: random.Random, seed: int = 0) -> ResidualMLP:
    hiddens = [rng.randint(2, 10) for _ in range(rng.randint(1, 3))]
    return seeded(ResidualMLP, rng.randint(2, 5), rng.randint(2, 8), hiddens, 3, seed=seed)


def input_for(model: nn.Module, batch: int = 4, seed: int = 1) -> torch.Tensor:
    """A fixed random input that ``model`` (one of the builders above) accepts."""
    generator = torch.Generator().manual_seed(seed)
    if isinstance(model, TiedLM | TransformerLM):
        return torch.randint(0, model.emb.num_embeddings, (batch, 5), generator=generator)
    if isinstance(model, MLP):
        features = model.layers[0].in_features
    elif isinstance(model, ResidualMLP):
        features = model.inp.in_features
    elif isinstance(model, RawResidualMLP):
        features = model.head.in_features
    elif isinstance(model, AttentionOnly):
        features = model.proj.in_features
        return torch.randn(batch, 3, features, generator=generator)
    else:
        raise TypeError(type(model).__name__)
    return torch.randn(batch, features, generator=generator)

"""What llama.cpp computes, computed in torch on a nasframe model, so a GGUF export can be
checked against the real runtime: the greedy continuation of a prompt (with how far each
choice was from a tie) and perplexity over llama-perplexity's windows."""

from __future__ import annotations

import torch


def greedy(model: torch.nn.Module, ids: list[int], tokens: int = 24) -> tuple[list[int], float]:
    """nasframe's greedy continuation (full forward passes, no cache) and the smallest gap
    between the best and second-best logit along the way (how far from a tie it was)."""
    sequence, gap = list(ids), float("inf")
    with torch.no_grad():
        for _ in range(tokens):
            logits = model(torch.tensor([sequence])).logits[0, -1]
            best = logits.topk(2).values
            gap = min(gap, float(best[0] - best[1]))
            sequence.append(int(logits.argmax()))
    return sequence[len(ids) :], gap


def windowed_perplexity(model: torch.nn.Module, ids: list[int], context: int) -> float:
    """Perplexity as llama-perplexity computes it: windows of ``context`` tokens, each scoring
    its second half (the tokens after position ``context // 2``)."""
    first, total, count = context // 2, 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids) // context * context, context):
            window = torch.tensor([ids[start : start + context]])
            logprobs = model(window).logits[0].double().log_softmax(-1)
            targets = window[0, first + 1 :]
            total -= logprobs[first:-1].gather(1, targets[:, None]).sum().item()
            count += len(targets)
    return float(torch.tensor(total / count).exp())

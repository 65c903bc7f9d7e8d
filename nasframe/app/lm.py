"""Language-model plumbing shared by the CLI and the benchmarks.

Pruning a language model needs the same three things everywhere: text turned into token
batches, a next-token loss to calibrate on, and a perplexity to report.  Keeping them here means
the CLI, the benchmarks and the tests measure models the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from nasframe.errors import UserInputError


class ByteTokenizer:
    """Tokenize text as its UTF-8 bytes.

    Bytes need no vocabulary file and cover every string, which is what the built-in model and
    tests need; real models bring their own tokenizer.
    """

    vocab_size: int = 256

    def encode(self, text: str) -> list[int]:
        """Return the UTF-8 bytes of ``text`` as token ids in ``[0, 256)``."""
        return list(text.encode("utf-8"))

    def decode(self, token_ids: Sequence[int]) -> str:
        """Return the text of ``token_ids``, replacing byte sequences that are not valid UTF-8."""
        return bytes(token_ids).decode("utf-8", errors="replace")


def token_batches(
    token_ids: Sequence[int] | torch.Tensor,
    seq_len: int,
    batch_size: int,
    max_batches: int | None = None,
) -> list[torch.Tensor]:
    """Cut a token stream into ``(batch_size, seq_len + 1)`` int64 batches, in order.

    Each row is a contiguous window of ``seq_len + 1`` tokens (inputs plus the shifted targets),
    windows do not overlap, and consecutive windows fill a batch row by row.  The tail that does
    not fill a whole batch is dropped so every batch has the same shape, which keeps perplexities
    comparable between runs.  Nothing is random, so the same text always gives the same batches.
    At most ``max_batches`` batches are returned when it is given.
    """
    if seq_len < 1 or batch_size < 1:
        raise UserInputError(
            f"seq_len and batch_size must be at least 1 (got {seq_len} and {batch_size}); "
            "pass positive values."
        )
    if max_batches is not None and max_batches < 1:
        raise UserInputError(
            f"max_batches must be at least 1 when given (got {max_batches}); pass a positive "
            "value or None for all batches."
        )
    tokens = torch.as_tensor(token_ids, dtype=torch.long).reshape(-1)
    window = seq_len + 1
    per_batch = batch_size * window
    n_batches = tokens.numel() // per_batch
    if n_batches == 0:
        raise UserInputError(
            f"The text has {tokens.numel()} tokens but one batch of {batch_size} sequences of "
            f"{seq_len} + 1 tokens needs {per_batch}; use a longer text or a smaller sequence "
            "length or batch size."
        )
    if max_batches is not None:
        n_batches = min(n_batches, max_batches)
    # clone() so the batches never alias a tensor the caller may modify later.
    stacked = tokens[: n_batches * per_batch].clone().view(n_batches, batch_size, window)
    return list(stacked.unbind(0))


def next_token_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Return the mean cross-entropy of predicting ``batch[:, 1:]`` from ``batch[:, :-1]``.

    The model must map ``(B, T)`` token ids to ``(B, T, V)`` logits, returned directly, as the
    ``logits`` attribute of an output object (Hugging Face style) or as the first element of a
    tuple.  The batch is moved to the model's device, and the logits are upcast to float32 so
    half-precision models do not lose accuracy in the softmax.
    """
    batch = batch.to(model_device(model))
    inputs, targets = batch[:, :-1], batch[:, 1:]
    logits = model_logits(model(inputs))
    if logits.dim() != 3 or logits.shape[:2] != inputs.shape:
        raise ValueError(
            f"expected logits of shape (B, T, vocab) = ({inputs.shape[0]}, {inputs.shape[1]}, "
            f"vocab) for inputs of shape {tuple(inputs.shape)}, got {tuple(logits.shape)}"
        )
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())


def perplexity(
    model: nn.Module, batches: Sequence[torch.Tensor], progress: str | None = None
) -> float:
    """Return ``exp`` of the token-weighted mean next-token loss over ``batches``.

    The model is evaluated in eval mode without gradients and put back into the training mode it
    was in, so measuring in the middle of a search or a training loop changes nothing.
    ``progress`` is a label for a progress bar (none when None): a real model takes seconds
    per batch on a CPU.
    """
    if len(batches) == 0:
        raise ValueError("perplexity needs at least one batch")
    was_training = model.training
    model.eval()
    total_loss = 0.0
    total_tokens = 0
    try:
        with torch.no_grad():
            for batch in tqdm(batches, desc=progress, disable=progress is None, leave=False):
                n_targets = batch[:, 1:].numel()
                total_loss += next_token_loss(model, batch).item() * n_targets
                total_tokens += n_targets
    finally:
        model.train(was_training)
    return math.exp(total_loss / total_tokens)


def model_logits(output: object) -> torch.Tensor:
    """Extract the logits tensor from the output conventions models commonly use."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(
        "the model must return logits as a tensor, an object with a .logits tensor or a tuple "
        f"whose first element is the logits; it returned {type(output).__name__}"
    )


def model_device(model: nn.Module) -> torch.device:
    """Return the device of the model's first parameter or buffer (CPU when it has none)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")

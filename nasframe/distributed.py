"""Data-parallel scoring on torch.distributed: every rank scores its share of the data.

Nothing here starts processes: ``torchrun`` (or any launcher that sets ``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) does, and :func:`init_from_environment`
joins the group. Every rank then runs the same search on the same model: batch ``i`` is
scored by rank ``i % world_size``, the sums of squared mask gradients (and measured losses)
are all-reduced, so every rank holds identical scores, takes identical decisions and reaches
the identical config. Only rank 0 writes files. A rank that fails leaves the others waiting in
a collective, which ends after the group's timeout with an error instead of a hang.

Without a process group every helper is the single-process identity, so the code that uses
them needs no branches.
"""

from __future__ import annotations

import datetime
import math
import os
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import nn

from nasframe.errors import UserInputError

DEFAULT_TIMEOUT_S = 600.0


def is_active() -> bool:
    """Whether this process belongs to an initialised group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_active() else 0


def world_size() -> int:
    return dist.get_world_size() if is_active() else 1


def is_main() -> bool:
    """Rank 0, the one rank that writes files and prints (also true without a group)."""
    return rank() == 0


def init_from_environment(timeout_s: float | None = None, backend: str | None = None) -> bool:
    """Join the process group a launcher described in the environment; False if none.

    ``backend`` None: Gloo on CPU, NCCL when CUDA is available (a job on the CPU of a CUDA
    machine passes ``"gloo"``). ``timeout_s`` (default
    ``NASFRAME_DIST_TIMEOUT`` or 600 s) bounds every collective: a rank that died makes the
    others fail after it rather than wait forever.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if dist.is_initialized():
        return True
    if timeout_s is None:
        timeout_s = timeout_from_environment()
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return True


def timeout_from_environment() -> float:
    """``NASFRAME_DIST_TIMEOUT`` in seconds (default 600); a clear error when malformed."""
    text = os.environ.get("NASFRAME_DIST_TIMEOUT", str(DEFAULT_TIMEOUT_S))
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise UserInputError(
            f"NASFRAME_DIST_TIMEOUT={text!r} is not a positive number of seconds; set it to "
            "e.g. 600 or unset it."
        )
    return value


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def mine(index: int) -> bool:
    """Whether item ``index`` of a sequence every rank iterates is this rank's to process."""
    return index % world_size() == rank()


def shard(items: Sequence) -> list:
    """This rank's items: every ``world_size``-th, starting at its rank."""
    return list(items[rank() :: world_size()])


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over the ranks, in place and returned (itself without a group).

    The one all-reduce: any device. NCCL reduces only GPU tensors, so there a CPU tensor
    travels through the current GPU and back.
    """
    if not is_active():
        return tensor
    if dist.get_backend() == "nccl" and tensor.device.type != "cuda":
        on_device = tensor.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(on_device, op=dist.ReduceOp.SUM)
        tensor.copy_(on_device.cpu())
        return tensor
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def sum_over_ranks(values: Sequence[float]) -> list[float]:
    """Each Python number summed over the ranks, in float64 (losses, token counts)."""
    return all_reduce_sum(torch.tensor(list(values), dtype=torch.float64)).tolist()


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` (or ``DataParallel``) wrapper."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    while isinstance(model, wrappers):
        model = model.module
    return model

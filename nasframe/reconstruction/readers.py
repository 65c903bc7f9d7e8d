"""Repair the readers of a pruned residual stream: the maps that read a norm's output.

When the hidden size is pruned, every map that reads the residual stream (a layer's query,
key and value projections, its FFN's input projections) loses input columns, and the norm in
front of it now normalises over the kept channels only: its output is not the dense output's
kept part but that part rescaled, token by token. Dense statistics of the reader's own input
do not describe that input, which is why one-shot lsq leaves such maps alone
(:mod:`nasframe.reconstruction.targets`).

The pruned input can still be computed from the dense model: it is the module that produced
the reader's input (its *producer*, found by identity on one batch: the norm), run at the
pruned size on the kept channels of its own dense input. So, on the dense model, every
batch gives paired rows: ``x``, what the dense reader reads, and ``z``, what the pruned
reader will read, and the kept columns are refitted so the pruned reader's output matches
the dense one:

    ``W'_K = (W C_xz + lambda W_K)(C_zz + lambda I)^-1``

with ``lambda = ridge * mean(diag C_zz)`` (the one-shot refit's damping). A reader with a
bias is fitted on centred moments and gets ``b' = b + W mu_x - W'_K mu_z``; one without is
fitted on raw moments and stays without (no parameter is added, so the bias reserve of a
search does not change). A reader whose input is not a producer's output (a residual sum,
an embedding's output) keeps the reason it was skipped for.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import nasframe.distributed as distributed
from nasframe.reconstruction.refit import damped_refit
from nasframe.reconstruction.stats import chunk_by_bytes
from nasframe.reconstruction.targets import Target
from nasframe.reconstruction.updates import Update
from nasframe.space.search_space import SearchSpace

_FLOAT64_BYTES = 8
#: How many recent producer outputs the discovery keeps: a reader reads the norm that ran
#: just before it (two for a norm whose output two blocks read, as in a parallel residual).
_RECENT = 4


class PairedStats:
    """Sums over paired rows of a producer's dense output ``x`` and pruned output ``z``."""

    def __init__(self, features: int, kept: int) -> None:
        self.rows = torch.zeros(1, dtype=torch.float64)
        self.sum_x = torch.zeros(features, dtype=torch.float64)
        self.sum_z = torch.zeros(kept, dtype=torch.float64)
        self.cross = torch.zeros(features, kept, dtype=torch.float64)  # sum x z^T
        self.gram_z = torch.zeros(kept, kept, dtype=torch.float64)  # sum z z^T

    @staticmethod
    def bytes_needed(features: int, kept: int) -> int:
        return _FLOAT64_BYTES * (1 + features + kept + features * kept + kept * kept)

    def add(self, x: torch.Tensor, z: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1])
        z = z.detach().reshape(-1, z.shape[-1])
        if x.shape[0] != z.shape[0] or z.shape[1] != self.sum_z.numel():
            raise ValueError(
                f"a producer's dense ({tuple(x.shape)}) and pruned ({tuple(z.shape)}) outputs "
                "do not pair up row by row"
            )
        wide = torch.promote_types(x.dtype, torch.float32)
        x, z = x.to(wide), z.to(wide)
        self.rows += x.shape[0]
        self.sum_x += x.sum(dim=0, dtype=torch.float64).cpu()
        self.sum_z += z.sum(dim=0, dtype=torch.float64).cpu()
        self.cross += (x.T @ z).to(torch.float64).cpu()
        self.gram_z += (z.T @ z).to(torch.float64).cpu()

    def sum_over_ranks(self) -> None:
        for tensor in (self.rows, self.sum_x, self.sum_z, self.cross, self.gram_z):
            distributed.all_reduce_sum(tensor)

    @property
    def count(self) -> int:
        return int(self.rows.item())


@dataclass
class Producer:
    """A module whose output some readers read, run again at the pruned size for ``z``."""

    name: str
    module: nn.Module
    kept: torch.Tensor  # the kept channels of its input and output
    pruned: dict[str, int]  # the selected sizes of the hparams that size it
    readers: list[Target] = field(default_factory=list)


def refit_reader(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stats: PairedStats,
    kept: torch.Tensor,
    ridge: float,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """New kept columns (and bias, when ``bias`` is given) of a reader, float64: see the
    module docstring. ``weight`` is the dense ``(out, in)`` matrix, ``bias`` its bias and
    ``kept`` the input channels the pruned reader keeps (the order of ``z``)."""
    n = stats.count
    mean_x, mean_z = stats.sum_x / n, stats.sum_z / n
    cross, gram = stats.cross / n, stats.gram_z / n
    if bias is not None:
        cross = cross - torch.outer(mean_x, mean_z)
        gram = gram - torch.outer(mean_z, mean_z)
    device = weight.device
    cross, gram = cross.to(device), gram.to(device)
    columns = damped_refit(weight, cross, gram, kept.to(device), ridge)
    if bias is None:
        return columns, None
    return columns, bias + weight @ mean_x.to(device) - columns @ mean_z.to(device)


def repair_readers(
    space: SearchSpace,
    readers: Sequence[Target],
    batches: Sequence[Any],
    forward: Callable[[nn.Module, Any], Any],
    ridge: float,
    progress: Callable[..., Any],
    max_stats_bytes: int,
) -> tuple[list[tuple[Target, Update]], dict[str, str]]:
    """The refits of ``readers`` (measured on the dense model, the space at its full config;
    applied by the caller once every statistic is measured), and the readers left alone with
    the reason. Call with the pruned config selected (and the model in eval mode); it is
    selected again on return."""
    if not readers:
        return [], {}
    selected = {name: hparam.active for name, hparam in space.all_hparams.items()}
    producers, unpaired = _find_producers(space, readers, batches, forward, selected)
    # one set of sums per producer, shared by its readers
    needs = [PairedStats.bytes_needed(_width(p), len(p.kept)) for p in producers]
    updates: list[tuple[Target, Update]] = []
    skipped: dict[str, str] = dict(unpaired)
    chunks = chunk_by_bytes(needs, max_stats_bytes)
    with space.selected(space.max_config()), torch.no_grad():
        for number, chunk in enumerate(chunks, 1):
            members = [producers[i] for i in chunk]
            desc = "reconstruct readers" + (f" {number}/{len(chunks)}" if len(chunks) > 1 else "")
            stats = _measure(space, members, batches, forward, progress, desc)
            for producer, stat in zip(members, stats, strict=True):
                for reader in producer.readers:
                    if stat.count == 0:
                        skipped[reader.name] = "it never ran on the calibration batches"
                    else:
                        updates.append((reader, _solve(reader, stat, ridge)))
    return updates, skipped


def _width(producer: Producer) -> int:
    return producer.readers[0].in_features


def _find_producers(
    space: SearchSpace,
    readers: Sequence[Target],
    batches: Sequence[Any],
    forward: Callable[[nn.Module, Any], Any],
    selected: dict[str, int],
) -> tuple[list[Producer], dict[str, str]]:
    """Which module produced each reader's input, by identity on the first batch (every rank
    runs it, so all agree); readers without one come back with the reason."""
    width_of = {reader.in_features for reader in readers}
    rescaled = {
        name
        for reader in readers
        for name, full in reader.input_sizes.items()
        if selected.get(name, full) < full
    }
    candidates = [
        (name, module)
        for name, module in space.dynamic_modules()
        if any(hparam.name in rescaled for hparam in _hparams_of(module))
    ]
    # (output, producer name) of the last few producers to run; only names are kept beyond
    # that, so the discovery holds a few activations, not one per reader.
    recent: collections.deque[tuple[torch.Tensor, str]] = collections.deque(maxlen=_RECENT)
    found: dict[int, str] = {}

    def record(name: str) -> Callable[..., None]:
        def hook(_: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
            source = args[0] if args else next(iter(kwargs.values()), None)
            if (
                isinstance(out, torch.Tensor)
                and isinstance(source, torch.Tensor)
                and source.is_floating_point()
                and source.shape == out.shape
                and out.shape[-1] in width_of
            ):
                recent.append((out, name))

        return hook

    def read(index: int) -> Callable[..., None]:
        def hook(_: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            x = args[0] if args else next(iter(kwargs.values()), None)
            for out, name in recent:
                if _same_tensor(out, x):
                    found.setdefault(index, name)
                    return

        return hook

    handles = [
        module.register_forward_hook(record(name), with_kwargs=True) for name, module in candidates
    ]
    handles += [
        reader.input_module.register_forward_pre_hook(read(index), with_kwargs=True)
        for index, reader in enumerate(readers)
    ]
    try:
        with space.selected(space.max_config()), torch.no_grad():
            if batches:
                forward(space.model, batches[0])
    finally:
        for handle in handles:
            handle.remove()
        recent.clear()
    modules = dict(candidates)
    producers: dict[str, Producer] = {}
    unpaired: dict[str, str] = {}
    for index, reader in enumerate(readers):
        if index not in found:
            unpaired[reader.name] = (
                "its input is the pruned residual stream and it does not read a module's output "
                "that can be run at the pruned size (a norm's), so the pruned input cannot be "
                "computed from the dense model"
            )
            continue
        name = found[index]
        module = modules[name]
        producer = producers.get(name)
        if producer is None:
            pruned = {
                hparam.name: selected[hparam.name]
                for hparam in _hparams_of(module)
                if hparam.name in selected
            }
            producer = producers[name] = Producer(name, module, reader.kept, pruned)
        if not torch.equal(producer.kept, reader.kept):
            unpaired[reader.name] = (
                f"its kept input channels differ from those {name} keeps, so its pruned input "
                "is not that module's pruned output"
            )
            continue
        producer.readers.append(reader)
    return [p for p in producers.values() if p.readers], unpaired


def _same_tensor(a: torch.Tensor, b: Any) -> bool:
    """``b`` is ``a`` or a view of all of it (``h[:, slice(0, None)]``, as a causal LM's head
    reads the final norm's output when it keeps every position's logits)."""
    return a is b or (
        isinstance(b, torch.Tensor)
        and b.shape == a.shape
        and b.stride() == a.stride()
        and b.data_ptr() == a.data_ptr()
        and b.dtype == a.dtype
    )


def _hparams_of(module: nn.Module) -> list[Any]:
    found = (module.get_hparam(slot) for slot in module.slots)
    return [hparam for hparam in found if hparam is not None]


def _measure(
    space: SearchSpace,
    producers: Sequence[Producer],
    batches: Sequence[Any],
    forward: Callable[[nn.Module, Any], Any],
    progress: Callable[..., Any],
    desc: str,
) -> list[PairedStats]:
    """Paired sums of every producer's dense output and pruned output over this rank's
    batches, summed over the ranks."""
    stats = [PairedStats(_width(p), len(p.kept)) for p in producers]

    def paired(producer: Producer, stat: PairedStats) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any):
            source = args[0] if args else next(iter(kwargs.values()))
            narrow = source.index_select(-1, producer.kept.to(source.device))
            with space.selected(producer.pruned):
                if args:
                    z = module.forward(narrow, *args[1:], **kwargs)
                else:
                    z = module.forward(**{**kwargs, next(iter(kwargs)): narrow})
            stat.add(out, z)

        return hook

    handles = [
        p.module.register_forward_hook(paired(p, s), with_kwargs=True)
        for p, s in zip(producers, stats, strict=True)
    ]
    try:
        total = len(batches)
        for index, batch in enumerate(progress(batches, desc=desc, total=total)):
            if distributed.mine(index):
                forward(space.model, batch)
    finally:
        for handle in handles:
            handle.remove()
    for stat in stats:
        stat.sum_over_ranks()
    return stats


def _solve(reader: Target, stats: PairedStats, ridge: float) -> Update:
    weight = reader.matrix().detach().to(torch.float64)
    bias = None if reader.bias is None else reader.bias.detach().to(torch.float64)
    columns, new_bias = refit_reader(weight, bias, stats, reader.kept, ridge)
    return Update(
        columns.to(reader.weight.dtype).cpu(), None if new_bias is None else new_bias.cpu()
    )

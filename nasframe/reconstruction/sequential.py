"""Sequential least squares: refit each layer's maps on the pruned model's own inputs.

One-shot least squares (:mod:`nasframe.reconstruction.reconstruct`) measures every map's
inputs in the *dense* model. In the pruned model a map's inputs are not those: every earlier
layer was pruned (and repaired) too, and its error reaches the later layers. The sequential
repair walks the layer stack in order, as SparseGPT-style repairs do:

1. One forward of the pruned model per calibration batch records what it calls every kept
   layer with (the other arguments: masks, positions, rotary tables; key/value caches
   dropped) and the hidden states entering its first kept layer.
2. For each kept layer and each map in it, in the order the maps run: the layer, as
   repaired so far, runs on the pruned hidden states at the selected config but with the
   hparams indexing this map's input at full size, so the map's removed inputs are computed
   too, from the pruned model's own hidden states. The map is refitted on those statistics
   exactly as one-shot lsq refits it on the dense ones (the same
   :class:`~nasframe.reconstruction.stats.LinearStats` and solve: the kept input is a
   slice of the full one). Then the repaired layer runs once more to give the next layer its input.

The first layer's hidden states are the same in both models (unless the hidden size is
pruned), so a model whose first layer alone is pruned gets the one-shot refit. Where the
hidden size is pruned, the readers of the residual stream are refitted first, one-shot on
paired inputs (:mod:`nasframe.reconstruction.readers`), and the walk runs them repaired. A
model without a layer stack (no :class:`~nasframe.modules.depth.DynamicLayerList`) is
repaired one-shot; the report says so.

Fitting each map to the *dense* model's output instead (``W'_K z ~ W x_dense``, so that a map
also undoes the error of the layers before it) was measured too and did much worse on
SmolLM2-135M (validation perplexity 3.3x dense against 2.1x for one-shot lsq at 80% params,
``docs/results.md``): a linear map cannot undo that error, and trying over-fits it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

import nasframe.distributed as distributed
from nasframe.modules.depth import DynamicLayerList
from nasframe.reconstruction.layer_calls import captured_inputs, record_batches
from nasframe.reconstruction.stats import LinearStats
from nasframe.reconstruction.targets import Target
from nasframe.space.search_space import SearchSpace

#: ``solve(target, stats)``: refit one map on its input statistics and write the refit into
#: the model; given by :func:`nasframe.reconstruction.reconstruct` (the one-shot lsq solve).
SolveMap = Callable[[Target, LinearStats], None]


def walk_layers(
    space: SearchSpace,
    stack: DynamicLayerList,
    targets: Sequence[Target],
    batches: Sequence[Any],
    forward: Callable[[nn.Module, Any], Any],
    solve: SolveMap,
    progress: Callable[..., Any],
) -> dict[str, str]:
    """Refit ``targets`` (all inside ``stack``'s layers) layer by layer on the pruned
    model's own hidden states, each refit applied before the maps after it run.

    A map's statistics are those of its full-width input as the pruned model computes it:
    the layer runs on the pruned hidden states at the selected config except that the
    hparams indexing this map's input are at full size (so the removed units are computed
    too, from the same pruned inputs). Within a layer the maps are refitted in the order
    they run (an FFN's input depends on the attention output before it): one call of the
    layer per map and batch, and one more with the repaired layer for the next layer's
    input. Returns the targets left alone, with the reason (a map that never ran). Raises
    :class:`~nasframe.reconstruction.layer_calls.Unsupported` before changing any weight
    when the stack cannot be run layer by layer.
    """
    config = space.config()
    layers = stack.all_layers()
    owner = _layer_of(layers)
    by_layer: dict[int, list[Target]] = {}
    for target in targets:
        by_layer.setdefault(owner[id(target.module)], []).append(target)
    mine = [batch for index, batch in enumerate(batches) if distributed.mine(index)]
    states = record_batches(space, stack, mine, forward, config)
    with space.selected(config):
        kept = {id(layer) for layer in stack.kept_layers()}
    skipped: dict[str, str] = {}
    for index in progress(range(len(layers)), desc="reconstruct sequential"):
        layer, members = layers[index], by_layer.get(index, [])
        if id(layer) not in kept:  # dropped by the depth: it never runs
            continue
        order: list[int] = []  # target positions in the order they run
        if members and states:
            with space.selected(config), captured_inputs(members, order):
                states[0].calls[index](layer, states[0].pruned)
        # Registration order for maps that did not run on this rank's first batch (or a
        # rank with no batch), so every rank all-reduces the same statistics in turn.
        ran = list(dict.fromkeys(order))
        for position in [*ran, *(p for p in range(len(members)) if p not in ran)]:
            target = members[position]
            widened = {n: full for n, full in target.input_sizes.items() if n in config}
            wide = {**config, **widened}
            stat = LinearStats(target.in_features, second_moment=True)
            for state in states:
                # the layer as repaired so far, with this map's input at full width
                with space.selected(wide), captured_inputs([target]) as captured:
                    state.calls[index](layer, state.pruned)
                if 0 in captured:
                    stat.add(captured[0])
            stat.sum_over_ranks()
            if stat.count == 0:
                skipped[target.name] = "it never ran on the calibration batches"
            else:
                solve(target, stat)
        with space.selected(config):  # the repaired layer gives the next one its input
            for state in states:
                state.pruned = state.calls[index](layer, state.pruned)
    return skipped


def inside_stack(stack: DynamicLayerList, targets: Sequence[Target]) -> list[Target]:
    """The targets whose module lives in one of ``stack``'s layers."""
    owner = _layer_of(stack.all_layers())
    return [target for target in targets if id(target.module) in owner]


def _layer_of(layers: Sequence[nn.Module]) -> dict[int, int]:
    """Module id -> index of the layer that contains it."""
    return {id(module): index for index, layer in enumerate(layers) for module in layer.modules()}

"""The search space of a recognised decoder, as a :class:`TieAnalysis` (via ``TieBuilder``).

- ``{base}hidden_size``: the residual stream — every embedding of the hidden width, every
  norm over it, every projection's input, the attention and MLP output projections and the
  heads' inputs. Its writers (where gradnas masks it) are the embeddings and each block's
  output, or the sandwich norm a block's output passes through.
- ``{layer}.{mlp}intermediate_size``: the FFN width (gate/up or fc1 outputs, down input).
- ``{layer}.{attention}.num_key_value_heads`` and ``.query_heads_per_group``: whole KV groups
  and query heads within every group; the head dimension is never pruned. An attention with
  a norm over all heads at once (OLMo 2's q_norm/k_norm) keeps its heads whole: removing one
  would change how the others are normalised, so no pruned result could equal the model.
- ``{base}{stack}.depth``: whole layers.
"""

from __future__ import annotations

import logging
import math

from torch import nn

from nasframe.modules.depth import DynamicLayerList
from nasframe.modules.embedding import DynamicEmbedding
from nasframe.modules.linear import DynamicLinear
from nasframe.modules.norm import DynamicLayerNorm, DynamicRMSNorm
from nasframe.space.ties import TieAnalysis
from nasframe_transformers.families.decoder.structure import DecoderLayout
from nasframe_transformers.families.tie_builder import TieBuilder
from nasframe_transformers.modules.decoder_attention import (
    decoder_attention_class,
    head_count_attributes,
)
from nasframe_transformers.modules.fused import DynamicPackedLinear
from nasframe_transformers.modules.swapped import (
    SwappedEmbedding,
    SwappedFreeNorm,
    SwappedNorm,
    swapped_class,
)

LOG = logging.getLogger(__name__)


def norm_converter(module: nn.Module) -> tuple[type, str]:
    """The dynamic class of a norm over the hidden size, and its slot."""
    if type(module) is nn.LayerNorm:
        return DynamicLayerNorm, "normalized_shape"
    if type(module) is nn.RMSNorm:
        return DynamicRMSNorm, "normalized_shape"
    if not any(True for _ in module.parameters()):
        return swapped_class(SwappedFreeNorm, type(module)), "hidden_size"
    return swapped_class(SwappedNorm, type(module)), "hidden_size"


def embedding_converter(module: nn.Module) -> type:
    """``DynamicEmbedding`` for a plain embedding, else one that runs the subclass's forward
    (Gemma's scaled embedding, OPT's learned positions)."""
    if type(module) is nn.Embedding:
        return DynamicEmbedding
    return swapped_class(SwappedEmbedding, type(module))


def head_counts_divide(layout: DecoderLayout) -> int:
    """The least common multiple of every query-head count pruning can reach (a plain config
    needs the hidden size to be a multiple of the number of heads)."""
    multiple = 1
    for layer in layout.layers:
        if not layer.attention.heads_prunable:
            multiple = math.lcm(multiple, layer.attention.heads)
            continue
        per_group = layer.attention.heads // layer.attention.kv_heads
        for groups in range(1, layer.attention.kv_heads + 1):
            for heads in range(1, per_group + 1):
                multiple = math.lcm(multiple, groups * heads)
    return multiple


def log_whole_heads(model: nn.Module, layout: DecoderLayout, whole: list[str]) -> None:
    """One log line saying which attentions keep their heads whole, and why."""
    norms = "/".join(layout.layers[0].attention.head_norms)
    where = whole[0] if len(whole) == 1 else f"{whole[0]} and {len(whole) - 1} more"
    LOG.warning(
        "nasframe keeps every attention head of this %s whole (%s): its %s normalise all "
        "heads together, so removing one would change the others; the hidden size, FFN width "
        "and depth are still searched.",
        type(model).__name__,
        where,
        norms,
    )


def describe_decoder(
    model: nn.Module, layout: DecoderLayout, post_norms: dict[str, str], head_dim_free: bool
) -> TieAnalysis:
    """The tied slots of ``model``; ``head_dim_free`` says whether its config can state a
    head dimension apart from hidden_size / num_attention_heads (else a uniform search keeps
    the hidden size and head counts whole, as GPT-2's does)."""
    build = TieBuilder()
    groups: list[list[tuple[str, str]]] = []
    names: list[str] = []
    frozen: list[tuple[str, str]] = []
    for path in layout.embeddings:
        build.hidden_slots(
            path, embedding_converter(model.get_submodule(path)), "embedding_dim", writes=True
        )
    stack = build.use(layout.stack_path, DynamicLayerList)
    head_hparams: list[str] = []
    whole: list[str] = []
    for index, layer in enumerate(layout.layers):
        path = f"{stack}.{index}"
        attention = layer.attention
        module = model.get_submodule(f"{path}.{attention.path}")
        roles = tuple(sorted(attention.roles.items()))
        fused = tuple(attention.fused.items())
        has_config = "config" in vars(module)
        converter = decoder_attention_class(
            type(module),
            roles,
            head_count_attributes(module),
            fused,
            has_config,
            attention.per_head,
        )
        attn = f"{path}.{attention.path}"
        build.hidden_slots(attn, converter, "hidden_size", writes="attention" not in post_norms)
        inputs = [
            build.use(
                f"{path}.{name}",
                DynamicPackedLinear if name in layer.mlp_packed else DynamicLinear,
            )
            for name in layer.mlp_inputs
        ]
        down = build.hidden_slots(
            f"{path}.{layer.mlp_output}",
            DynamicLinear,
            "out_features",
            writes="mlp" not in post_norms,
        )
        build.hidden += [(name, "in_features") for name in inputs]
        for norm in layer.norms:
            converter, slot = norm_converter(model.get_submodule(f"{path}.{norm}"))
            writes = norm in post_norms.values()
            build.hidden_slots(f"{path}.{norm}", converter, slot, writes=writes)
        groups.append([*((name, "out_features") for name in inputs), (down, "in_features")])
        names.append(f"{path}.{layer.mlp_container}intermediate_size")
        if attention.heads_prunable:
            groups += [[(attn, "num_key_value_heads")], [(attn, "query_heads_per_group")]]
            heads = [f"{attn}.num_key_value_heads", f"{attn}.query_heads_per_group"]
            names += heads
            head_hparams += heads
        else:
            whole.append(attn)
    for path in layout.final_norms:
        converter, slot = norm_converter(model.get_submodule(path))
        build.hidden_slots(path, converter, slot)
    for path in layout.heads:
        build.hidden_slots(path, DynamicLinear, "in_features")
        frozen.append((path, "out_features"))
    if whole:
        log_whole_heads(model, layout, whole)
    hidden = f"{layout.base}hidden_size"
    if head_dim_free:
        extra = {"uniform_multiples": {hidden: head_counts_divide(layout)}}
    else:
        extra = {"uniform_fixed": [hidden, *head_hparams]}
    return build.analysis(groups, names, frozen, layout.base, stack, **extra)

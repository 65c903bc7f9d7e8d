"""The search space of GPT-2 (transformers' ``GPT2LMHeadModel`` and ``GPT2Model``), described
directly (transformers 5 models are not torch.fx-traceable).

- ``transformer.hidden_size``: the residual stream — ``wte``, ``wpe``, every LayerNorm, the
  inputs of ``c_attn`` and ``c_fc``, the outputs of both ``c_proj`` and the LM head's input.
  The LM head shares ``wte``'s weight (one parameter, one hparam), so it stays tied. Its
  writes are ``wte``, ``wpe``, each attention and each FFN ``c_proj``, where gradnas masks it.
- ``transformer.h.{i}.mlp.n_inner``: the FFN width (``c_fc`` output, ``c_proj`` input);
  gradnas masks it on ``c_proj``'s input, after the activation.
- ``transformer.h.{i}.attn.num_heads``: whole heads. ``c_attn``'s fused output holds q, k
  and v one after another, each with every head, so a head indexes three ``head_dim`` blocks
  of its columns. The head dimension is never pruned, and each attention keeps the scaling
  it was built with. gradnas masks a head's output where it enters ``c_proj``.
- ``transformer.h.depth``: whole blocks, gated on their residual contribution.

A linear head on top (a classifier's ``score``) reads the hidden size like the LM head. A
model with cross-attention or another kind of head is not this family's (nasframe then falls
back to tracing, which transformers 5 models do not support).

What a plain transformers config can express: GPT-2 derives ``head_dim = n_embd // n_head``
and sizes its attention ``n_embd`` wide, so a pruned model only has a plain config when
every layer keeps the same ``n_head`` and ``n_inner`` *and* ``n_embd == n_head * head_dim``
still holds with the original head dimension (prune the hidden size and the heads together,
by whole heads, or neither). Otherwise :func:`config_sizes` says why and
``save_pretrained_pruned`` refuses; ``nasframe.save``/``nasframe.load`` hold any shape. With
``scale_attn_by_inverse_layer_idx`` a layer's scores are divided by (its index + 1): exported
layers keep their original ``scaling`` while their ``layer_idx`` (the cache slot) is
renumbered, and a plain config is refused when that would rescale a layer.

A ``--uniform`` search is meant to end in a plain config, so it leaves the hidden size and
the heads whole (their hparams are independent, so nothing keeps them in step), and the depth
too under ``scale_attn_by_inverse_layer_idx``; it prunes the FFN width and otherwise depth.
"""

from __future__ import annotations

import sys
from typing import Any

from torch import nn

from nasframe.modules.depth import DynamicLayerList
from nasframe.modules.embedding import DynamicEmbedding
from nasframe.modules.linear import DynamicLinear
from nasframe.modules.norm import DynamicLayerNorm
from nasframe.space.ties import TieAnalysis
from nasframe_transformers.families.protocol import write_config_sizes
from nasframe_transformers.families.tie_builder import TieBuilder

GPT2_MODEL_TYPES = frozenset({"gpt2"})


def _base(model: nn.Module) -> nn.Module:
    """The ``GPT2Model`` inside ``model`` (or ``model`` itself when it is one)."""
    return getattr(model, "transformer", model)


def _is_block(block: nn.Module) -> bool:
    from transformers.models.gpt2.modeling_gpt2 import GPT2Attention
    from transformers.pytorch_utils import Conv1D

    from nasframe_transformers.modules.gpt2_attention import PROJECTIONS

    attention, mlp = getattr(block, "attn", None), getattr(block, "mlp", None)
    return (
        isinstance(attention, GPT2Attention)
        and not attention.is_cross_attention
        and not hasattr(block, "crossattention")
        and all(isinstance(getattr(attention, n, None), Conv1D) for n in PROJECTIONS)
        and all(isinstance(getattr(mlp, n, None), Conv1D) for n in ("c_fc", "c_proj"))
        and all(isinstance(getattr(block, n, None), nn.LayerNorm) for n in ("ln_1", "ln_2"))
    )


def _heads(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules on top of the ``GPT2Model`` (an LM head, a classifier, dropout)."""
    base = _base(model)
    if base is model:
        return []
    return [(name, child) for name, child in model.named_children() if child is not base]


def _uniform_fixed(model: nn.Module, prefix: str) -> list[str]:
    """What a same-size-every-layer search must leave whole so that the result has a plain
    GPT-2 config: the hidden size and the heads (their sizes are independent hparams, but a
    plain config needs ``n_embd == n_head * head_dim``), and with
    ``scale_attn_by_inverse_layer_idx`` the depth (a renumbered layer would be rescaled).
    """
    base = _base(model)
    whole = [f"{prefix}hidden_size"]
    whole += [f"{prefix}h.{index}.attn.num_heads" for index in range(len(base.h))]
    if model.config.scale_attn_by_inverse_layer_idx:
        whole.append(f"{prefix}h.depth")
    return whole


def _plain_scaling(config: Any, head_dim: int, layer_idx: int) -> float:
    """The ``scaling`` transformers' ``GPT2Attention.__init__`` computes for a layer."""
    scaling = head_dim**-0.5 if config.scale_attn_weights else 1.0
    if config.scale_attn_by_inverse_layer_idx:
        scaling /= float(layer_idx + 1)
    return scaling


class GPT2Family:
    """GPT-2 without cross-attention, bare or with linear heads (see the module docstring)."""

    name = "gpt2"

    def matches(self, model: nn.Module) -> bool:
        """A transformers GPT-2 without cross-attention, bare or with linear heads on top."""
        config = getattr(model, "config", None)
        if getattr(config, "model_type", None) not in GPT2_MODEL_TYPES:
            return False
        if not type(model).__module__.startswith("transformers."):
            return False
        base = _base(model)
        blocks = getattr(base, "h", None)
        return (
            isinstance(blocks, nn.ModuleList)
            and all(isinstance(getattr(base, n, None), nn.Embedding) for n in ("wte", "wpe"))
            and isinstance(getattr(base, "ln_f", None), nn.LayerNorm)
            and all(_is_block(block) for block in blocks)
            and all(
                isinstance(head, nn.Linear) or not any(True for _ in head.parameters())
                for _, head in _heads(model)
            )
        )

    def describe(self, model: nn.Module) -> TieAnalysis:
        """Tied slots of a GPT-2 model."""
        # GPT-2's module types subclass transformers' Conv1D: imported once one is described.
        from nasframe_transformers.modules.conv1d import DynamicConv1D
        from nasframe_transformers.modules.gpt2_attention import dynamic_gpt2_attention_class

        base = _base(model)
        prefix = "transformer." if base is not model else ""
        groups: list[list[tuple[str, str]]] = []
        names: list[str] = []
        frozen: list[tuple[str, str]] = []
        build = TieBuilder()
        use = build.use

        embeddings = [use(f"{prefix}{name}", DynamicEmbedding) for name in ("wte", "wpe")]
        build.hidden += [(embedding, "embedding_dim") for embedding in embeddings]
        build.writers += embeddings
        layers = use(f"{prefix}h", DynamicLayerList)
        for index, block in enumerate(base.h):
            path = f"{prefix}h.{index}"
            attention_class = dynamic_gpt2_attention_class(type(block.attn))
            ln_1 = use(f"{path}.ln_1", DynamicLayerNorm)
            attention = use(f"{path}.attn", attention_class)
            ln_2 = use(f"{path}.ln_2", DynamicLayerNorm)
            c_fc = use(f"{path}.mlp.c_fc", DynamicConv1D)
            c_proj = use(f"{path}.mlp.c_proj", DynamicConv1D)
            build.hidden += [(ln_1, "normalized_shape"), (attention, "hidden_size")]
            build.hidden += [(ln_2, "normalized_shape"), (c_fc, "nx"), (c_proj, "nf")]
            build.writers += [attention, c_proj]
            groups += [[(attention, "num_heads")], [(c_fc, "nf"), (c_proj, "nx")]]
            names += [f"{path}.attn.num_heads", f"{path}.mlp.n_inner"]
        build.hidden.append((use(f"{prefix}ln_f", DynamicLayerNorm), "normalized_shape"))
        for name, head in _heads(model):
            if isinstance(head, nn.Linear):
                build.hidden.append((use(name, DynamicLinear), "in_features"))
                frozen.append((name, "out_features"))
        return build.analysis(
            groups, names, frozen, prefix, layers, uniform_fixed=_uniform_fixed(model, prefix)
        )

    def config_sizes(self, model: nn.Module) -> tuple[dict[str, Any], list[str]]:
        """The config fields an exported GPT-2's sizes set, and why no plain config can describe
        it (sizes that differ between layers, an attention width GPT-2 cannot derive, layer
        scalings a renumbered plain model would change)."""
        base = _base(model)
        blocks = list(base.h)
        hidden = base.wte.embedding_dim
        heads = [block.attn.c_attn.weight.shape[1] // (3 * block.attn.head_dim) for block in blocks]
        per_layer = {
            "n_head": set(heads),
            "n_inner": {block.mlp.c_fc.weight.shape[1] for block in blocks},
        }
        problems = [
            f"{key} differs between layers" for key, values in per_layer.items() if len(values) > 1
        ]
        sizes: dict[str, Any] = {
            key: next(iter(values)) for key, values in per_layer.items() if len(values) == 1
        }
        sizes["n_embd"] = hidden
        sizes["n_layer"] = len(blocks)
        widths = {(n, block.attn.head_dim) for n, block in zip(heads, blocks, strict=True)}
        mismatched = sorted((n, d) for n, d in widths if n * d != hidden)
        if mismatched:
            n, d = mismatched[0]
            problems.append(
                f"head_dim: n_embd {hidden} is not n_head x head_dim ({n} x {d}), and GPT-2's "
                "config derives head_dim = n_embd / n_head (prune the hidden size by whole heads "
                "together with the heads, or neither)"
            )
        rescaled = [
            index
            for index, block in enumerate(blocks)
            if block.attn.scaling != _plain_scaling(model.config, block.attn.head_dim, index)
        ]
        if rescaled:
            problems.append(
                f"attention scaling: layers now at {rescaled} were renumbered and "
                "scale_attn_by_inverse_layer_idx would rescale them in a plain config"
            )
        return sizes, problems

    def finalize_export(self, model: nn.Module) -> None:
        """Renumber the kept blocks and write the sizes into the exported model's config.

        ``layer_idx`` selects each block's cache slot, so after blocks are removed it counts
        0..n-1 again; each attention keeps the ``scaling`` of its original layer, so the export
        computes what the dynamic model did. ``n_inner=None`` means ``4 * n_embd``: it is pinned
        to the original width first, so a smaller ``n_embd`` never changes its meaning.
        """
        config = model.config
        if config.n_inner is None:
            config.n_inner = 4 * config.n_embd
        for new_index, block in enumerate(_base(model).h):
            block.attn.layer_idx = new_index
        write_config_sizes(self, model)

    def prepare(self, model: nn.Module) -> None:
        """Nothing to install: GPT-2's own forward runs the kept blocks as they are."""

    def bias_flags(self, model: nn.Module) -> tuple[dict[str, bool], list[nn.Linear]]:
        """None needed: every GPT-2 projection has a bias already."""
        return {}, []

    def gradient_setups(self) -> dict[type, Any]:
        """gradnas masks the ``Conv1D`` inputs and the heads on ``c_proj``'s input.

        Empty until transformers is imported: these module types subclass its ``Conv1D``, so
        no model holds one before, and reading gradnas's setups never imports transformers.
        """
        if "transformers" not in sys.modules:
            return {}
        from nasframe_transformers.modules.conv1d import DynamicConv1D, setup_conv1d_input
        from nasframe_transformers.modules.gpt2_attention import (
            DynamicGPT2Attention,
            setup_gpt2_heads,
        )

        return {DynamicConv1D: setup_conv1d_input, DynamicGPT2Attention: setup_gpt2_heads}


GPT2 = GPT2Family()


def describe_ties(model: nn.Module) -> TieAnalysis | None:
    """Tied slots of a GPT-2 model, or None when ``model`` is not one."""
    return GPT2.describe(model) if GPT2.matches(model) else None

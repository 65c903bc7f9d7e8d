"""The search space of a BERT encoder (``BertModel``, ``BertForMaskedLM``), described directly.

transformers 5 models are not torch.fx-traceable, so the family's dimensions are listed here:

- ``bert.hidden_size``: the residual stream — the three embeddings and every LayerNorm, every
  query/key/value and intermediate input, every output dense's output, the pooler dense (both
  sides: its output has the hidden size in a ``BertConfig``, so it shrinks with the stream as
  ``last_hidden_state`` does) and the MLM head's transform dense, whose *output* is the hidden
  size too: it feeds the decoder, whose weight is the word embeddings (one parameter, one
  hparam; untied, the decoder's input is still ``hidden_size`` in the config).
- ``bert.encoder.layer.{i}.intermediate_size``: the FFN width (``intermediate.dense`` outputs,
  ``output.dense`` inputs); gradnas masks it on ``output.dense``'s input, after the GELU.
- ``bert.encoder.layer.{i}.attention.num_attention_heads``: see
  :mod:`nasframe_transformers.modules.bert_heads`.
- ``bert.encoder.layer.depth``: whole layers, gated on their residual contribution.

BERT is post-LN: every sublayer's ``LayerNorm(dense(x) + x)`` *re-creates* a channel whose
writes were zeroed (its output is ``bias_c - mean * weight_c / std``). So the gradnas mask of
the hidden size multiplies the dense writes *and* the outputs of the LayerNorms that produce
the stream (and the MLM head's transform dense and LayerNorm, and the pooler): at ``m_c = 0``
no reader sees channel ``c`` any more; only the LayerNorm statistics still count it as a zero,
the same first-order approximation the pre-LN families make for their norms.

A ``BertConfig`` has no head size: it is ``hidden_size / num_attention_heads``. A pruned model
has a plain config only when the kept hidden size is the kept heads times the original head
size (and every layer keeps the same heads and FFN width); otherwise :func:`config_sizes`
names the problem, ``save_pretrained_pruned`` refuses, and the config keeps the unpruned
hidden size and heads, from which ``nasframe.load`` selects the saved config again.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from nasframe.modules.depth import DynamicLayerList
from nasframe.modules.embedding import DynamicEmbedding
from nasframe.modules.linear import DynamicLinear
from nasframe.modules.norm import DynamicLayerNorm
from nasframe.space.ties import SlotRef, TieAnalysis
from nasframe_transformers.families.protocol import write_config_sizes
from nasframe_transformers.families.tie_builder import TieBuilder
from nasframe_transformers.modules.bert_heads import (
    DynamicHeadInputLinear,
    dynamic_self_attention_class,
    head_input_linear_class,
    setup_bert_heads,
)

_EMBEDDINGS = ("word_embeddings", "position_embeddings", "token_type_embeddings")


def _base(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The name prefix and the ``BertModel`` of a supported model, else None."""
    from transformers.models.bert import modeling_bert

    if isinstance(model, modeling_bert.BertForMaskedLM):
        return "bert.", model.bert
    if isinstance(model, modeling_bert.BertModel):
        return "", model
    return None


def _layers(model: nn.Module) -> nn.ModuleList:
    return _base(model)[1].encoder.layer


class BertFamily:
    """BERT encoders: ``BertModel`` and ``BertForMaskedLM`` (see the module docstring)."""

    name = "bert"

    def matches(self, model: nn.Module) -> bool:
        """A transformers ``BertModel`` or ``BertForMaskedLM`` without cross-attention.

        Other BERT heads (sequence classification, pre-training) add dimensions nobody has
        described yet; they are not claimed, so nasframe says it cannot search them.
        """
        config = getattr(model, "config", None)
        if getattr(config, "model_type", None) != "bert" or getattr(
            config, "add_cross_attention", 0
        ):
            return False
        if not type(model).__module__.startswith("transformers."):
            return False
        from transformers.models.bert import modeling_bert

        found = _base(model)
        if found is None or not isinstance(found[1].encoder.layer, nn.ModuleList):
            return False
        return all(
            isinstance(layer.attention.self, modeling_bert.BertSelfAttention)
            and all(
                isinstance(m, nn.Linear) for m in (layer.intermediate.dense, layer.output.dense)
            )
            for layer in found[1].encoder.layer
        )

    def describe(self, model: nn.Module) -> TieAnalysis:
        """Tied slots of a BERT model."""
        prefix, base = _base(model)
        build = TieBuilder()
        groups: list[list[SlotRef]] = []
        names: list[str] = []
        frozen: list[SlotRef] = []
        for name in _EMBEDDINGS:
            embedding = f"{prefix}embeddings.{name}"
            build.hidden_slots(embedding, DynamicEmbedding, "embedding_dim", writes=True)
        norm = "normalized_shape"
        build.hidden_slots(f"{prefix}embeddings.LayerNorm", DynamicLayerNorm, norm, writes=True)
        layers = build.use(f"{prefix}encoder.layer", DynamicLayerList)
        for index, layer in enumerate(base.encoder.layer):
            path = f"{prefix}encoder.layer.{index}"
            attention_class = dynamic_self_attention_class(type(layer.attention.self))
            attention = build.hidden_slots(f"{path}.attention.self", attention_class, "hidden_size")
            head_class = head_input_linear_class(layer.attention.self.attention_head_size)
            heads_in = build.hidden_slots(
                f"{path}.attention.output.dense", head_class, "out_features", writes=True
            )
            build.hidden_slots(
                f"{path}.attention.output.LayerNorm", DynamicLayerNorm, norm, writes=True
            )
            up = build.hidden_slots(f"{path}.intermediate.dense", DynamicLinear, "in_features")
            down = build.hidden_slots(
                f"{path}.output.dense", DynamicLinear, "out_features", writes=True
            )
            build.hidden_slots(f"{path}.output.LayerNorm", DynamicLayerNorm, norm, writes=True)
            groups += [
                [(attention, "num_attention_heads"), (heads_in, "in_features")],
                [(up, "out_features"), (down, "in_features")],
            ]
            names += [f"{path}.attention.num_attention_heads", f"{path}.intermediate_size"]
        if getattr(base, "pooler", None) is not None:
            pooler = f"{prefix}pooler.dense"
            build.hidden_slots(pooler, DynamicLinear, "in_features", "out_features", writes=True)
        head = getattr(getattr(model, "cls", None), "predictions", None)
        if head is not None:
            both = ("in_features", "out_features")
            build.hidden_slots("cls.predictions.transform.dense", DynamicLinear, *both, writes=True)
            build.hidden_slots(
                "cls.predictions.transform.LayerNorm", DynamicLayerNorm, norm, writes=True
            )
            build.hidden_slots("cls.predictions.decoder", DynamicLinear, "in_features")
            frozen.append(("cls.predictions.decoder", "out_features"))  # the vocabulary
        return build.analysis(
            groups,
            names,
            frozen,
            prefix,
            layers,
            # A BertConfig derives the head size from hidden_size / num_attention_heads, two
            # independent hparams here: a uniform search keeps both whole so its result always
            # has a plain config.
            uniform_fixed=[f"{prefix}hidden_size", *(name for name in names if "heads" in name)],
        )

    def config_sizes(self, model: nn.Module) -> tuple[dict[str, Any], list[str]]:
        """The config fields an exported BERT model's sizes set, and why no plain config can
        describe it (sizes that differ between layers, a head size the config cannot derive).

        ``hidden_size`` and ``num_attention_heads`` are only set together with a consistent
        head size; otherwise they keep the config's values (see the module docstring).
        """
        layers = list(_layers(model))
        per_layer = {
            "intermediate_size": {layer.output.dense.in_features for layer in layers},
            "num_attention_heads": {
                layer.attention.self.query.out_features // layer.attention.self.attention_head_size
                for layer in layers
            },
        }
        problems = [
            f"{key} differs between layers" for key, values in per_layer.items() if len(values) > 1
        ]
        sizes: dict[str, Any] = {
            key: next(iter(values)) for key, values in per_layer.items() if len(values) == 1
        }
        sizes["num_hidden_layers"] = len(layers)
        hidden = _base(model)[1].embeddings.word_embeddings.embedding_dim
        heads = sizes.pop("num_attention_heads", model.config.num_attention_heads)
        head_size = layers[0].attention.self.attention_head_size if layers else None
        if head_size is None or hidden == heads * head_size:
            sizes["hidden_size"] = hidden
            sizes["num_attention_heads"] = heads
        elif len(per_layer["num_attention_heads"]) == 1:  # else already a problem above
            problems.append(
                f"hidden_size {hidden} is not num_attention_heads {heads} x the head size "
                f"{head_size}, and a BertConfig derives the head size as their quotient"
            )
        return sizes, problems

    def finalize_export(self, model: nn.Module) -> None:
        """Renumber the kept layers, re-tie the decoder bias and write the sizes into the config.

        Layer indices select each layer's cache slot, so after layers are removed they count
        0..n-1 again. The exported decoder got a copy of its bias (the vocabulary is never
        pruned); with tied embeddings it is the MLM head's ``bias`` parameter again, as
        transformers ties them (one parameter, as the search counted it).
        """
        for new_index, layer in enumerate(_layers(model)):
            if hasattr(layer.attention.self, "layer_idx"):
                layer.attention.self.layer_idx = new_index
            if hasattr(layer, "layer_idx"):
                layer.layer_idx = new_index
        head = getattr(getattr(model, "cls", None), "predictions", None)
        if head is not None and getattr(model.config, "tie_word_embeddings", False):
            head.decoder.bias = head.bias
        write_config_sizes(self, model)

    def prepare(self, model: nn.Module) -> None:
        """Nothing to install: BERT's own forward runs the kept layers as they are."""

    def bias_flags(self, model: nn.Module) -> tuple[dict[str, bool], list[nn.Linear]]:
        """None needed: every BERT projection has a bias already."""
        return {}, []

    def gradient_setups(self) -> dict[type, Any]:
        """gradnas masks each head where it enters the attention's output dense."""
        return {DynamicHeadInputLinear: setup_bert_heads}


BERT = BertFamily()


def describe_ties(model: nn.Module) -> TieAnalysis | None:
    """Tied slots of a BERT model, or None when ``model`` is not one."""
    return BERT.describe(model) if BERT.matches(model) else None

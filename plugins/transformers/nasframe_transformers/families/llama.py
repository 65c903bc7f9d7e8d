"""Llama-style decoders (Llama, Mistral, Qwen2): the structure description, named.

The decoder description (:mod:`nasframe_transformers.families.decoder`) recognises these
models from their modules as it does any other decoder, and gives them the search space the
hand-written family before it did: ``model.hidden_size`` (the residual stream; tied
embeddings stay one hparam), ``model.layers.{i}.mlp.intermediate_size``,
``model.layers.{i}.self_attn.num_key_value_heads`` and ``.query_heads_per_group`` (see
:mod:`nasframe_transformers.modules.decoder_attention`) and ``model.layers.depth``.

What the structure cannot show is declared here: Qwen2's config class has no ``head_dim``
field, yet its attention reads one written into the config, so a uniform result may prune
the hidden size with whole heads and still be a plain Qwen2 (as Llama's and Mistral's, whose
configs state it). The family keeps its name "llama", which messages and listings show.
"""

from __future__ import annotations

from torch import nn

from nasframe.space.ties import TieAnalysis
from nasframe_transformers.families.decoder.family import DecoderFamily

LLAMA_STYLE_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2"})

LLAMA = DecoderFamily(name="llama", model_types=LLAMA_STYLE_MODEL_TYPES, head_dim_in_config=True)


def describe_ties(model: nn.Module) -> TieAnalysis | None:
    """Tied slots of a Llama-style model, or None when ``model`` is not one."""
    return LLAMA.describe(model) if LLAMA.matches(model) else None

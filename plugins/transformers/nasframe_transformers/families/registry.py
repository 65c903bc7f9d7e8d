"""The families the transformers plugin supports, in the order they are asked.

Creating them imports no transformers: a family looks at a model only once a caller passes
one (which means transformers is imported already), and GPT-2's module types, which
subclass transformers' ``Conv1D``, are imported when a GPT-2 is described.
"""

from __future__ import annotations

from torch import nn

from nasframe_transformers.families.bert import BERT
from nasframe_transformers.families.decoder.family import DecoderFamily
from nasframe_transformers.families.gpt2 import GPT2
from nasframe_transformers.families.llama import LLAMA
from nasframe_transformers.families.protocol import TransformersFamily

# LLAMA is the structure description limited to Llama, Mistral and Qwen2 (families.llama);
# the unlimited description comes last: it claims any decoder the others do not.
DECODER = DecoderFamily(before=(LLAMA, GPT2, BERT))
FAMILIES: tuple[TransformersFamily, ...] = (LLAMA, GPT2, BERT, DECODER)


def family_of(model: nn.Module) -> TransformersFamily | None:
    """The family of ``model``, or None for a model no family supports."""
    if not type(model).__module__.startswith("transformers."):
        return None
    return next((family for family in FAMILIES if family.matches(model)), None)

"""The transformers model families (Llama-style, GPT-2, BERT and any decoder recognised by its
structure, of which the Llama-style family is the part limited to three model types), each one
object satisfying :class:`nasframe_transformers.families.protocol.TransformersFamily`,
registered with nasframe through the ``nasframe_model_families`` hook (see
:mod:`nasframe_transformers.plugin`)."""

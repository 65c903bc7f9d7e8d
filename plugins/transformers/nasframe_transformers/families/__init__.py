"""The transformers model families (Llama-style, GPT-2, BERT), each one object satisfying
:class:`nasframe_transformers.families.protocol.TransformersFamily`, registered with nasframe
through the ``nasframe_model_families`` hook (see :mod:`nasframe_transformers.plugin`)."""

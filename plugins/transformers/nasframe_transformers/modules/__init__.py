"""The dynamic module types the transformers families convert to: wrapped attention classes
(Llama-style GQA, GPT-2, BERT heads), GPT-2's ``Conv1D``, and the kept-layer view."""

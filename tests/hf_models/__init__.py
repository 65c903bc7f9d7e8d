"""Tiny randomly initialised Hugging Face models (and a tokenizer) for the tests: one module
per family, shared by the plugin's tests, the allocation searches and reconstruction.

Importing a module here imports transformers; a test file calls
``pytest.importorskip("transformers")`` first, so it is skipped where transformers is missing.
"""

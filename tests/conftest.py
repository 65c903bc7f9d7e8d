"""Shared test set-up. pytest puts this folder on ``sys.path``, so the helper modules here
(``models``, ``gradnas_models``, ``smollm2_models``, the rank workers) import by name from
tests in any subfolder; the test tree mirrors the source tree."""

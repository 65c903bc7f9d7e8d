"""The application built on the library: the CLI, the main job, the built-in calibration text,
language-model helpers, the model registry and the built-in byte-mlp model.

The library (everything in ``nasframe`` outside this package) never imports it; the app plugs
its models into the library through the same entry-point group a third party uses.
"""

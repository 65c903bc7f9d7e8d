"""The search space: hparams, the DynamicModule base, convert, tie discovery and export.

``convert`` turns a model into a :class:`~nasframe.space.search_space.SearchSpace` whose
prunable dimensions are shared hparams; ``export`` materialises a config as a plain model.
"""

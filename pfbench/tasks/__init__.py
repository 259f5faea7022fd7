"""Downstream tasks on a fitted generator (not estimators): what a learned pushforward is good for.

- :mod:`pfbench.tasks.inversion`: invert a ReLU generator x = G(z) (layerwise LPs; gradient baseline);
- :mod:`pfbench.tasks.compressed_sensing`: recover signals from few linear measurements through G,
  beside the Lasso.

Each module's ``*_task`` function returns flat JSON scalars for ``metrics.json`` (``tasks.*`` in the
config; ``python -m pfbench.runs`` for a finished run).
"""

"""The shared evaluation: pure functions of samples and parameters (MATH.md sections 7 and 8).

- :mod:`pfbench.metrics.distances`: exact W1/W2 (certified optimal, memory-guarded), sliced W,
  unbiased MMD^2, the neural-net distance with a 1-Lipschitz critic class, birthday support test;
- the gauge-aligned parameter error belongs to each family (``Pushforward.aligned_error``,
  :func:`pfbench.families.parameter_error`): its symmetry group is the family's knowledge;
- :mod:`pfbench.metrics.evaluate`: ``evaluate(model, x_test, truth=, cfg=, seed=)``, every distance
  beside its noise floor, configured by the ``eval=`` group.

Submodules are imported on use (``from pfbench.metrics.distances import sliced_wasserstein``), so that
importing one does not pull in POT or torch for the others.
"""

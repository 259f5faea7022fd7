"""The shared evaluation: pure functions of samples and parameters (MATH.md sections 7 and 8).

- :mod:`pfbench.metrics.distances`: exact W1/W2 (certified optimal, memory-guarded), sliced W,
  unbiased MMD^2, the neural-net distance with a 1-Lipschitz critic class, birthday support test;
- :mod:`pfbench.metrics.gauge`: gauge-aligned parameter error for every family
  (``parameter_error``, ``quadratic_gauge_error``);
- :mod:`pfbench.metrics.evaluate`: ``evaluate(model, x_test, truth=, cfg=, seed=)``, every distance
  beside its noise floor, configured by the ``eval=`` group.

Submodules are imported on use (``from pfbench.metrics.gauge import parameter_error``), so that
importing one does not pull in POT or torch for the others.
"""

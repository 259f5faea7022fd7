"""Provable and moment-based estimators, scikit-learn style.

Contract for every estimator class registered below:
- ``__init__(*, latent_dim, out_dim, seed=0, **hyperparameters)`` stores arguments only and never
  raises ConfigError (family arguments such as ``degree``/``rank`` arrive as keywords too; unknown
  keywords raise TypeError);
- ``validate() -> None`` raises ConfigError (one line) for everything that can be refused without
  the data: identifiability (quadratic: d < r(r+1)/2), problem sizes out of reach (SoS),
  hyperparameters out of range. It is cheap and does no fitting work; the entry point calls it
  right after :func:`make_estimator` (which does not), before it samples or reads any data;
- ``fit(X)`` calls ``validate()`` first (so direct users get the same refusals), takes an (n, d)
  float array (numpy, memmap or torch), returns ``self`` and sets ``pushforward_`` (a
  :class:`pfbench.families.Pushforward` of the true family's class holding the fitted parameters,
  so the shared evaluation applies) and ``info_`` (a flat dict of JSON scalars: iterations, final
  loss, converged flag, fit time in seconds, ...); a ``fit_moments(summary)`` variant, where there
  is one, validates first too;
- optionally ``extra_metrics(truth, X) -> dict`` with numbers that need the true instance (for
  example the oracle error of a refinement started at the truth);
- optionally ``needs_truth = True``: the entry point sets ``truth_`` (the true pushforward, None for
  data=file) before ``fit`` (the ``truth`` reference method).

The family ``"*"`` in :data:`ESTIMATORS` means every data config, data=file included (the reference
methods of :mod:`pfbench.baselines`).
"""

from __future__ import annotations

import importlib
from typing import Any

from pfbench import ConfigError

#: (model name, data family) -> "module:Class". Modules are imported only when chosen.
ESTIMATORS: dict[tuple[str, str], str] = {
    ("moments", "quadratic"): "pfbench.recovery.quadratic:QuadraticMomentEstimator",
    ("moments", "polynomial"): "pfbench.recovery.polynomial:PolynomialMomentEstimator",
    ("sos", "quadratic"): "pfbench.recovery.sos:SoSQuadraticEstimator",
    ("relu_moments", "relu"): "pfbench.recovery.relu_estimator:ReLUMomentEstimator",
    ("memorize", "*"): "pfbench.baselines:Memorizer",
    ("gaussian", "*"): "pfbench.baselines:GaussianBaseline",
    ("truth", "*"): "pfbench.baselines:TruthBaseline",
}

#: the reference methods (every family): rows of their own in the report
REFERENCE_METHODS = tuple(m for m, f in ESTIMATORS if f == "*")


def _load(spec: str) -> type:
    module, cls = spec.split(":")
    return getattr(importlib.import_module(module), cls)


def applies(model: str, family: str | None, *, has_truth: bool = True) -> bool:
    """Whether +model=<model> applies to data of ``family`` (None: "file"). Without a true distribution
    (``has_truth=False``: the user's samples, whatever data.family says) a method that needs it does not."""
    family = family or "file"
    if (model, family) in ESTIMATORS:
        return True
    if (model, "*") not in ESTIMATORS:
        return False
    return has_truth or not getattr(_load(ESTIMATORS[(model, "*")]), "needs_truth", False)


def estimator_class(model: str, family: str, *, has_truth: bool = True) -> type:
    if not applies(model, family, has_truth=has_truth):
        valid = sorted(f for m, f in ESTIMATORS if m == model)
        where = "|".join(valid) or "(none)"
        if valid == ["*"]:
            where = "any family, not data=file (it needs the true distribution)"
        shown = family if has_truth else "file"
        raise ConfigError(f"+model={model} does not apply to data={shown}; it applies to data={where}")
    return _load(ESTIMATORS[(model, family) if (model, family) in ESTIMATORS else (model, "*")])


def make_estimator(model: str, family: str, *, latent_dim: int, out_dim: int, seed: int,
                   family_kwargs: dict[str, Any] | None = None, params: dict[str, Any] | None = None,
                   has_truth: bool = True):
    """Construct the estimator for (model, family); unknown keywords become ConfigError.

    Does not call ``validate()``: the caller does, before any data work.
    """
    cls = estimator_class(model, family, has_truth=has_truth)
    kwargs = {**(family_kwargs or {}), **(params or {})}
    try:
        return cls(latent_dim=latent_dim, out_dim=out_dim, seed=seed, **kwargs)
    except TypeError as e:
        raise ConfigError(f"+model={model}: {e}") from e

"""The estimator contract (pfbench.recovery): __init__ only stores, validate() refuses, fit() validates first."""

from __future__ import annotations

import numpy as np
import pytest

from pfbench import ConfigError
from pfbench.recovery import ESTIMATORS, estimator_class, make_estimator

# (model, family, constructor keywords that validate() must refuse, the refusal it must name)
REFUSED = [
    ("moments", "quadratic", {"latent_dim": 3, "out_dim": 5}, "not identifiable"),
    ("moments", "quadratic", {"latent_dim": 2, "out_dim": 4, "restarts": 0}, "restarts=0"),
    ("moments", "polynomial", {"latent_dim": 2, "out_dim": 4, "rank": 0}, "rank=0"),
    ("moments", "polynomial", {"latent_dim": 2, "out_dim": 4, "init": "spectral"}, "init='spectral'"),
    ("sos", "quadratic", {"latent_dim": 4, "out_dim": 10}, "refuses this instance"),
    ("sos", "quadratic", {"latent_dim": 2, "out_dim": 2}, "not identifiable"),
    ("sos", "quadratic", {"latent_dim": 2, "out_dim": 3, "solver": "MOSEK"}, "CLARABEL or SCS"),
    ("relu_moments", "relu", {"latent_dim": 3, "out_dim": 3, "solver": "lbfgs"}, "solver='lbfgs'"),
    ("relu_moments", "relu", {"latent_dim": 0, "out_dim": 3}, "latent_dim=0"),
]


def test_every_registered_estimator_is_covered() -> None:
    # the reference methods (family "*": memorize, gaussian, truth) take no arguments to refuse
    assert {(m, f) for m, f, _, _ in REFUSED} == {(m, f) for m, f in ESTIMATORS if f != "*"}
    for model, family in ESTIMATORS:
        assert callable(getattr(estimator_class(model, family), "validate", None))


@pytest.mark.parametrize("model,family,kwargs,match", REFUSED)
def test_init_stores_validate_refuses_fit_validates_first(model, family, kwargs, match) -> None:
    cls = estimator_class(model, family)
    est = cls(seed=0, **kwargs)  # no ConfigError here
    for k, v in kwargs.items():
        assert getattr(est, k) == v  # stored unmodified
    with pytest.raises(ConfigError, match=match) as e:
        est.validate()
    assert "\n" not in str(e.value)
    # fit refuses the same way before it looks at the samples (these have the wrong shape on purpose)
    with pytest.raises(ConfigError, match=match):
        est.fit(np.zeros((4, 1)))
    # the registry constructs without validating; the entry point calls validate() itself
    params = dict(kwargs)
    dims = {k: params.pop(k) for k in ("latent_dim", "out_dim")}
    via = make_estimator(model, family, seed=0, params=params, **dims)
    with pytest.raises(ConfigError, match=match):
        via.validate()


def test_accepted_sizes_validate_silently() -> None:
    estimator_class("moments", "quadratic")(latent_dim=3, out_dim=6).validate()  # the boundary d = m
    estimator_class("moments", "polynomial")(latent_dim=2, out_dim=4).validate()
    estimator_class("sos", "quadratic")(latent_dim=2, out_dim=3).validate()
    estimator_class("relu_moments", "relu")(latent_dim=3, out_dim=3).validate()

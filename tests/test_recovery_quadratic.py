"""Spectral + moment-matching recovery of quadratic pushforwards (MATH 2b): exactness, gauge, statistics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from pfbench import ConfigError
from pfbench.families import make_instance
from pfbench.families.quadratic import quadratic_gauge_error
from pfbench.recovery import make_estimator
from pfbench.recovery.quadratic import QuadraticMomentEstimator
from pfbench.recovery.quadratic_moments import (
    MomentLoss,
    from_coords,
    population_summary,
    spectral_init,
    sym_basis,
    sym_dim,
    to_coords,
)
from pfbench.seeding import numpy_generator, torch_generator
from tests.runner import metrics, run_inprocess


def _instance(r: int, d: int, seed: int = 0):
    return make_instance("quadratic", r, d, generator=torch_generator(seed, "instance"))


def _Q(r: int, d: int, seed: int = 0) -> np.ndarray:
    return _instance(r, d, seed).params()["Q"].numpy()


def _rotation(r: int, seed: int) -> np.ndarray:
    return np.linalg.qr(numpy_generator(seed, "test_rotation").standard_normal((r, r)))[0]


def _words4(Q: np.ndarray) -> np.ndarray:
    """Tr(Q_a Q_b Q_c Q_e) for all a, b, c, e: gauge invariants of degree 4, which no step fits."""
    QQ = np.einsum("aij,bjk->abik", Q, Q)
    return np.einsum("abik,ceki->abce", QQ, QQ)


def test_sym_basis_is_orthonormal_and_coordinates_round_trip():
    for r in (1, 2, 5):
        z = sym_basis(r).reshape(sym_dim(r), -1)
        assert np.abs(z @ z.T - np.eye(sym_dim(r))).max() <= 1e-15
        Q = _Q(r, 4, seed=r)
        assert np.abs(from_coords(to_coords(Q), r) - Q).max() <= 1e-15


@pytest.mark.parametrize("r", [2, 3, 5, 8])
def test_exact_recovery_from_population_moments(r):
    d = sym_dim(r) + 3
    Q = _Q(r, d, seed=r)
    s = population_summary(Q)
    init = spectral_init(s, r, numpy_generator(0, "test"))
    assert quadratic_gauge_error(Q, init.Q) <= 1e-8
    assert 0.0 <= init.idempotent_residual <= 1e-10
    est = QuadraticMomentEstimator(latent_dim=r, out_dim=d, seed=0, restarts=2).fit_moments(s)
    assert quadratic_gauge_error(Q, est.Q_) <= 1e-8
    assert 0.0 <= est.info_["final_loss"] <= 1e-20
    assert est.info_["converged"] and est.info_["cov_rank"] == sym_dim(r) and not est.info_["rank_deficient"]
    # Degree-4 trace invariants are not fitted by any step: they match only if Q is recovered.
    w_true, w_hat = _words4(Q), _words4(est.Q_)
    assert np.abs(w_hat - w_true).max() <= 1e-7 * np.abs(w_true).max()


def test_identifiability_error_before_any_work():
    est = QuadraticMomentEstimator(latent_dim=3, out_dim=5)  # the constructor only stores
    with pytest.raises(ConfigError) as e:
        est.validate()
    msg = str(e.value)
    assert "not identifiable" in msg and "d=5 < r(r+1)/2=6" in msg and "\n" not in msg
    with pytest.raises(ConfigError, match="not identifiable"):
        est.fit(np.zeros((10, 5)))  # fit validates first, before looking at the data
    with pytest.raises(ConfigError, match="not identifiable"):
        make_estimator("moments", "quadratic", latent_dim=4, out_dim=9, seed=0).validate()
    QuadraticMomentEstimator(latent_dim=3, out_dim=6).validate()  # the boundary d = m is allowed


def test_rank_deficiency_is_reported_not_ignored():
    # Q_a spanning only m - 1 = 5 of the 6 dimensions of Sym(3): covariance rank 5 < 6.
    r, d = 3, 8
    m = sym_dim(r)
    C = numpy_generator(0, "test_deficient").standard_normal((d, m)) / math.sqrt(r)
    C[:, -1] = 0.0
    Q = from_coords(C, r)
    est = QuadraticMomentEstimator(latent_dim=r, out_dim=d, restarts=1)
    with pytest.warns(UserWarning, match=r"covariance rank 5 < r\(r\+1\)/2 = 6"):
        est.fit_moments(population_summary(Q))
    assert est.info_["rank_deficient"] is True and est.info_["cov_rank"] == 5
    assert "not identifiable" in est.info_["warning"]
    # The same from samples: the deficiency is exact in data (rounding-level eigenvalues).
    pf = make_instance("quadratic", r, d, generator=torch_generator(0, "instance"))
    pf.set_params({"Q": torch.from_numpy(Q)})
    X = pf.sample_batched(5000, torch_generator(0, "train")).numpy()
    with pytest.warns(UserWarning, match="covariance rank 5"):
        est.fit(X)
    assert est.info_["cov_rank"] == 5 and 0.0 <= est.info_["cov_eig_ratio"] <= 1e-9


def test_loss_is_gauge_invariant_and_gradient_covariant():
    r, d = 4, 12
    Q = _Q(r, d, seed=1)
    s = population_summary(_Q(r, d, seed=2))  # some other target, so the gradient is not zero
    loss = MomentLoss(s, r)
    V = _rotation(r, 0)
    QV = np.einsum("ij,ajk,lk->ail", V, Q, V)
    f, g = loss(to_coords(Q).ravel())
    fV, gV = loss(to_coords(QV).ravel())
    assert abs(fV - f) <= 1e-12 * f and f > 1e-3
    # The gradient (as symmetric matrices) rotates with Q: grad(V Q V^T) = V grad(Q) V^T.
    G, GV = from_coords(g.reshape(d, -1), r), from_coords(gV.reshape(d, -1), r)
    assert np.abs(np.einsum("ij,ajk,lk->ail", V, G, V) - GV).max() <= 1e-10 * np.abs(G).max()


def test_outputs_are_gauge_invariant():
    r, d = 3, 8
    Q = _Q(r, d, seed=4)
    V = _rotation(r, 1)
    QV = np.einsum("ij,ajk,lk->ail", V, Q, V)
    a = QuadraticMomentEstimator(latent_dim=r, out_dim=d, restarts=1).fit_moments(population_summary(Q))
    b = QuadraticMomentEstimator(latent_dim=r, out_dim=d, restarts=1).fit_moments(population_summary(QV))
    assert quadratic_gauge_error(a.Q_, b.Q_) <= 1e-8  # the same orbit from either representative
    assert abs(a.info_["final_loss"] - b.info_["final_loss"]) <= 1e-20
    # Same samples, truth given in two gauges: the truth-dependent metrics must not change.
    truth = _instance(r, d, seed=4)
    X = truth.sample_batched(20_000, torch_generator(4, "train")).numpy()
    est = QuadraticMomentEstimator(latent_dim=r, out_dim=d, restarts=2).fit(X)
    rotated = _instance(r, d, seed=4).set_params({"Q": torch.from_numpy(QV)})
    m1, m2 = est.extra_metrics(truth, X), est.extra_metrics(rotated, X)
    for key in ("oracle_param_error", "spectral_init_param_error", "fit_to_oracle_error_ratio"):
        assert abs(m1[key] - m2[key]) <= 1e-6 * abs(m1[key]), key
    assert abs(m1["oracle_final_loss"] - m2["oracle_final_loss"]) <= 1e-9 * m1["oracle_final_loss"]


def test_inputs_numpy_memmap_torch_give_the_same_fit(tmp_path):
    r, d = 2, 5
    X = _instance(r, d, seed=5).sample_batched(30_000, torch_generator(5, "train")).numpy()
    mm = np.memmap(tmp_path / "x.dat", dtype=np.float64, mode="w+", shape=X.shape)
    mm[:] = X
    mm.flush()
    mm = np.memmap(tmp_path / "x.dat", dtype=np.float64, mode="r", shape=X.shape)
    fits = [QuadraticMomentEstimator(latent_dim=r, out_dim=d, seed=0, chunk=7000).fit(src).Q_
            for src in (X, mm, torch.from_numpy(X))]
    assert np.abs(fits[1] - fits[0]).max() <= 1e-10 and np.abs(fits[2] - fits[0]).max() <= 1e-10


def test_info_is_flat_json_and_seeded():
    r, d, n = 3, 7, 20_000
    X = _instance(r, d, seed=6).sample_batched(n, torch_generator(6, "train")).numpy()
    a = QuadraticMomentEstimator(latent_dim=r, out_dim=d, seed=0).fit(X)
    b = QuadraticMomentEstimator(latent_dim=r, out_dim=d, seed=0).fit(X)
    assert np.array_equal(a.Q_, b.Q_)
    json.dumps(a.info_, allow_nan=False)
    assert all(isinstance(v, (bool, int, float, str)) or v is None for v in a.info_.values())
    assert a.info_["n_samples"] == n and a.info_["restarts"] == 3 and a.info_["converged"]
    assert 1 <= a.info_["iterations"] <= 1000 and a.info_["total_iterations"] >= a.info_["iterations"]
    assert 0.0 < a.info_["final_loss"] <= a.info_["init_loss"]
    assert 0.0 < a.info_["moments_time_s"] < a.info_["fit_time_s"]
    parts = a.info_["loss_mean_term"] + a.info_["loss_cov_term"] + a.info_["loss_third_term"]
    assert abs(parts - a.info_["final_loss"]) <= 1e-12
    assert isinstance(a.pushforward_.Q, torch.Tensor) and a.pushforward_.Q.dtype == torch.float64


def test_bad_inputs_are_one_line_errors():
    est = QuadraticMomentEstimator(latent_dim=2, out_dim=4)
    with pytest.raises(ConfigError, match=r"expected \(n, 4\)"):
        est.fit(np.zeros((10, 5)))
    with pytest.raises(ConfigError, match="restarts=0"):
        QuadraticMomentEstimator(latent_dim=2, out_dim=4, restarts=0).validate()
    with pytest.raises(ConfigError, match="call fit"):
        est.oracle_fit(_Q(2, 4))


@pytest.mark.slow
def test_error_decreases_like_n_to_the_minus_half_and_matches_the_oracle():
    # Small instance, 3 seeds per n: median gauge-aligned error against n on a log-log scale.
    r, d = 3, 8
    ns = [4_000, 40_000, 400_000]
    med, ratios = [], []
    for n in ns:
        errs = []
        for seed in range(3):
            truth = _instance(r, d, seed=seed)
            X = truth.sample_batched(n, torch_generator(seed, "train")).numpy()
            est = QuadraticMomentEstimator(latent_dim=r, out_dim=d, seed=seed).fit(X)
            errs.append(quadratic_gauge_error(truth.params()["Q"], est.Q_))
            ratios.append(est.extra_metrics(truth, X)["fit_to_oracle_error_ratio"])
        med.append(float(np.median(errs)))
    slope = np.polyfit(np.log(ns), np.log(med), 1)[0]
    assert -0.75 <= slope <= -0.3, (med, slope)
    assert 0.003 <= med[-1] <= 0.05, med
    assert all(0.9 <= x <= 1.1 for x in ratios), ratios


@pytest.mark.slow
def test_train_entry_point_fits_and_evaluates(tmp_path):
    ov = ["+model=moments", "data=quadratic", "data.latent_dim=3", "data.out_dim=8", "data.n_train=20000",
          "data.n_test=500", "eval=fast", "logger=none", "plots=false", "progress=false", "seed=0"]
    rec = run_inprocess(ov, tmp_path)
    assert rec["status"] == "completed", rec.get("reason")
    on_disk = metrics(tmp_path)
    fit, m = on_disk["fit"], on_disk["metrics"]
    assert fit["converged"] and fit["restarts"] == 3 and 0 < fit["oracle_param_error"] < 0.2
    # The shared evaluation's gauge-aligned error is the fit's: within 10 % of the oracle floor.
    assert 0.9 * fit["oracle_param_error"] <= m["param_error"] <= 1.1 * fit["oracle_param_error"]
    assert on_disk["timing"]["fit_time_s"] > 0

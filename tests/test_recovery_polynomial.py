"""Moment matching for x_a = sum_l lam_al <v_al, g>^w (MATH 3): closed forms, Jacobian, recovery."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from pfbench import ConfigError
from pfbench.families import make_instance, parameter_error
from pfbench.recovery.polynomial import (
    PolynomialMomentEstimator,
    PolynomialMoments,
    hermite_power_coeffs,
    population_summary,
)
from pfbench.seeding import numpy_generator, torch_generator
from tests.runner import metrics, run_inprocess


def _instance(r, d, w, L, seed):
    return make_instance("polynomial", r, d, degree=w, rank=L, generator=torch_generator(seed, "instance"))


def _err(truth, est) -> float:
    p = truth.params()
    return parameter_error("polynomial", p, {"lam": est.lam_, "v": est.v_}, degree=truth.degree)["param_error"]


@pytest.mark.parametrize("w", [1, 2, 3, 4, 5])
def test_hermite_coefficients_reproduce_the_power(w):
    s = np.linspace(-3, 3, 13)
    He = np.polynomial.hermite_e.hermeval
    val = sum(a * He(s, [0] * k + [1]) for k, a in hermite_power_coeffs(w))
    assert np.abs(val - s**w).max() <= 1e-12 * np.abs(s**w).max()


@pytest.mark.parametrize("w", [1, 2, 3, 4])
def test_closed_form_moments_equal_gauss_hermite_quadrature(w):
    # 20-point Gauss-Hermite in r = 2 is exact for polynomials of degree <= 39 >= 3 w.
    d, L, r = 3, 2, 2
    rng = numpy_generator(w, "test_poly")
    lam, v = rng.standard_normal((d, L)), rng.standard_normal((d, L, r))
    x, wq = np.polynomial.hermite_e.hermegauss(20)
    g = np.array(list(itertools.product(x, x)))
    wt = np.prod(np.array(list(itertools.product(wq, wq))), axis=1)
    wt /= wt.sum()
    X = (np.einsum("alr,sr->sal", v, g) ** w * lam).sum(-1)
    mu = wt @ X
    Xc = X - mu
    cov = np.einsum("s,sa,sb->ab", wt, Xc, Xc)
    k3 = np.einsum("s,sa,sb,sc->abc", wt, Xc, Xc, Xc)
    m, c, t = PolynomialMoments(w, True)(torch.from_numpy(lam), torch.from_numpy(v))
    assert np.abs(m.numpy() - mu).max() <= 1e-12 * max(np.abs(X).max(), 1.0)
    assert np.abs(c.numpy() - cov).max() <= 1e-12 * np.abs(cov).max()
    if w % 2:  # odd w: x is odd in g, every odd moment vanishes
        assert np.abs(t.numpy()).max() == 0.0 and np.abs(k3).max() <= 1e-9 * np.abs(cov).max() ** 1.5
    else:
        assert np.abs(t.numpy() - k3).max() <= 1e-12 * np.abs(k3).max()


@pytest.mark.parametrize("w", [2, 3])
def test_closed_form_jacobian_equals_forward_mode_autodiff(w):
    d, L, r = 3, 2, 3
    rng = numpy_generator(10 + w, "test_poly")
    lam, v = torch.from_numpy(rng.standard_normal((d, L))), torch.from_numpy(rng.standard_normal((d, L, r)))
    pm = PolynomialMoments(w, True)
    iu, ju = np.triu_indices(d)
    pairs = (torch.from_numpy(iu), torch.from_numpy(ju))
    tri = tuple(torch.from_numpy(t) for t in np.array(list(itertools.combinations_with_replacement(range(d), 3))).T)
    mean, Jm, cov, Jc, k3, Jk = pm.with_jacobian(lam, v, pairs, tri)

    def f(x):
        m, c, t = pm(x[:d * L].view(d, L), x[d * L:].view(d, L, r))
        return torch.cat([m, c[pairs], t[tri]])

    x = torch.cat([lam.reshape(-1), v.reshape(-1)])
    J = torch.func.jacfwd(f)(x)
    mine = torch.cat([Jm, Jc, Jk])
    assert float((torch.cat([mean, cov, k3]) - f(x)).abs().max()) <= 1e-12 * float(f(x).abs().max())
    assert float((J - mine).abs().max()) <= 1e-12 * float(J.abs().max())


def test_exact_recovery_degree2_through_the_quadratic_start():
    r, d, w, L = 3, 10, 2, 2
    truth = _instance(r, d, w, L, seed=0)
    p = truth.params()
    est = PolynomialMomentEstimator(latent_dim=r, out_dim=d, degree=w, rank=L, restarts=2)
    est.fit_moments(population_summary(p["lam"], p["v"], w))
    # The polynomial gauge alignment (on the tensors S_a) resolves errors to about 1e-8 here.
    assert _err(truth, est) <= 1e-6
    assert 0.0 <= est.info_["final_loss"] <= 1e-20 and est.info_["third_cumulant_used"]


def test_exact_recovery_degree3_rank1_from_random_starts():
    r, d, w, L = 3, 15, 3, 1
    truth = _instance(r, d, w, L, seed=1)
    p = truth.params()
    est = PolynomialMomentEstimator(latent_dim=r, out_dim=d, degree=w, rank=L, restarts=2)
    est.fit_moments(population_summary(p["lam"], p["v"], w))
    assert _err(truth, est) <= 1e-7
    assert est.info_["converged"] and not est.info_["third_cumulant_used"]
    assert 0.0 <= est.info_["loss_third_term"] == 0.0 and est.info_["loss_mean_term"] == 0.0


def test_gauge_leaves_the_loss_unchanged():
    # v -> U v (U in O(r)), (lam, v) -> (c^-w lam, c v) and swapping the L terms change no moment.
    r, d, w, L = 3, 6, 2, 2
    truth = _instance(r, d, w, L, seed=2)
    other = _instance(r, d, w, L, seed=3).params()
    est = PolynomialMomentEstimator(latent_dim=r, out_dim=d, degree=w, rank=L)
    res_jac, _ = est._residuals(population_summary(other["lam"], other["v"], w))
    lam, v = truth.params()["lam"].numpy(), truth.params()["v"].numpy()
    U = np.linalg.qr(numpy_generator(0, "test_rot").standard_normal((r, r)))[0]
    f0 = float((res_jac(est._pack(lam, v), False)[0] ** 2).sum())
    variants = [(lam, v @ U.T), (lam * 2.0**-w, 2.0 * v), (lam[:, ::-1], v[:, ::-1])]
    for lam2, v2 in variants:
        f = float((res_jac(est._pack(lam2, v2), False)[0] ** 2).sum())
        assert abs(f - f0) <= 1e-12 * f0 and f0 > 1e-3


def test_bad_configuration_is_a_one_line_error():
    with pytest.raises(ConfigError, match="init='spectral'"):
        PolynomialMomentEstimator(latent_dim=2, out_dim=4, init="spectral").validate()
    with pytest.raises(ConfigError, match="rank=0"):
        PolynomialMomentEstimator(latent_dim=2, out_dim=4, rank=0).validate()
    est = PolynomialMomentEstimator(latent_dim=2, out_dim=4)
    with pytest.raises(ConfigError, match=r"expected \(n, 4\)"):
        est.fit(np.zeros((10, 3)))


@pytest.mark.slow
def test_from_samples_matches_the_oracle_and_runs_through_the_entry_point(tmp_path):
    r, d, w, L = 3, 10, 2, 2
    ov = ["+model=moments", "data=polynomial", f"data.latent_dim={r}", f"data.out_dim={d}", f"data.degree={w}",
          f"data.rank={L}", "data.instance.kind=random", "data.n_train=50000", "data.n_test=500", "eval=fast",
          "logger=none", "plots=false", "progress=false", "seed=0"]
    rec = run_inprocess(ov, tmp_path)
    assert rec["status"] == "completed", rec.get("reason")
    out = metrics(tmp_path)
    fit, m = out["fit"], out["metrics"]
    assert fit["converged"] and fit["third_cumulant_used"] and fit["restarts"] == 3
    # Sampling noise (n = 5e4): the fit sits at the oracle floor, and both are small but non-zero.
    assert 0.9 <= fit["fit_to_oracle_error_ratio"] <= 1.1
    assert 0.002 <= m["param_error"] <= 0.2 and math.isfinite(fit["oracle_param_error"])

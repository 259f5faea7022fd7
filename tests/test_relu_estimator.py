"""Wu-Dimakis-Sanghavi estimator: truncated-normal algebra, MLE solvers, angle identity, paper metrics."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import yaml
from scipy.integrate import quad
from scipy.optimize import minimize
from scipy.special import log_ndtr

from pfbench import CONF_DIR, ConfigError
from pfbench.families.relu import OneLayerReLUPushforward, wds_instance, wds_singular_values
from pfbench.recovery import make_estimator
from pfbench.recovery.relu_estimator import (
    V1_BOUNDS,
    V2_BOUND,
    ReLUMomentEstimator,
    gaussian_kl,
    psd_rank_k,
    relu_paper_metrics,
    truncnorm_log_partition,
    truncnorm_mle_newton,
    truncnorm_stats,
    tv_proxy,
)
from pfbench.seeding import numpy_generator, torch_generator


def _quad_moments(v1: float, v2: float, c: float) -> np.ndarray:
    """[log Z, E y, E y^2, E y^3, E y^4] of p(y) ~ exp(-v1 y^2/2 + v2 y) on (c, inf), by quadrature."""
    mu = v2 / v1
    shift = -0.5 * v1 * max(c, mu) ** 2 + v2 * max(c, mu)  # the log-density maximum, for scaling

    def f(y: float, j: int) -> float:
        return y**j * math.exp(-0.5 * v1 * y * y + v2 * y - shift)

    z = quad(f, c, math.inf, args=(0,), epsabs=0, epsrel=1e-12, limit=200)[0]
    mom = [quad(f, c, math.inf, args=(j,), epsabs=0, epsrel=1e-12, limit=200)[0] / z for j in range(1, 5)]
    return np.array([math.log(z) + shift, *mom])


CASES = [(1.0, 0.0, -1.3), (0.4, -0.5, -1.32), (2.5, 2.0, -0.7), (0.5, 1.5, -3.0), (3.0, -3.0, -1.0)]


@pytest.mark.parametrize("v1,v2,c", CASES)
def test_truncnorm_stats_match_quadrature(v1: float, v2: float, c: float) -> None:
    logz, m1, m2, m3, m4 = _quad_moments(v1, v2, c)
    v, cc = np.array([[v1, v2]]), np.array([c])
    assert abs(truncnorm_log_partition(v, cc)[0] - logz) <= 1e-10
    mean, cov = truncnorm_stats(v, cc)
    assert abs(mean[0, 0] + 0.5 * m2) <= 1e-10 * (1 + m2)
    assert abs(mean[0, 1] - m1) <= 1e-10 * (1 + abs(m1))
    ref = np.array([[0.25 * (m4 - m2 * m2), -0.5 * (m3 - m1 * m2)], [-0.5 * (m3 - m1 * m2), m2 - m1 * m1]])
    assert np.max(np.abs(cov[0] - ref)) <= 1e-8 * np.max(np.abs(ref))


def test_newton_recovers_population_parameters() -> None:
    # the MLE at the exact population moments of p_{v*} is v* itself (the score vanishes only there)
    inside = [case for case in CASES if V1_BOUNDS[0] <= case[0] <= V1_BOUNDS[1] and abs(case[1]) <= V2_BOUND]
    c = np.array([case[2] for case in inside])
    tbar = np.array([[-0.5 * _quad_moments(*case)[2], _quad_moments(*case)[1]] for case in inside])
    v, info = truncnorm_mle_newton(c, tbar)
    assert info["converged"] and info["box_active_coords"] == 0
    assert 3 <= info["newton_iterations"] <= 15
    assert np.max(np.abs(v - np.array([case[:2] for case in inside]))) <= 1e-7


@pytest.mark.parametrize("ulps", [-3, -2, -1, 1, 2, 3])
def test_newton_on_the_box_corner_is_not_a_knife_edge(ulps: int) -> None:
    # v* = (3, -3) lies exactly on a corner of the box: moments rounded differently by another CPU
    # (a few ulp) must not flip the solution into the box-constrained path
    q = _quad_moments(3.0, -3.0, -1.0)
    tbar = np.array([[-0.5 * q[2], q[1]]])
    for j in range(2):
        shifted = tbar.copy()
        shifted[0, j] = shifted[0, j] + ulps * np.spacing(shifted[0, j])
        v, info = truncnorm_mle_newton(np.array([-1.0]), shifted)
        assert info["converged"] and info["box_active_coords"] == 0
        assert V1_BOUNDS[0] <= v[0, 0] <= V1_BOUNDS[1] and abs(v[0, 1]) <= V2_BOUND  # clipped onto the box
        assert np.max(np.abs(v[0] - [3.0, -3.0])) <= 1e-6


def test_newton_on_the_box_boundary_satisfies_kkt() -> None:
    # v* = (0.15, -1) lies below the box (v1 >= 1/3): the constrained maximizer sits on v1 = 1/3
    c = np.array([-1.0])
    q = _quad_moments(0.15, -1.0, -1.0)
    tbar = np.array([[-0.5 * q[2], q[1]]])
    v, info = truncnorm_mle_newton(c, tbar)
    assert info["box_active_coords"] == 1
    assert abs(v[0, 0] - V1_BOUNDS[0]) <= 1e-9
    grad = tbar[0] - truncnorm_stats(v, c)[0][0]
    assert -1e3 <= grad[0] < 0  # l would still increase by lowering v1: the bound is active
    assert abs(grad[1]) <= 1e-6  # v2 is interior: stationary along it
    # no point of a fine grid on the box beats it
    g1, g2 = np.meshgrid(np.linspace(*V1_BOUNDS, 121), np.linspace(-V2_BOUND, V2_BOUND, 121))
    grid = np.stack([g1.ravel(), g2.ravel()], -1)
    ll = (grid * tbar[0]).sum(-1) - truncnorm_log_partition(grid, np.full(len(grid), -1.0))
    best = float((v[0] * tbar[0]).sum() - truncnorm_log_partition(v, c)[0])
    assert 0 <= best - ll.max() <= 1e-2


@pytest.mark.parametrize("theta", [0.3, 1.2, 2.5])
def test_angle_identity_by_simulation(theta: float) -> None:
    # P[x_1 > b_1, x_2 > b_2] = P[<w_1, z> > 0, <w_2, z> > 0] = (pi - theta)/(2 pi), any norms, b >= 0
    W = torch.tensor([[1.3, 0.0, 0.0], [0.7 * math.cos(theta), 0.7 * math.sin(theta), 0.0]],
                     dtype=torch.float64)
    b = torch.tensor([0.4, 0.0], dtype=torch.float64)
    G = OneLayerReLUPushforward(3, 2, dtype=torch.float64).set_params({"W": W, "b": b}).requires_grad_(False)
    n = 200_000
    x = G.sample(n, torch_generator(1, f"angle{theta}")).numpy()
    p_hat = np.mean((x[:, 0] > 0.4) & (x[:, 1] > 0.0))
    p = (math.pi - theta) / (2 * math.pi)
    assert abs(p_hat - p) <= 4.5 * math.sqrt(p * (1 - p) / n)


def _fit(d: int, k: int, n: int, seed: int, **kw) -> tuple[ReLUMomentEstimator, OneLayerReLUPushforward]:
    truth = wds_instance(d, k, kw.pop("kappa", 1.0), torch_generator(seed, "instance"))
    X = truth.sample(n, torch_generator(seed, "train"))
    est = ReLUMomentEstimator(latent_dim=k, out_dim=d, seed=seed, **kw).fit(X)
    return est, truth


def truncated_normal_mle(xpos: np.ndarray) -> tuple[float, float]:
    """MLE (mu, s) of N(mu, s^2) truncated to (0, inf) from its positive samples, written out directly.

    Per sample -log p = log s + (x - mu)^2 / (2 s^2) + log Phi(mu/s) + const, minimized by BFGS over
    (mu, log s) with the exact gradient, in the data's own units (no standardization, no box).
    """
    m1, m2 = float(np.mean(xpos)), float(np.mean(xpos * xpos))

    def nll(p: np.ndarray) -> tuple[float, np.ndarray]:
        mu, s = p[0], math.exp(p[1])
        a, q = mu / s, (m2 - 2 * mu * m1 + mu * mu) / (2 * s * s)
        mills = math.exp(-0.5 * a * a - 0.5 * math.log(2 * math.pi) - float(log_ndtr(a)))  # phi(a)/Phi(a)
        return p[1] + q + float(log_ndtr(a)), np.array([(mu - m1) / (s * s) + mills / s, 1 - 2 * q - mills * a])

    res = minimize(nll, np.array([m1, math.log(float(np.std(xpos)))]), jac=True, method="BFGS",
                   options={"gtol": 1e-12, "maxiter": 1000})
    return float(res.x[0]), math.exp(float(res.x[1]))


def independent_relu_estimate(X: np.ndarray, b_threshold: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(b_hat, row norms, Sigma_hat) of MATH section 4, from the direct MLE and a loop over pairs.

    The angle step thresholds at ``b_threshold`` (pass the estimator's b_hat, itself checked against the
    MLE here, so that a sample within rounding of the threshold cannot flip an indicator).
    """
    d = X.shape[1]
    fits = [truncated_normal_mle(X[X[:, i] > 0, i]) for i in range(d)]
    b_hat = np.array([max(mu, 0.0) for mu, _ in fits])
    norms = np.array([sd for _, sd in fits])
    sigma = np.empty((d, d))
    for i in range(d):
        for j in range(d):
            p_both = np.mean((X[:, i] > b_threshold[i]) & (X[:, j] > b_threshold[j])) if i != j else 0.5
            sigma[i, j] = norms[i] * norms[j] * math.cos(math.pi - 2 * math.pi * p_both)
    return b_hat, norms, sigma


def test_estimator_equals_independent_mle_and_angle_formula() -> None:
    est, truth = _fit(4, 4, 100_000, seed=3)
    X = truth.sample(100_000, torch_generator(3, "train")).numpy()
    b_ref, norms_ref, sigma_ref = independent_relu_estimate(X, est.b_)
    assert np.max(np.abs(est.b_ - b_ref)) <= 1e-6
    assert np.max(np.abs(est.row_norms_ / norms_ref - 1)) <= 1e-6
    assert np.max(np.abs(est.sigma_ - sigma_ref)) <= 1e-6 * np.max(np.abs(sigma_ref))
    assert np.sum(b_ref == 0.0) >= 1 and np.sum(b_ref > 0.1) >= 1  # both the clipped and the interior case
    # the paper's metrics of that estimate, from their definitions
    W, b = truth.W.numpy(), truth.b.numpy()
    m = est.extra_metrics(truth)
    wf2 = np.sum(W * W)
    assert abs(m["sigma_error"] - np.linalg.norm(sigma_ref - W @ W.T) / wf2) <= 1e-6
    assert abs(m["bias_error"] - np.linalg.norm(b_ref - b) / math.sqrt(wf2)) <= 1e-6
    assert m["sigma_error_psd"] == pytest.approx(m["sigma_error"], abs=1e-12)  # PSD here: nothing projected
    assert est.info_["converged"] and not est.info_["sigma_psd_projected"]
    # the fitted generator carries the estimate: W_hat W_hat^T = Sigma_hat (k = d, PSD) and b_hat
    Wh = est.pushforward_.W.numpy()
    assert np.max(np.abs(Wh @ Wh.T - est.sigma_)) <= 1e-10
    assert np.array_equal(est.pushforward_.b.numpy(), est.b_)
    assert est.pushforward_.W.dtype == torch.float64


def test_estimator_error_falls_like_n_to_the_minus_half() -> None:
    # Consistent with the O(n^-1/2) guarantee and no bias: on one instance, the root mean squared
    # error of (Sigma_hat, b_hat) over 32 samples falls like n^-1/2 from n = 5k to 80k (nested
    # prefixes of each sample), so the log-log slope is -1/2 (measured over six seed sets of 40:
    # -0.42..-0.48, standard deviation about 0.02). A bias (a wrong threshold, a moment estimate in
    # place of the MLE) would hold the error up at the larger n and flatten the slope.
    d = k = 8
    sizes = (5_000, 80_000)
    truth = wds_instance(d, k, 1.0, torch_generator(0, "instance"))
    W, b = truth.W.numpy(), truth.b.numpy()
    wf2 = float(np.sum(W * W))
    sq = dict.fromkeys(sizes, 0.0)
    for s in range(32):
        X = truth.sample(sizes[-1], torch_generator(s, "train")).numpy()
        for m in sizes:
            with warnings.catch_warnings():  # a b_i = 0 coordinate can look negative by chance
                warnings.simplefilter("ignore", UserWarning)
                est = ReLUMomentEstimator(latent_dim=k, out_dim=d).fit(X[:m])
            sq[m] += np.sum((est.sigma_ - W @ W.T) ** 2) / wf2**2 + np.sum((est.b_ - b) ** 2) / wf2
    slope = 0.5 * math.log(sq[sizes[1]] / sq[sizes[0]]) / math.log(sizes[1] / sizes[0])
    assert -0.65 <= slope <= -0.35


@pytest.mark.slow
def test_sgd_reference_converges_to_the_mle() -> None:
    # The SGD and Newton maximize the same concave likelihood, so their difference must vanish as n
    # grows: averaged SGD converges at rate n^-1/2 (ratio 1/2 for 4x the samples), faster while its
    # start-up transient (~1/n, ratio 1/4) dominates (measured: 0.37..0.41 over 5 seed sets).
    # Cramer-Rao: the MLE is asymptotically efficient, so the SGD cannot be markedly more accurate.
    d = k = 3
    n = 15_000
    truth = wds_instance(d, k, 1.0, torch_generator(0, "instance"))
    W, b = truth.W.numpy(), truth.b.numpy()
    theta = np.concatenate([b, np.linalg.norm(W, axis=1)])
    sq = {m: np.zeros(3) for m in (n, 4 * n)}
    for s in range(8):
        X = truth.sample(4 * n, torch_generator(s, "train")).numpy()
        for m in sq:
            nw = ReLUMomentEstimator(latent_dim=k, out_dim=d).fit(X[:m])
            sg = ReLUMomentEstimator(latent_dim=k, out_dim=d, solver="sgd", seed=s).fit(X[:m])
            tn, ts = np.concatenate([nw.b_, nw.row_norms_]), np.concatenate([sg.b_, sg.row_norms_])
            sq[m] += [np.sum((ts - tn) ** 2), np.sum((tn - theta) ** 2), np.sum((ts - theta) ** 2)]
            assert sg.info_["sgd_steps"] == int((X[:m] > 0).sum(0).max()) // 10  # one pass, batches of 10
    gap_ratio = math.sqrt(sq[4 * n][0] / sq[n][0])
    assert 0.2 <= gap_ratio <= 0.6
    for m in sq:
        assert sq[m][2] >= 0.8 * sq[m][1]


def test_negative_bias_warns_and_names_coordinates() -> None:
    G = OneLayerReLUPushforward(2, 3, dtype=torch.float64).set_params(
        {"W": torch.eye(3, 2, dtype=torch.float64) + 0.5,
         "b": torch.tensor([0.5, -1.0, 0.0], dtype=torch.float64)}).requires_grad_(False)
    X = G.sample(20_000, torch_generator(0, "neg"))  # P[x_2 > 0] = P[N(0, 2.5) > 1] = 0.2636
    with pytest.warns(UserWarning, match=r"coordinates \[1\] are positive in only 0\.26"):
        est = ReLUMomentEstimator(latent_dim=2, out_dim=3).fit(X)
    assert est.info_["negative_bias_coords"] == 1 and est.info_["negative_bias_coord_list"] == "1"
    assert est.b_[1] == 0.0  # clipped


def test_gaussian_kl_and_tv_proxy_closed_forms() -> None:
    one = np.ones(1)
    # KL(N(0,1) || N(0,4)) = (1/4 - 1 + ln 4)/2, the reverse (4 - 1 - ln 4)/2
    fwd, rev = 0.5 * (0.25 - 1 + math.log(4)), 0.5 * (4 - 1 - math.log(4))
    assert abs(gaussian_kl(0 * one, one[None], 0 * one, 4 * one[None]) - fwd) <= 1e-12
    assert abs(gaussian_kl(0 * one, 4 * one[None], 0 * one, one[None]) - rev) <= 1e-12
    assert abs(tv_proxy(0 * one, one[None], 0 * one, 4 * one[None]) - math.sqrt(fwd / 2)) <= 1e-12
    # mean shift 1 in unit variance: KL = 1/2 both ways, proxy 1/2
    assert abs(tv_proxy(0 * one, one[None], one, one[None]) - 0.5) <= 1e-12
    # a singular covariance: mutually singular Gaussians, proxy capped at the TV maximum 1
    assert tv_proxy(np.zeros(2), np.eye(2), np.zeros(2), np.diag([1.0, 0.0])) == 1.0


def test_paper_metrics_are_gauge_invariant_and_vanish_at_truth() -> None:
    rng = numpy_generator(0, "metrics")
    W, b = rng.normal(size=(5, 3)), np.abs(rng.normal(size=5))
    U = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    sig_hat, b_hat = W @ W.T + 0.01 * np.eye(5), b + 0.02
    m1, m2 = relu_paper_metrics(W, b, sig_hat, b_hat), relu_paper_metrics(W @ U, b, sig_hat, b_hat)
    for key in m1:
        assert abs(m1[key] - m2[key]) <= 1e-12
    wf2 = np.sum(W * W)
    assert abs(m1["sigma_error"] - 0.01 * math.sqrt(5) / wf2) <= 1e-12
    assert abs(m1["bias_error"] - 0.02 * math.sqrt(5) / math.sqrt(wf2)) <= 1e-12
    zero = relu_paper_metrics(W, b, (W @ U) @ (W @ U).T, b)
    assert zero["sigma_error"] <= 1e-14 and zero["bias_error"] == 0.0


def test_psd_rank_k_projects_and_truncates() -> None:
    rng = numpy_generator(1, "psd")
    Q = np.linalg.qr(rng.normal(size=(4, 4)))[0]
    S = Q @ np.diag([3.0, 1.0, 0.2, -0.5]) @ Q.T
    W, min_eig = psd_rank_k(S, 4)
    assert abs(min_eig + 0.5) <= 1e-12
    assert np.max(np.abs(W @ W.T - Q @ np.diag([3.0, 1.0, 0.2, 0.0]) @ Q.T)) <= 1e-12
    W2, _ = psd_rank_k(S, 2)  # Eckart-Young: the top two eigenpairs
    assert np.max(np.abs(W2 @ W2.T - Q @ np.diag([3.0, 1.0, 0.0, 0.0]) @ Q.T)) <= 1e-12
    W6, _ = psd_rank_k(S, 6)  # k > d: zero columns
    assert W6.shape == (4, 6) and np.all(W6[:, 4:] == 0)


def test_non_psd_estimate_is_projected_and_flagged() -> None:
    # a rank-2 truth in d = 8: Sigma = W W^T has six zero eigenvalues, so the estimate's six smallest
    # are pure sampling noise of either sign (about n^-1/2 = 0.01 at n = 10k) and the smallest is
    # negative whatever the CPU's rounding (all six >= 0 would be a 1-in-64 event even for one seed)
    est, truth = _fit(8, 2, 10_000, seed=0, solver="newton")
    lam = np.linalg.eigvalsh(est.sigma_)
    assert np.sum(np.abs(lam) <= 0.1) >= 6  # the six null directions are near zero
    assert lam[0] <= -1e-4
    assert est.info_["sigma_psd_projected"] == bool(lam[0] < 0)
    assert abs(est.info_["sigma_min_eig"] - lam[0]) <= 1e-12
    assert est.info_["sigma_psd_projected"]
    assert np.linalg.eigvalsh(est.sigma_psd_)[0] >= -1e-12
    m = est.extra_metrics(truth)
    assert m["sigma_error_psd"] <= m["sigma_error"] + 1e-12  # projecting onto the PSD cone only gets closer
    assert 0.0 < m["tv_proxy"] <= 1.0


def test_wds_instance_recipe() -> None:
    G = wds_instance(6, 4, 9.0, torch_generator(2, "instance"))
    W, b = G.W.numpy(), G.b.numpy()
    assert G.W.dtype == torch.float64 and not G.W.requires_grad
    ev = np.sort(np.linalg.eigvalsh(W @ W.T))[::-1][:4]
    assert np.max(np.abs(ev - wds_singular_values(4, 9.0) ** 2)) <= 1e-12
    assert abs(ev[0] / ev[-1] - 9.0) <= 1e-9
    assert np.all(b >= 0)
    again = wds_instance(6, 4, 9.0, torch_generator(2, "instance"))
    assert torch.equal(again.W, G.W) and torch.equal(again.b, G.b)
    with pytest.raises(ConfigError, match="k=7 > d=6"):
        wds_instance(6, 7, 1.0, torch_generator(0, "x"))
    with pytest.raises(ConfigError, match="kappa=0.5"):
        wds_instance(6, 4, 0.5, torch_generator(0, "x"))


def test_bad_inputs_raise_one_line_errors() -> None:
    X = np.abs(numpy_generator(0, "bad").normal(size=(100, 3)))
    with pytest.raises(ConfigError, match="negative entries"):
        ReLUMomentEstimator(latent_dim=3, out_dim=3).fit(X - 1.0)
    with pytest.raises(ConfigError, match=r"expected \(n, 4\)"):
        ReLUMomentEstimator(latent_dim=3, out_dim=4).fit(X)
    with pytest.raises(ConfigError, match="solver='lbfgs'"):
        ReLUMomentEstimator(latent_dim=3, out_dim=3, solver="lbfgs").fit(X)
    X[:, 2] = 0.0
    X[:3, 2] = 1.0
    with pytest.raises(ConfigError, match=r"coordinates \[2\] have fewer than 10 positive"):
        ReLUMomentEstimator(latent_dim=3, out_dim=3).fit(X)
    with pytest.raises(TypeError):
        ReLUMomentEstimator(latent_dim=3, out_dim=3, step=1)


def test_model_config_constructs_through_the_registry() -> None:
    cfg = yaml.safe_load((CONF_DIR / "model" / "relu_moments.yaml").read_text())
    assert cfg["name"] == "relu_moments" and cfg["kind"] == "estimator"
    est = make_estimator("relu_moments", "relu", latent_dim=3, out_dim=3, seed=0, params=cfg["params"])
    assert isinstance(est, ReLUMomentEstimator) and est.solver == "newton"
    truth = wds_instance(3, 3, 1.0, torch_generator(0, "instance"))
    X = truth.sample(30_000, torch_generator(0, "train")).numpy()
    est.fit(X)
    b_ref, norms_ref, sigma_ref = independent_relu_estimate(X, est.b_)
    assert np.max(np.abs(est.b_ - b_ref)) <= 1e-6
    assert np.max(np.abs(est.sigma_ - sigma_ref)) <= 1e-6 * np.max(np.abs(sigma_ref))

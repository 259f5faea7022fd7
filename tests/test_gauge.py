"""Gauge-aligned parameter errors: zero on the gauge orbit, known values off it, hand-computed ReLU values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.optimize
import torch

from pfbench import ConfigError
from pfbench.families import build_family, parameter_error
from pfbench.families.polynomial import polynomial_gauge_error
from pfbench.families.quadratic import quadratic_gauge_align, quadratic_gauge_error, quadratic_gauge_lower_bound
from pfbench.families.relu import relu_gauge_error
from pfbench.families.relu_deep import deep_relu_gauge_error
from tests.references import brute_force_gauge_error_r2


def haar(r: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-random element of O(r) (QR of a Gaussian with the sign fix)."""
    q, rr = np.linalg.qr(rng.standard_normal((r, r)))
    return q * np.sign(np.diag(rr))


def rand_sym(d: int, r: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.standard_normal((d, r, r))
    return (a + a.transpose(0, 2, 1)) / 2 / math.sqrt(r)


def orthogonal_to_orbit(q: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Project e onto the orthogonal complement of the orbit's tangent space {[A, Q_a]: A skew} at q."""
    d, r, _ = q.shape
    basis = []
    for i in range(r):
        for j in range(i + 1, r):
            a = np.zeros((r, r))
            a[i, j], a[j, i] = 1.0, -1.0
            basis.append((a @ q - q @ a).reshape(-1))
    t = np.array(basis).T  # (d r r, r(r-1)/2)
    coef, *_ = np.linalg.lstsq(t, e.reshape(-1), rcond=None)
    return e - (t @ coef).reshape(e.shape)


# ------------------------------------------------------------------------------------------- quadratic


@pytest.mark.parametrize("d,r,seed", [(20, 5, 0), (6, 3, 1), (30, 8, 2), (3, 2, 3), (4, 1, 4)])
def test_quadratic_zero_on_gauge_orbit(d, r, seed):
    rng = np.random.default_rng(seed)
    q = rand_sym(d, r, rng)
    v = haar(r, rng)
    err, u = quadratic_gauge_align(q, v @ q @ v.T, seed=seed)
    assert 0.0 <= err <= 1e-8
    # the returned rotation really maps Q onto Q_hat
    assert 0.0 <= np.abs(u @ q @ u.T - v @ q @ v.T).max() <= 1e-8


@pytest.mark.parametrize("d,r,seed", [(20, 5, 10), (10, 4, 11), (40, 6, 12)])
def test_quadratic_known_value_off_orbit(d, r, seed):
    # A small perturbation orthogonal to the orbit keeps U = I optimal: error = ||E|| / ||Q||,
    # and applying any further gauge V to the perturbed truth changes nothing.
    rng = np.random.default_rng(seed)
    q = rand_sym(d, r, rng)
    e = orthogonal_to_orbit(q, rand_sym(d, r, rng))
    e *= 0.05 * np.linalg.norm(q) / np.linalg.norm(e)
    v = haar(r, rng)
    expected = 0.05
    assert abs(quadratic_gauge_error(q, q + e) - expected) <= 1e-7
    assert abs(quadratic_gauge_error(q, v @ (q + e) @ v.T, restarts=3, seed=seed) - expected) <= 1e-7


def test_quadratic_matches_brute_force_for_r2():
    # O(2) = rotations and reflections by an angle: a 1-D grid plus local polish is an exact reference.
    rng = np.random.default_rng(5)
    q, qh = rand_sym(7, 2, rng), rand_sym(7, 2, rng)

    ref = brute_force_gauge_error_r2(q, qh)
    got = quadratic_gauge_error(q, qh)
    assert abs(got - ref) <= 1e-7
    assert 0.3 <= ref <= 2.0  # unrelated maps: a clearly non-zero reference


def skew(theta: np.ndarray, r: int) -> np.ndarray:
    a = np.zeros((r, r))
    a[np.triu_indices(r, 1)] = theta
    return a - a.T


def local_gauge_min(q: np.ndarray, qh: np.ndarray, u0: np.ndarray) -> float:
    """A local minimum of ||U Q U^T - Q_hat|| / ||Q|| over U = U0 expm(A), A skew: BFGS on A's entries.

    An optimizer independent of the code's (eigenbasis candidates + polar fixed point).
    """
    r = q.shape[1]

    def f(theta: np.ndarray) -> float:
        u = u0 @ scipy.linalg.expm(skew(theta, r))
        return float(np.sum((u @ q @ u.T - qh) ** 2))

    res = scipy.optimize.minimize(f, np.zeros(r * (r - 1) // 2), method="BFGS", options={"gtol": 1e-9})
    return math.sqrt(max(float(res.fun), 0.0)) / float(np.linalg.norm(q))


def hoffman_wielandt_bound(q: np.ndarray, qh: np.ndarray) -> float:
    """A lower bound valid for every U: ||U Q_a U^T - Q_hat_a||_F >= ||sorted eig(Q_a) - sorted eig(Q_hat_a)||."""
    gaps = [np.sum((np.linalg.eigvalsh(a) - np.linalg.eigvalsh(b)) ** 2) for a, b in zip(q, qh)]
    return math.sqrt(float(np.sum(gaps))) / float(np.linalg.norm(q))


@pytest.mark.parametrize("seed", [60, 61, 62])
def test_quadratic_rotated_noisy_truth_finds_the_global_minimum(seed):
    # Q_hat = V (Q + E) V^T, V Haar, E generic noise of 30 %: the minimum over O(r) is non-convex
    # (BFGS from random rotations stops at local minima near 0.8-1.1), U = I is a poor candidate,
    # and the reference is the best of an independent multi-start local search (seeded with V).
    rng = np.random.default_rng(seed)
    d, r = 12, 4
    q = rand_sym(d, r, rng)
    v = haar(r, rng)
    e = rand_sym(d, r, rng)
    e *= 0.3 * np.linalg.norm(q) / np.linalg.norm(e)
    qh = v @ (q + e) @ v.T
    err, u = quadratic_gauge_align(q, qh, seed=seed)
    ref = min(local_gauge_min(q, qh, u0) for u0 in [v] + [haar(r, rng) for _ in range(8)])
    assert abs(err - ref) <= 1e-7
    # two-sided bounds that hold whatever the search: the error at the true rotation V above,
    # Hoffman-Wielandt below; and far below the error at U = I
    at_true = np.linalg.norm(e) / np.linalg.norm(q)
    assert hoffman_wielandt_bound(q, qh) <= err <= at_true + 1e-12
    assert err <= np.linalg.norm(q - qh) / np.linalg.norm(q) / 2
    # the returned U is orthogonal, attains the error, and is stationary on O(r):
    # sum_a Q_hat_a (U Q_a U^T) is symmetric at a critical point of sum_a <U Q_a U^T, Q_hat_a>
    assert np.abs(u.T @ u - np.eye(r)).max() <= 1e-12
    rot = u @ q @ u.T
    assert abs(np.linalg.norm(rot - qh) / np.linalg.norm(q) - err) <= 1e-12
    m = np.einsum("aij,ajk->ik", qh, rot)
    assert np.abs(m - m.T).max() <= 1e-6 * np.abs(m).max()


def test_quadratic_small_noise_error_is_the_normal_component():
    # E = P + [A, Q]: to first order the tangent part [A, Q] is a rotation, which the gauge removes,
    # so the error is the normal part of P (to relative O(|E|)), well below |E| = the error at V.
    rng = np.random.default_rng(63)
    d, r = 12, 4
    q = rand_sym(d, r, rng)
    v = haar(r, rng)
    p = rand_sym(d, r, rng)
    p *= 1e-4 * np.linalg.norm(q) / np.linalg.norm(p)
    a = skew(rng.standard_normal(r * (r - 1) // 2), r)
    t = a @ q - q @ a
    e = p + t * 3 * np.linalg.norm(p) / np.linalg.norm(t)
    expected = np.linalg.norm(orthogonal_to_orbit(q, p)) / np.linalg.norm(q)
    err = quadratic_gauge_error(q, v @ (q + e) @ v.T, seed=1)
    assert abs(err - expected) <= 1e-3 * expected
    assert err <= 0.5 * np.linalg.norm(e) / np.linalg.norm(q)


def test_quadratic_rejects_mismatched_shapes():
    with pytest.raises(ConfigError, match="equal shape"):
        quadratic_gauge_error(np.zeros((3, 2, 2)) + 1, np.zeros((3, 3, 3)))
    with pytest.raises(ConfigError, match="non-finite"):
        quadratic_gauge_error(np.ones((3, 2, 2)), np.full((3, 2, 2), np.nan))


def test_parameter_error_on_pushforward_params():
    truth = build_family("quadratic", 4, 12, dtype=torch.float64)
    truth.reset_random_(torch.Generator().manual_seed(1))
    est = build_family("quadratic", 4, 12, dtype=torch.float64)
    v = torch.from_numpy(haar(4, np.random.default_rng(7)))
    est.set_params({"Q": v @ truth.params()["Q"] @ v.T})
    out = parameter_error("quadratic", truth.params(), est.params())
    assert set(out) == {"param_error", "param_error_starts", "param_error_starts_at_best", "param_error_search",
                        "param_error_lower_bound", "param_error_certified"}
    assert 0.0 <= out["param_error"] <= 1e-8
    assert out["param_error_certified"] is True and 0.0 <= out["param_error_lower_bound"] <= out["param_error"]
    with pytest.raises(ConfigError, match="unknown|no parameter error"):
        parameter_error("gaussian", truth.params(), est.params())


# ------------------------------------------------------------------------------------------ polynomial


def random_poly(d: int, L: int, r: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.standard_normal((d, L)) / math.sqrt(L), rng.standard_normal((d, L, r)) / math.sqrt(r)


@pytest.mark.parametrize("w", [2, 3, 4])
def test_polynomial_zero_on_full_gauge(w):
    # rotation of all v, relabelling of the terms of each output, (lam, v) -> (c^-w lam, c v), sign flips
    rng = np.random.default_rng(20 + w)
    d, L, r = 12, 3, 4
    lam, v = random_poly(d, L, r, rng)
    u = haar(r, rng)
    perm = np.stack([rng.permutation(L) for _ in range(d)])
    c = rng.uniform(0.5, 2.0, size=(d, L)) * rng.choice([-1.0, 1.0], size=(d, L))
    vh = np.take_along_axis(np.einsum("rs,als->alr", u, v), perm[:, :, None], axis=1) * c[..., None]
    lamh = np.take_along_axis(lam, perm, axis=1) / c**w
    out = polynomial_gauge_error(lam, v, lamh, vh, w, seed=w)
    assert 0.0 <= out["param_error"] <= 1e-8
    assert 0.0 <= out["param_error_components"] <= 1e-7


def test_polynomial_degree2_equals_quadratic():
    # With w = 2 and L = r, (lam, v) is an eigendecomposition of Q_a: both errors must agree.
    rng = np.random.default_rng(30)
    d, r = 10, 4
    q = rand_sym(d, r, rng)
    e = orthogonal_to_orbit(q, rand_sym(d, r, rng))
    e *= 0.03 * np.linalg.norm(q) / np.linalg.norm(e)
    v = haar(r, rng)
    qh = v @ (q + e) @ v.T
    lam, vecs = np.linalg.eigh(q)
    lamh, vecsh = np.linalg.eigh(qh)
    out = polynomial_gauge_error(lam, vecs.transpose(0, 2, 1), lamh, vecsh.transpose(0, 2, 1), 2)
    assert abs(out["param_error"] - 0.03) <= 1e-7
    assert abs(out["param_error"] - quadratic_gauge_error(q, qh)) <= 1e-7


def test_polynomial_rank1_lam_perturbation_known_value():
    # With L = 1, a change of lam alone is orthogonal to the orbit (<v, A v> = 0 for skew A), so
    # the error is sqrt(sum dlam^2 |v|^{2w}) / sqrt(sum lam^2 |v|^{2w}) under any extra rotation.
    rng = np.random.default_rng(31)
    d, r, w = 15, 4, 3
    lam, v = random_poly(d, 1, r, rng)
    dlam = 0.02 * rng.standard_normal((d, 1))
    nv = np.sum(v * v, axis=-1) ** w
    expected = math.sqrt(np.sum(dlam**2 * nv) / np.sum(lam**2 * nv))
    u = haar(r, rng)
    out = polynomial_gauge_error(lam, v, lam + dlam, np.einsum("rs,als->alr", u, v), w)
    assert abs(out["param_error"] - expected) <= 1e-7 * max(1.0, expected)
    assert abs(out["param_error_components"] - expected) <= 1e-7


def test_polynomial_extra_zero_term_and_degree_required():
    rng = np.random.default_rng(32)
    lam, v = random_poly(8, 2, 3, rng)
    lamh = np.concatenate([lam, np.zeros((8, 1))], axis=1)
    vh = np.concatenate([v, rng.standard_normal((8, 1, 3))], axis=1)
    out = polynomial_gauge_error(lam, v, lamh, vh, 3)
    assert 0.0 <= out["param_error"] <= 1e-8
    assert 0.0 <= out["param_error_components"] <= 1e-7
    with pytest.raises(ConfigError, match="degree"):
        parameter_error("polynomial", {"lam": lam, "v": v}, {"lam": lam, "v": v})
    both = parameter_error("polynomial", {"lam": lam, "v": v}, {"lam": lamh, "v": vh}, degree=3)
    assert 0.0 <= both["param_error"] <= 1e-8


# ---------------------------------------------------------------------------------------------- ReLU


def test_relu_hand_computed_values():
    # W = I, W_hat = diag(2, 1), b = 0, b_hat = (1, 0):
    # gram ||diag(3, 0)||_F / ||I||_F^2 = 3/2; Procrustes U = polar(diag(2, 1)) = I -> ||diag(1,0)||/sqrt2;
    # bias 1/sqrt2; headline sqrt(1 + 1)/sqrt(2 + 0) = 1.
    out = relu_gauge_error(np.eye(2), np.zeros(2), np.diag([2.0, 1.0]), np.array([1.0, 0.0]))
    assert abs(out["param_error_gram"] - 1.5) <= 1e-12
    assert abs(out["param_error_procrustes"] - 1 / math.sqrt(2)) <= 1e-12
    assert abs(out["param_error_bias"] - 1 / math.sqrt(2)) <= 1e-12
    assert abs(out["param_error"] - 1.0) <= 1e-12
    # d = 1, k = 2: W = [1, 0], W_hat = [0, 3]: a rotation maps W to [0, 1], leaving |3 - 1| = 2;
    # gram |9 - 1| / 1 = 8; b = 1, b_hat = 2: bias 1; headline sqrt(4 + 1) / sqrt(1 + 1).
    out = relu_gauge_error(np.array([[1.0, 0.0]]), np.array([1.0]), np.array([[0.0, 3.0]]), np.array([2.0]))
    assert abs(out["param_error_gram"] - 8.0) <= 1e-12
    assert abs(out["param_error_procrustes"] - 2.0) <= 1e-12
    assert abs(out["param_error_bias"] - 1.0) <= 1e-12
    assert abs(out["param_error"] - math.sqrt(5 / 2)) <= 1e-12


def test_relu_zero_on_orbit_and_known_value_off_it():
    rng = np.random.default_rng(40)
    d, k = 8, 5
    W = rng.standard_normal((d, k)) / math.sqrt(k)
    b = np.maximum(rng.standard_normal(d), 0)
    u = haar(k, rng)
    out = relu_gauge_error(W, b, W @ u, b)
    assert all(0.0 <= out[key] <= 1e-12 for key in out)
    # E with W^T E symmetric is orthogonal to the orbit's tangent {W A: A skew}; small, U = I is optimal.
    # E = (W^+)^T S with S symmetric: W^T E = S for full column rank W (d >= k).
    s = rng.standard_normal((k, k))
    s = (s + s.T) / 2
    e = np.linalg.pinv(W).T @ s
    assert np.abs(W.T @ e - (W.T @ e).T).max() <= 1e-10
    e *= 0.01 * np.linalg.norm(W) / np.linalg.norm(e)
    out = relu_gauge_error(W, b, (W + e) @ u, b)
    assert abs(out["param_error_procrustes"] - 0.01) <= 1e-10
    assert 0.0 <= out["param_error_bias"] <= 1e-14
    expected = 0.01 * np.linalg.norm(W) / math.hypot(np.linalg.norm(W), np.linalg.norm(b))
    assert abs(out["param_error"] - expected) <= 1e-10
    # gram error equals its closed form for this perturbation: ||(W+E)(W+E)^T - W W^T||_F / ||W||_F^2
    g = (W + e) @ (W + e).T - W @ W.T
    assert abs(out["param_error_gram"] - np.linalg.norm(g) / np.linalg.norm(W) ** 2) <= 1e-12


def test_relu_via_pushforward_params():
    truth = build_family("relu", 3, 4, dtype=torch.float64).reset_random_(torch.Generator().manual_seed(2))
    p = truth.params()
    est = {"W": p["W"] @ torch.from_numpy(haar(3, np.random.default_rng(3))), "b": p["b"] + 0.1}
    out = parameter_error("relu", p, est)
    assert set(out) == {"param_error", "param_error_gram", "param_error_procrustes", "param_error_bias",
                        "param_error_search"}
    assert out["param_error_search"].startswith("exact minimum")
    assert abs(out["param_error_bias"] - 0.1 * 2 / torch.linalg.norm(p["W"]).item()) <= 1e-12
    assert 0.0 <= out["param_error_procrustes"] <= 1e-12


# ----------------------------------------------------------------------------------------- deep ReLU


def deep_gauge_copy(net, rng: np.random.Generator) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """Random latent rotation V, hidden permutations and positive rescalings of a DeepReLUPushforward.

    The copy computes x(z) = net(V z): the same distribution for z ~ N(0, I).
    """
    p = {k: v.numpy().copy() for k, v in net.params().items()}
    nl = len(net.layers)
    v = haar(net.latent_dim, rng)
    p["layers.0.weight"] = p["layers.0.weight"] @ v
    for l in range(nl - 1):
        h = p[f"layers.{l}.weight"].shape[0]
        perm, c = rng.permutation(h), rng.uniform(0.2, 5.0, size=h)
        p[f"layers.{l}.weight"] = p[f"layers.{l}.weight"][perm] * c[:, None]
        if f"layers.{l}.bias" in p:
            p[f"layers.{l}.bias"] = p[f"layers.{l}.bias"][perm] * c
        p[f"layers.{l + 1}.weight"] = p[f"layers.{l + 1}.weight"][:, perm] / c[None, :]
    return {k: torch.from_numpy(a) for k, a in p.items()}, v


@pytest.mark.parametrize("hidden,bias", [([30], False), ([16, 24], True), ([], True)])
def test_deep_relu_zero_on_gauge_orbit(hidden, bias):
    net = build_family("relu_deep", 5, 40, hidden=hidden, bias=bias, dtype=torch.float64)
    net.reset_random_(torch.Generator().manual_seed(4))
    copy, v = deep_gauge_copy(net, np.random.default_rng(50))
    out = parameter_error("relu_deep", net.params(), copy)
    assert 0.0 <= out["param_error"] <= 1e-8
    assert len([k for k in out if k.startswith("param_error_layer")]) == len(hidden) + 1
    # the gauge copy really is the same function
    z = torch.randn(64, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    other = build_family("relu_deep", 5, 40, hidden=hidden, bias=bias, dtype=torch.float64).set_params(copy)
    with torch.no_grad():
        assert 0.0 <= (other(z) - net(z @ torch.from_numpy(v).T)).abs().max().item() <= 1e-10


def test_deep_relu_known_value_for_output_perturbation():
    # In the canonical form (unit incoming rows) only the output layer moves: it carries no gauge and
    # a small change keeps the identity matching, so the error is ||E|| / ||all parameters||.
    rng = np.random.default_rng(51)
    ws = [rng.standard_normal((12, 4)), rng.standard_normal((20, 12))]
    ws[0] /= np.linalg.norm(ws[0], axis=1, keepdims=True)
    true = {f"layers.{i}.weight": torch.from_numpy(w) for i, w in enumerate(ws)}
    e = 0.01 * rng.standard_normal(ws[1].shape)
    est = {"layers.0.weight": true["layers.0.weight"], "layers.1.weight": torch.from_numpy(ws[1] + e)}
    net = build_family("relu_deep", 4, 20, hidden=[12], dtype=torch.float64).set_params(est)
    est_gauged, _ = deep_gauge_copy(net, rng)
    expected = np.linalg.norm(e) / math.sqrt(np.sum(ws[0] ** 2) + np.sum(ws[1] ** 2))
    out = deep_relu_gauge_error(true, est_gauged)
    assert abs(out["param_error"] - expected) <= 1e-10
    assert abs(out["param_error_layer1"] - np.linalg.norm(e) / np.linalg.norm(ws[1])) <= 1e-10
    assert 0.0 <= out["param_error_layer0"] <= 1e-10


def test_deep_relu_unrelated_nets_and_architecture_check():
    a = build_family("relu_deep", 4, 10, hidden=[8], dtype=torch.float64)
    b = build_family("relu_deep", 4, 10, hidden=[8], dtype=torch.float64)
    a.reset_random_(torch.Generator().manual_seed(5))
    b.reset_random_(torch.Generator().manual_seed(6))
    out = parameter_error("relu_deep", a.params(), b.params())
    # never above the unaligned canonical error, never negative, clearly non-zero for independent nets
    assert 0.2 <= out["param_error"] <= 2.0
    c = build_family("relu_deep", 4, 10, hidden=[9], dtype=torch.float64)
    with pytest.raises(ConfigError, match="architectures"):
        parameter_error("relu_deep", a.params(), c.params())


@pytest.mark.parametrize("restarts", [1, 5])
def test_quadratic_parameter_error_says_how_many_starts_reached_it(restarts):
    from pfbench.families import make_instance, parameter_error
    from pfbench.seeding import torch_generator

    truth = make_instance("quadratic", 4, 12, generator=torch_generator(0, "instance")).params()
    rng = np.random.default_rng(3)
    v = np.linalg.qr(rng.standard_normal((4, 4)))[0]
    rotated = {"Q": torch.from_numpy(np.einsum("ij,ajk,lk->ail", v, truth["Q"].numpy(), v))}
    out = parameter_error("quadratic", truth, rotated, restarts=restarts, seed=0)
    # an exact gauge copy: the eigenbasis starts land on V itself, so every screened start reaches 0
    assert out["param_error"] <= 1e-9
    assert out["param_error_starts"] == restarts + 1 and out["param_error_starts_at_best"] >= restarts
    other = make_instance("quadratic", 4, 12, generator=torch_generator(1, "instance")).params()
    out = parameter_error("quadratic", truth, other, restarts=restarts, seed=0)
    k, n = out["param_error_starts_at_best"], out["param_error_starts"]
    # a search the dual bound does not certify is repeated once with 4x the starts
    assert 1 <= k <= n and n in (restarts + 1, 4 * restarts + 1)
    assert f"reached by {k} of {n} refined starts" in out["param_error_search"]
    low, err = out["param_error_lower_bound"], out["param_error"]
    assert 0.0 <= low <= err
    if out["param_error_certified"]:
        assert out["param_error_search"].startswith("global minimum over O(r), certified")
        assert err - low <= 1e-6 * err + 1e-7
    else:
        assert out["param_error_search"].startswith("upper bound on the minimum over O(r)") and n == 4 * restarts + 1


# ------------------------------------------------------------------------ quadratic: the dual certificate


@pytest.mark.parametrize("seed", range(6))
def test_dual_lower_bound_brackets_the_brute_force_minimum_at_r2(seed):
    # r = 2: O(2) is a circle (and its reflection), so a fine grid search is an independent reference
    rng = np.random.default_rng(100 + seed)
    q = rand_sym(6, 2, rng)
    if seed % 2:  # a rotated copy plus noise
        v = haar(2, rng)
        qh = np.einsum("ij,ajk,lk->ail", v, q, v) + 0.3 * rand_sym(6, 2, rng)
    else:  # an unrelated map
        qh = rand_sym(6, 2, rng)
    ref = brute_force_gauge_error_r2(q, qh)
    err, u, info = quadratic_gauge_align(q, qh, return_info=True)
    assert info["lower_bound"] <= ref + 1e-7 and abs(err - ref) <= 1e-7
    # the bound at the minimizer meets it: certified
    assert info["certified"] and ref - info["lower_bound"] <= 1e-6 * ref + 1e-7


@pytest.mark.parametrize("r,d,noise", [(5, 20, 0.1), (5, 20, 0.7), (8, 30, 0.35)])
def test_rotation_plus_noise_is_certified_and_the_bound_is_valid_elsewhere(r, d, noise):
    rng = np.random.default_rng(r * 10 + int(noise * 10))
    q = rand_sym(d, r, rng)
    v = haar(r, rng)
    e = rand_sym(d, r, rng)
    qh = np.einsum("ij,ajk,lk->ail", v, q, v) + noise * e * np.linalg.norm(q) / np.linalg.norm(e)
    err, u, info = quadratic_gauge_align(q, qh, return_info=True)
    assert info["certified"]
    assert 0.0 <= err - info["lower_bound"] <= 1e-6 * err + 1e-7
    # the known rotation gives an upper bound the minimum cannot exceed
    diff = np.einsum("ij,ajk,lk->ail", v, q, v) - qh
    assert err <= math.sqrt(np.sum(diff**2) / np.sum(q**2)) + 1e-12
    # at a rotation that is not optimal the dual bound is still a valid lower bound, and then not tight
    bad = haar(r, rng)
    low = quadratic_gauge_lower_bound(q, qh, bad)
    diff_bad = np.einsum("ij,ajk,lk->ail", bad, q, bad) - qh
    err_bad = math.sqrt(np.sum(diff_bad**2) / np.sum(q**2))
    assert low <= err + 1e-9 and err_bad - low > 0.1 * err_bad

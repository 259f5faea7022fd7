"""Compressed sensing with a generator (Bora, Jalal, Price, Dimakis) and the Lasso baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pfbench import ConfigError
from pfbench.families import make_instance
from pfbench.seeding import numpy_generator, torch_generator
from pfbench.tasks.compressed_sensing import compressed_sensing_task, cs_recover, lasso, lasso_lam_max


def _soft(u: np.ndarray, t: float) -> np.ndarray:
    return np.sign(u) * np.maximum(np.abs(u) - t, 0.0)


def test_lasso_with_orthonormal_columns_is_soft_thresholding() -> None:
    # A^T A = I: (1/2)||y - Ax||^2 + lam ||x||_1 separates, x_j = soft((A^T y)_j, lam)
    rng = numpy_generator(0, "lasso_orth")
    A = np.linalg.qr(rng.normal(size=(40, 15)))[0]
    y = rng.normal(size=(3, 40))
    x = lasso(y, A, 0.4, tol=1e-14, max_iter=10000)
    assert np.max(np.abs(x - _soft(y @ A, 0.4))) <= 1e-10


def test_lasso_kkt_on_an_underdetermined_problem() -> None:
    rng = numpy_generator(1, "lasso_kkt")
    A = rng.normal(size=(15, 30)) / math.sqrt(15)
    y = rng.normal(size=15)
    lam = 0.05
    x = lasso(y, A, lam, tol=1e-13, max_iter=50000)
    g = A.T @ (y - A @ x)  # subgradient condition: g_j = lam sign(x_j) on the support, |g_j| <= lam off it
    on = x != 0
    assert 1 <= on.sum() <= 15
    assert np.max(np.abs(g[on] - lam * np.sign(x[on]))) <= 1e-7
    assert np.max(np.abs(g[~on])) <= lam + 1e-7
    # lam_max = ||A^T y||_inf is the threshold of the zero solution: zero just above it, not just
    # below (exactly at it the answer rests on the last bit of a dot product)
    lm = float(lasso_lam_max(y, A)[0])
    assert abs(lm - np.max(np.abs(A.T @ y))) <= 1e-12 * lm
    assert np.all(lasso(y, A, 1.01 * lm) == 0.0)
    assert np.any(lasso(y, A, 0.99 * lm, tol=1e-12, max_iter=20000) != 0.0)


def _net(seed: int = 0) -> torch.nn.Module:
    return make_instance("relu_deep", 4, 60, hidden=[20], generator=torch_generator(seed, "instance"))


def test_cs_recover_exact_measurements() -> None:
    G = _net(1)
    z = torch.randn(4, 4, generator=torch_generator(0, "z"), dtype=torch.float64)
    with torch.no_grad():
        x = G(z).numpy()
    A = torch.randn(16, 60, generator=torch_generator(0, "A"), dtype=torch.float64).numpy() / 4.0
    xh, zh = cs_recover(G, x @ A.T, A, restarts=4, steps=400, lr=0.1, seed=0, return_latent=True)
    err = np.linalg.norm(xh - x, axis=1) / np.linalg.norm(x, axis=1)
    assert np.median(err) <= 1e-3
    assert zh.shape == (4, 4) and xh.shape == (4, 60)


def _linearized_oracle_error(G: torch.nn.Module, z: torch.Tensor, A: np.ndarray, e: np.ndarray) -> np.ndarray:
    """||J (A J)^+ e_i|| per sample, J = dG/dz at the true latent z_i (a (d, k) Jacobian by autograd).

    A ReLU net without biases is linear, G(z) = J z, on the cone of z_i's activation pattern, so while
    the minimizer stays in that cone, argmin_z ||A G(z) - A x_i - e_i||^2 = z_i + (A J)^+ e_i exactly and
    the recovery error is J (A J)^+ e_i: the least-squares floor, from the model and A alone.
    """
    out = []
    for zi, ei in zip(z, e):
        J = torch.autograd.functional.jacobian(lambda v: G(v[None])[0], zi).numpy()
        out.append(np.linalg.norm(J @ np.linalg.lstsq(A @ J, ei, rcond=None)[0]))
    return np.array(out)


def test_cs_error_is_the_least_squares_floor_and_falls_with_m() -> None:
    G = _net(2)
    n, seed, noise = 6, 0, 1e-3
    res = compressed_sensing_task(G, G, ms=[2, 8, 30], n=n, seed=seed, noise_std=noise, restarts=5, steps=300)
    # the task's documented draws: x ~ truth (stream cs_truth), A_ij ~ N(0, 1/m), e ~ N(0, noise^2)
    with torch.no_grad():
        z = G.sample_latent(n, torch_generator(seed, "cs_truth"))
        x = G(z).numpy()
    m = 30
    A = torch.randn(m, 60, generator=torch_generator(seed, f"cs_A_m{m}"), dtype=torch.float64).numpy() / math.sqrt(m)
    e = noise * torch.randn(n, m, generator=torch_generator(seed, f"cs_noise_m{m}"), dtype=torch.float64).numpy()
    xh = cs_recover(G, x @ A.T + e, A, restarts=5, steps=300, lr=0.2, seed=seed)
    xn = np.linalg.norm(x, axis=1)
    err = np.linalg.norm(xh - x, axis=1) / xn
    assert abs(res["cs_error_m30"] - np.mean(err)) <= 1e-9 * np.mean(err)
    assert abs(res["cs_error_median_m30"] - np.median(err)) <= 1e-9 * np.median(err)
    # m = 30 >> k = 4: the typical sample sits exactly at the least-squares floor J (A J)^+ e (here 4 of
    # 6 within 0.1 %; a few leave their activation cone, either side of it); all within the Bora et al.
    # bound 3 ||e|| (realizable x = G(z*))
    floor = _linearized_oracle_error(G, z, A, e) / xn
    ratio = err / floor
    assert np.sum(np.abs(ratio - 1) <= 0.02) >= n // 2
    assert 0.8 <= np.median(ratio) <= 1.25
    assert np.mean(err) <= np.mean(3 * np.linalg.norm(e, axis=1) / xn)
    # m = 2 < k = 4: A G(z) = y has a (k - m)-dimensional set of solutions and nothing selects z*
    e2, e8, e30 = (res[f"cs_error_m{m}"] for m in (2, 8, 30))
    assert e2 >= 0.1 and e2 >= 100 * e30
    assert e2 > e8 > e30
    # 60 outputs, ~30 of them non-zero: the Lasso needs far more than 8 measurements; its path starts at
    # the zero estimate (error 1), so its best error is at most 1
    assert e8 <= 0.5 * res["cs_lasso_error_m8"] <= 0.5
    assert 0.0 < res["cs_lasso_fraction_m8"] <= 1.0
    again = compressed_sensing_task(G, G, ms=[8], n=6, seed=0, noise_std=1e-3, restarts=5, steps=300)
    assert again["cs_error_m8"] == res["cs_error_m8"]  # same streams, same A and noise: same number


def test_bad_inputs() -> None:
    G = _net()
    A = np.zeros((5, 59))
    with pytest.raises(ConfigError, match=r"A must be \(m, 60\)"):
        cs_recover(G, np.zeros(5), A)
    with pytest.raises(ConfigError, match=r"expected \(5,\) or \(n, 5\)"):
        lasso(np.zeros(4), np.zeros((5, 60)), 0.1)
    with pytest.raises(ConfigError, match="lam=-1"):
        lasso(np.zeros(5), np.zeros((5, 60)), -1.0)
    with pytest.raises(ConfigError, match="ms=\\[\\]"):
        compressed_sensing_task(G, G, ms=[], n=2, seed=0)

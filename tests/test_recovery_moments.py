"""Streamed moments: equal to the in-memory formulas, for every input kind, in bounded chunks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pfbench import ConfigError
from pfbench.families import make_instance
from pfbench.recovery.moments import iter_chunks, mean_cov, moment_summary, third_moment_projected
from pfbench.recovery.quadratic_moments import population_summary, sym_dim
from pfbench.seeding import numpy_generator, torch_generator


def _data(n: int = 5003, d: int = 7, seed: int = 0) -> np.ndarray:
    # Skewed, shifted data (chi-square-like plus an offset of 1e3): exercises cancellation in the
    # one-pass formulas and gives a non-zero third cumulant.
    rng = numpy_generator(seed, "test_moments")
    return rng.standard_normal((n, d)) ** 2 @ rng.standard_normal((d, d)) + 1e3


def _inmemory(X: np.ndarray, U: np.ndarray):
    mu = X.mean(0)
    Xc = X - mu
    Y = Xc @ U
    return mu, Xc.T @ Xc / len(X), np.einsum("si,sj,sk->ijk", Y, Y, Y) / len(X)


@pytest.mark.parametrize("kind", ["numpy", "memmap", "torch", "float32-memmap"])
@pytest.mark.parametrize("chunk", [1, 999, 100000])
def test_streamed_equals_in_memory(kind, chunk, tmp_path):
    X = _data(n=2003 if chunk == 1 else 5003)
    U = np.linalg.qr(numpy_generator(1, "u").standard_normal((7, 4)))[0]
    if kind == "numpy":
        src = X
    elif kind == "torch":
        src = torch.from_numpy(X)
    else:
        dtype = np.float32 if kind.startswith("float32") else np.float64
        src = np.memmap(tmp_path / "x.dat", dtype=dtype, mode="w+", shape=X.shape)
        src[:] = X
        src.flush()
        src = np.memmap(tmp_path / "x.dat", dtype=dtype, mode="r", shape=X.shape)
        X = np.asarray(src, dtype=np.float64)  # the reference sees the same rounded values
    mu_r, cov_r, t_r = _inmemory(X, U)
    n, mu, cov = mean_cov(src, chunk=chunk)
    # Centred at the reference mean: the two means differ by rounding (1e-15 relative), which the
    # third moment amplifies by |x| / |x - mean| ~ 1e3 here; each pass is compared on its own.
    t = third_moment_projected(src, mu_r, U, chunk=chunk)
    assert n == len(X)
    scale = np.abs(X).max()
    assert np.abs(mu - mu_r).max() <= 1e-12 * scale
    assert np.abs(cov - cov_r).max() <= 1e-12 * np.abs(cov_r).max()
    assert np.abs(t - t_r).max() <= 1e-12 * np.abs(t_r).max()
    # The third moment is fully symmetric by construction.
    assert np.abs(t - t.transpose(1, 0, 2)).max() == 0.0 and np.abs(t - t.transpose(2, 1, 0)).max() == 0.0


def test_moment_summary_is_an_eigenbasis_and_full_basis_gives_full_tensor():
    X = _data()
    s = moment_summary(X, k=3, chunk=1000)
    # cov U = U diag(lambda) for the top-3 eigenpairs, U orthonormal, eigenvalues decreasing.
    assert np.abs(s.cov @ s.basis - s.basis * s.cov_eigvals[:3]).max() <= 1e-9 * s.cov_eigvals[0]
    assert np.abs(s.basis.T @ s.basis - np.eye(3)).max() <= 1e-12
    assert np.all(np.diff(s.cov_eigvals) <= 0)
    # With the identity as basis the projected tensor is the full third cumulant.
    full = third_moment_projected(X, s.mean, np.eye(7))
    _, _, t_r = _inmemory(X, np.eye(7))
    assert np.abs(full - t_r).max() <= 1e-12 * np.abs(t_r).max()
    # and projecting it reproduces the streamed projection.
    proj = np.einsum("abc,ai,bj,ck->ijk", full, s.basis, s.basis, s.basis)
    assert np.abs(proj - s.third).max() <= 1e-10 * np.abs(s.third).max()


def test_population_moments_match_a_large_sample():
    # E x_a = Tr Q_a, Cov = 2 Tr(Q_a Q_b), kappa_3 = 8 Tr(Q_a Q_b Q_c) (MATH 2) against 4e5 samples:
    # the standardized differences must be O(1) (two-sided: neither biased nor suspiciously exact).
    r, d, n = 3, 6, 400_000
    inst = make_instance("quadratic", r, d, generator=torch_generator(0, "instance"))
    Q = inst.params()["Q"].numpy()
    pop = population_summary(Q, k=d)
    X = inst.sample_batched(n, torch_generator(0, "train")).numpy()
    emp = moment_summary(X, k=d)
    se_mean = np.sqrt(np.diag(pop.cov) / n)
    z = (emp.mean - pop.mean) / se_mean
    assert 0.05 <= np.sqrt(np.mean(z**2)) <= 3.0
    rel_cov = np.abs(emp.cov - pop.cov).max() / np.abs(pop.cov).max()
    assert 1e-5 <= rel_cov <= 0.03
    t_pop = np.einsum("ijk,ai,bj,ck->abc", pop.third, pop.basis, pop.basis, pop.basis)
    t_emp = np.einsum("ijk,ai,bj,ck->abc", emp.third, emp.basis, emp.basis, emp.basis)
    rel_t = np.abs(t_emp - t_pop).max() / np.abs(t_pop).max()
    assert 1e-5 <= rel_t <= 0.06
    # The exact third cumulant is 8 Tr(Q_a Q_b Q_c), checked entrywise on the population side.
    a, b, c = 0, 2, 5
    assert abs(t_pop[a, b, c] - 8 * np.trace(Q[a] @ Q[b] @ Q[c])) <= 1e-10 * np.abs(t_pop).max()


def test_quadratic_data_lie_in_an_m_dimensional_subspace():
    # The centred samples are sum_i C_ai (g^T Z_i g - Tr Z_i): rank min(d, m) exactly, which is what
    # lets the estimator use the third cumulant in the top-m principal directions only.
    r, d = 2, 6
    inst = make_instance("quadratic", r, d, generator=torch_generator(3, "instance"))
    X = inst.sample_batched(20_000, torch_generator(3, "train")).numpy()
    ev = moment_summary(X, k=d).cov_eigvals
    m = sym_dim(r)
    assert ev[m - 1] / ev[0] >= 1e-4
    assert np.all(np.abs(ev[m:]) <= 1e-12 * ev[0])


def test_bad_input_is_a_one_line_error():
    X = _data(n=100)
    X[57, 3] = math.nan
    with pytest.raises(ConfigError, match="non-finite values .* at row 57"):
        mean_cov(X, chunk=50)
    # The third-moment pass checks its sums once, then names the row.
    with pytest.raises(ConfigError, match="non-finite values .* at row 57"):
        third_moment_projected(X, np.zeros(7), np.eye(7)[:, :3], chunk=50)
    with pytest.raises(ConfigError, match="overflowed float64 on finite data"):
        third_moment_projected(_data(n=100) * 1e110, np.zeros(7), np.eye(7)[:, :2])
    with pytest.raises(ConfigError, match="2-D"):
        next(iter_chunks(np.zeros(5)))
    with pytest.raises(ConfigError, match="chunk=0"):
        next(iter_chunks(np.zeros((5, 2)), chunk=0))
    with pytest.raises(ConfigError, match=r"need mean \(7,\) and U \(7, k\)"):
        third_moment_projected(_data(n=10), np.zeros(6), np.eye(7))

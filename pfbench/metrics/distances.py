"""Distances between two samples (a generator's and the truth's): pure functions, float64.

Every function takes two (n, d) and (m, d) samples (numpy arrays or torch tensors) and returns a
number or a small record; randomness (projections, critic init, batches) comes from an explicit
generator argument. Each distance must be read beside its noise floor, the same distance between
two independent samples of the true distribution of the same sizes (MATH.md section 7); the
evaluation (:mod:`pfbench.metrics.evaluate`) computes both.

- :func:`wasserstein` -- exact W_p between empirical measures (POT network simplex), with a
  convergence check (solver status and dual feasibility) and a memory guard;
- :func:`sliced_wasserstein` -- average 1-D W_p^p over random directions (numpy sort);
- :func:`mmd2_unbiased` -- unbiased MMD^2 with a Gaussian kernel (median-heuristic bandwidth);
- :func:`neural_net_distance` -- Arora et al.'s neural-net distance with a 1-Lipschitz MLP class;
- :func:`birthday_support` -- Arora-Zhang birthday-paradox support-size estimate;
- :func:`moment_discrepancy` -- unbiased squared relative errors of the mean, the covariance and a
  sketch of the third cumulant;
- :class:`DataCopyingTest` -- Meehan et al.'s data-copying test C_T (k-means cells on the training
  sample, Mann-Whitney z-scores of nearest-training-point distances).

Null distributions: :func:`sliced_wasserstein_to` (many samples against one reference) and
:func:`mmd2_permutation_null` (a permutation null from the same kernel blocks as the value).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import ot
import scipy.special
import torch
from torch import nn

from pfbench import ConfigError
from pfbench.system import available_memory_bytes, torch_threads

__all__ = [
    "OTNotConverged",
    "WassersteinResult",
    "wasserstein",
    "wasserstein_result",
    "memory_limit_bytes",
    "ot_memory_bytes",
    "pairwise_sqdist",
    "sliced_wasserstein",
    "random_directions",
    "wasserstein_1d",
    "median_bandwidth",
    "mmd2_unbiased",
    "mmd2_unbiased_many",
    "NNDistanceResult",
    "neural_net_distance",
    "critic_class_name",
    "collision_threshold",
    "true_atoms",
    "birthday_support",
    "sliced_wasserstein_to",
    "mmd2_permutation_null",
    "MomentFolds",
    "MomentSketch",
    "moment_folds",
    "moment_scales",
    "moment_discrepancy_folds",
    "moment_discrepancy",
    "nearest_rows",
    "kmeans",
    "mann_whitney_z",
    "DataCopyingTest",
]

#: bytes per cost-matrix entry of a dense POT emd solve: the float64 cost, the float64 plan POT
#: returns, and the network-simplex state (measured: n = 10000 uses about 4.2 GB, NOTES.md).
OT_BYTES_PER_ENTRY = 42


def _as_f64(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    a = np.ascontiguousarray(np.asarray(x, dtype=np.float64))
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] == 0:
        raise ConfigError(f"{name} must be a non-empty (n, d) sample, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ConfigError(f"{name} has non-finite entries; a distance to it is undefined")
    return a


def _pair(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_f64(x, "x"), _as_f64(y, "y")
    if a.shape[1] != b.shape[1]:
        raise ConfigError(f"samples live in different dimensions: x is {a.shape}, y is {b.shape}")
    return a, b


def pairwise_sqdist(a: np.ndarray, b: np.ndarray, *, band: float = 1e-4) -> np.ndarray:
    """||a_i - b_j||^2 for (n, d) and (m, d) float64 arrays, by one GEMM, exact where it matters.

    |a|^2 + |b|^2 - 2 a.b costs one BLAS call (20-50x faster than scipy ``cdist`` at d = 500) but
    has absolute rounding error ~ eps (|a_i|^2 + |b_j|^2), which would make coincident points
    look apart (sqrt(1e-15) ~ 3e-8). Entries below ``band`` (|a_i|^2 + |b_j|^2) are therefore
    recomputed from the differences; above it the relative error is <= ~eps/band ~ 1e-12.
    Cost O(n m d) by GEMM, plus O(k d) for the k entries inside the band.
    """
    na = np.einsum("ij,ij->i", a, a)
    nb = np.einsum("ij,ij->i", b, b)
    ref = na[:, None] + nb[None, :]
    d2 = ref - 2.0 * (a @ b.T)
    i, j = np.nonzero(d2 <= band * ref)
    if i.size:
        diff = a[i] - b[j]
        d2[i, j] = np.einsum("ij,ij->i", diff, diff)
    return d2


# ---------------------------------------------------------------------------------------------
# exact Wasserstein
# ---------------------------------------------------------------------------------------------


class OTNotConverged(RuntimeError):
    """The exact OT solve stopped before optimality: its value is not the Wasserstein distance."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class WassersteinResult:
    """Outcome of an exact W_p solve. ``value`` is None unless ``converged``."""

    value: float | None
    converged: bool
    reason: str | None
    p: int
    n: int
    m: int
    max_iter: int
    dual_violation: float
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def ot_memory_bytes(n: int, m: int) -> int:
    """Approximate peak memory of a dense exact OT solve between n and m points (bytes)."""
    return OT_BYTES_PER_ENTRY * int(n) * int(m)


def _default_max_iter(n: int, m: int) -> int:
    # POT's default (1e5) is reached from n ~ 2000-4000 (measured: n = 4000, d = 20 needs between
    # 3e5 and 1e6 iterations). The cap only bounds a pathological run; a converging solve stops
    # at optimality whatever the cap, so be generous: 5000 (n + m), at least 1e6.
    return max(1_000_000, 5_000 * (n + m))


def memory_limit_bytes(max_memory_gb: float | None) -> int:
    """The memory an exact solve may take: ``max_memory_gb`` GiB, or (None) half of the available
    memory, or 8 GiB where that cannot be read."""
    if max_memory_gb is not None:
        return int(max_memory_gb * 2**30)
    avail = available_memory_bytes()
    return avail // 2 if avail is not None else 8 * 2**30


def wasserstein_result(x: Any, y: Any, p: int = 1, *, max_iter: int | None = None,
                       max_memory_gb: float | None = None, dual_tol: float = 1e-9) -> WassersteinResult:
    """Exact W_p between the uniform empirical measures of x (n, d) and y (m, d).

    .. math::
        W_p(\\hat P_n, \\hat Q_m) = \\Big(\\min_{\\gamma \\in \\Pi(1/n, 1/m)}
            \\sum_{ij} \\gamma_{ij} \\|x_i - y_j\\|_2^p\\Big)^{1/p}

    solved by POT's network simplex (``ot.emd2``) on the cost matrix from :func:`pairwise_sqdist`
    (one GEMM, near-coincident pairs recomputed exactly, so identical points cost exactly 0).
    POT stops at ``numItermax`` and only warns; here the solve counts as converged only if POT
    reports OPTIMAL *and* the returned dual potentials are feasible,
    max_ij (u_i + v_j - C_ij) <= dual_tol * max C (the LP optimality certificate, since the plan
    is primal feasible). Otherwise ``value`` is None and ``reason`` says why.

    Parameters
    ----------
    x, y : array (n, d), (m, d)
    p : int
        1 or 2 (or any p >= 1).
    max_iter : int, optional
        Network-simplex iteration cap; default max(1e6, 5000 (n + m)).
    max_memory_gb : float, optional
        Refuse (ConfigError) if the solve would need more; default half of the available memory.
    dual_tol : float
        Relative tolerance of the dual-feasibility certificate.

    Cost: O(n m d) for the costs (GEMM), O(n m) memory (about 42 bytes per pair: n = m = 10000 needs
    4.2 GB), and network simplex time, empirically about n^2.5 (d = 20, one core: n = 1000: 0.1 s,
    n = 5000: 13 s, n = 10000: 60-90 s on a quiet machine, 155 s at load average 5-8; within 1.04x
    of a bare ``ot.emd2`` call, scripts/bench_metrics.py).
    """
    if p < 1:
        raise ConfigError(f"Wasserstein order p={p} must be >= 1")
    a, b = _pair(x, y)
    n, m = a.shape[0], b.shape[0]
    need = ot_memory_bytes(n, m)
    limit = memory_limit_bytes(max_memory_gb)
    if need > limit:
        raise ConfigError(
            f"exact W{p} between n={n} and m={m} points needs about {need / 2**30:.1f} GB "
            f"(> limit {limit / 2**30:.1f} GB): lower eval.w1.n (memory grows as n*m, time about n^2.5) "
            f"or rely on the sliced distance (eval.sw) at this sample size"
        )
    iters = int(max_iter) if max_iter is not None else _default_max_iter(n, m)
    t0 = time.perf_counter()
    sq = pairwise_sqdist(a, b)
    np.maximum(sq, 0.0, out=sq)
    cost = np.sqrt(sq, out=sq) if p == 1 else (sq if p == 2 else sq ** (p / 2))
    with warnings.catch_warnings():
        # POT only warns when it stops early; the status is checked below and becomes `reason`.
        warnings.simplefilter("ignore", UserWarning)
        val, log = ot.emd2(np.full(n, 1.0 / n), np.full(m, 1.0 / m), cost, numItermax=iters, log=True,
                           check_marginals=False)
    u, v = np.asarray(log["u"]), np.asarray(log["v"])
    # Dual feasibility u_i + v_j <= C_ij, checked by row blocks so no second n x m temporary.
    viol = -np.inf
    step = max(1, 2**22 // max(m, 1))
    for i in range(0, n, step):
        viol = max(viol, float(np.max(u[i:i + step, None] + v[None, :] - cost[i:i + step])))
    scale = float(cost.max()) if cost.size else 0.0
    seconds = time.perf_counter() - t0
    reason = None
    if log["result_code"] != 1:
        reason = f"POT network simplex did not reach optimality ({log['warning'] or log['result_code']})" \
                 f" within max_iter={iters}; raise eval.w1.max_iter or lower eval.w1.n"
    elif viol > dual_tol * max(scale, 1e-300):
        reason = (f"dual potentials violate feasibility by {viol:.3g} (> {dual_tol:g} x max cost "
                  f"{scale:.3g}): the plan is not certified optimal")
    ok = reason is None
    value = float(max(val, 0.0)) ** (1.0 / p) if ok else None
    return WassersteinResult(value, ok, reason, int(p), n, m, iters, float(max(viol, 0.0)), seconds)


def wasserstein(x: Any, y: Any, p: int = 1, *, max_iter: int | None = None,
                max_memory_gb: float | None = None) -> float:
    """Exact W_p between empirical measures; raises :class:`OTNotConverged` instead of a wrong number.

    Same definition, cost and memory guard as :func:`wasserstein_result` (which returns a record
    with ``value=None`` on non-convergence instead of raising).
    """
    res = wasserstein_result(x, y, p, max_iter=max_iter, max_memory_gb=max_memory_gb)
    if not res.converged:
        raise OTNotConverged(res.reason or "not converged")
    return float(res.value)


# ---------------------------------------------------------------------------------------------
# sliced Wasserstein
# ---------------------------------------------------------------------------------------------


def random_directions(d: int, n_projections: int, generator: np.random.Generator) -> np.ndarray:
    """``n_projections`` directions uniform on the unit sphere S^{d-1}: array (n_projections, d)."""
    if not isinstance(generator, np.random.Generator):
        raise ConfigError("random_directions needs a numpy Generator (pfbench.seeding.numpy_generator)")
    if n_projections < 1:
        raise ConfigError(f"n_projections={n_projections} must be >= 1")
    th = generator.standard_normal((n_projections, d))
    return th / np.linalg.norm(th, axis=1, keepdims=True)


def wasserstein_1d(a_sorted: np.ndarray, b_sorted: np.ndarray, p: float = 1) -> np.ndarray:
    """W_p^p between uniform empirical measures on the line, from sorted samples, batched.

    .. math:: W_p^p = \\int_0^1 |F^{-1}(t) - G^{-1}(t)|^p \\, dt

    ``a_sorted`` (L, n) and ``b_sorted`` (L, m), each row sorted ascending; returns (L,) W_p^p.
    For n = m this is mean |a_(i) - b_(i)|^p; otherwise the quantile functions are step functions
    on the merged grid {i/n} u {j/m}. Cost O(L (n + m)).
    """
    n, m = a_sorted.shape[-1], b_sorted.shape[-1]
    if n == m:
        return np.mean(np.abs(a_sorted - b_sorted) ** p, axis=-1)
    t = np.union1d(np.arange(n + 1) / n, np.arange(m + 1) / m)
    mid = 0.5 * (t[1:] + t[:-1])
    ia = np.minimum((mid * n).astype(np.int64), n - 1)
    ib = np.minimum((mid * m).astype(np.int64), m - 1)
    return np.abs(a_sorted[..., ia] - b_sorted[..., ib]) ** p @ np.diff(t)


def sliced_wasserstein(x: Any, y: Any, n_projections: int = 200, p: float = 1, *,
                       generator: np.random.Generator | None = None,
                       directions: np.ndarray | None = None, chunk: int = 32) -> float:
    """Sliced Wasserstein distance with directions uniform on the sphere.

    .. math:: SW_p(P, Q) = \\Big(\\mathbb{E}_{\\theta \\sim U(S^{d-1})}
        W_p^p(\\theta_\\# P, \\theta_\\# Q)\\Big)^{1/p}

    estimated by the average over ``n_projections`` directions drawn from ``generator`` (or the
    given ``directions``, (L, d), e.g. to use the same directions for a metric and its floor).
    Each 1-D distance is exact (:func:`wasserstein_1d`). Implemented with numpy sort on (L, n)
    row-major blocks: measured 9-13x faster than POT's ``sliced_wasserstein_distance`` (a general
    weighted 1-D solver) and 3-6x faster than torch's CPU sort (NOTES.md; scripts/bench_metrics.py).

    Cost: O(L (n + m) d) for projections plus O(L (n log n + m log m)) for sorting; memory
    O(chunk (n + m)).
    """
    a, b = _pair(x, y)
    if directions is None:
        if generator is None:
            raise ConfigError("sliced_wasserstein needs generator= (a numpy Generator) or directions=")
        directions = random_directions(a.shape[1], n_projections, generator)
    th = np.asarray(directions, dtype=np.float64)
    if th.ndim != 2 or th.shape[1] != a.shape[1]:
        raise ConfigError(f"directions must have shape (L, {a.shape[1]}), got {th.shape}")
    total = 0.0
    for i in range(0, th.shape[0], chunk):
        t = th[i:i + chunk]
        pa = np.sort(t @ a.T, axis=1)  # (L, n), contiguous rows: numpy sorts each row in place order
        pb = np.sort(t @ b.T, axis=1)
        total += float(np.sum(wasserstein_1d(pa, pb, p)))
    return (total / th.shape[0]) ** (1.0 / p)


def sliced_wasserstein_to(y: Any, directions: np.ndarray, p: float = 1, *,
                          chunk: int = 32) -> Callable[[Any], float]:
    """``x -> SW_p(x, y)`` with ``y``'s sorted projections computed once, for many samples against one
    reference (a null distribution). Each value equals :func:`sliced_wasserstein` (x, y, p=p,
    directions=directions, chunk=chunk) exactly (the same operations, summed in the same order).

    Cost O(L m (d + log m)) once and O(L n (d + log n)) per call; memory O(L m) for the sorted reference.
    """
    b = _as_f64(y, "y")
    th = np.asarray(directions, dtype=np.float64)
    if th.ndim != 2 or th.shape[1] != b.shape[1]:
        raise ConfigError(f"directions must have shape (L, {b.shape[1]}), got {th.shape}")
    starts = range(0, th.shape[0], chunk)
    sorted_y = [np.sort(th[i:i + chunk] @ b.T, axis=1) for i in starts]

    def sw(x: Any) -> float:
        a, _ = _pair(x, b)
        total = 0.0
        for i, pb in zip(starts, sorted_y):
            pa = np.sort(th[i:i + chunk] @ a.T, axis=1)
            total += float(np.sum(wasserstein_1d(pa, pb, p)))
        return (total / th.shape[0]) ** (1.0 / p)

    return sw


# ---------------------------------------------------------------------------------------------
# MMD
# ---------------------------------------------------------------------------------------------


def median_bandwidth(x: Any, max_points: int = 1000) -> float:
    """Median heuristic: the median pairwise Euclidean distance among the first ``max_points`` rows.

    Cost O(max_points^2 d). The first rows of an i.i.d. sample are a random subsample, so no
    generator is needed. Raises if all points coincide (a Gaussian kernel of width 0 is undefined).
    """
    a = _as_f64(x, "x")[:max_points]
    if a.shape[0] < 2:
        raise ConfigError("median bandwidth needs at least 2 points")
    d2 = pairwise_sqdist(a, a)
    h = float(np.sqrt(max(float(np.median(d2[np.triu_indices(a.shape[0], 1)])), 0.0)))
    if not h > 0:
        raise ConfigError("median bandwidth is 0 (over half the pairs coincide); pass an explicit bandwidth")
    return h


def _kernel_pass(a: np.ndarray, b: np.ndarray, gamma: float, block: int, same: bool,
                 right: np.ndarray | None = None) -> tuple[float, np.ndarray | None]:
    """sum_{ij} exp(-gamma ||a_i - b_j||^2), excluding i = j when ``same`` (blocks of rows), and the
    kernel matrix times ``right`` ((m, B), or None) from the same blocks."""
    s = 0.0
    prod = None if right is None else np.empty((a.shape[0], right.shape[1]))
    for i in range(0, a.shape[0], block):
        d2 = np.maximum(pairwise_sqdist(a[i:i + block], b), 0.0)
        k = np.exp(-gamma * d2)
        s += float(k.sum())
        if same:
            s -= float(np.trace(k[:, i:i + block]))  # diagonal entries k(x_i, x_i) = 1
        if prod is not None:
            prod[i:i + block] = k @ right
    return s, prod


def _kernel_sum(a: np.ndarray, b: np.ndarray, gamma: float, block: int, same: bool) -> float:
    """sum_{ij} exp(-gamma ||a_i - b_j||^2), excluding i = j when ``same`` (blocks of rows)."""
    return _kernel_pass(a, b, gamma, block, same)[0]


def mmd2_unbiased(x: Any, y: Any, bandwidth: float | None = None, *, block: int = 2048) -> float:
    """Unbiased estimate of the squared maximum mean discrepancy with a Gaussian kernel.

    .. math::
        \\widehat{MMD}^2_u = \\frac{1}{n(n-1)} \\sum_{i \\ne j} k(x_i, x_j)
          + \\frac{1}{m(m-1)} \\sum_{i \\ne j} k(y_i, y_j) - \\frac{2}{nm} \\sum_{i, j} k(x_i, y_j),
        \\qquad k(x, y) = \\exp(-\\|x - y\\|^2 / (2 h^2))

    (Gretton et al. 2012). It can be slightly negative when P = Q. ``bandwidth`` h defaults to
    the median heuristic on the pooled sample; pass the same h for a metric and its floor.
    Cost O((n + m)^2 d) time, O(block (n + m)) memory.
    """
    a, b = _pair(x, y)
    h = float(bandwidth) if bandwidth is not None else median_bandwidth(np.concatenate([a[:500], b[:500]]))
    return mmd2_unbiased_many([a], b, h, block=block)[0]


def mmd2_unbiased_many(xs: list[Any], y: Any, bandwidth: float, *, block: int = 2048) -> list[float]:
    """:func:`mmd2_unbiased` of each sample in ``xs`` against one ``y``, computing y's own term once.

    Used for a metric and its floor (same reference, same bandwidth). Cost as there.
    """
    b = _as_f64(y, "y")
    h = float(bandwidth)
    if not h > 0 or not math.isfinite(h):
        raise ConfigError(f"MMD bandwidth {h} must be a positive finite number")
    gamma = 1.0 / (2.0 * h * h)
    m = b.shape[0]
    if m < 2:
        raise ConfigError(f"unbiased MMD needs at least 2 points per sample, got m={m}")
    kyy = _kernel_sum(b, b, gamma, block, True) / (m * (m - 1))
    out = []
    for x in xs:
        a, _ = _pair(x, b)
        n = a.shape[0]
        if n < 2:
            raise ConfigError(f"unbiased MMD needs at least 2 points per sample, got n={n}")
        kxx = _kernel_sum(a, a, gamma, block, True) / (n * (n - 1))
        kxy = _kernel_sum(a, b, gamma, block, False) / (n * m)
        out.append(kxx + kyy - 2.0 * kxy)
    return out


def mmd2_permutation_null(x: Any, x_alt: Any, y: Any, bandwidth: float, subsets: np.ndarray, *,
                          block: int = 2048) -> tuple[float, float, np.ndarray]:
    """MMD^2_u of ``x`` and of ``x_alt`` against ``y``, and of every pooled subset in ``subsets``.

    The first two numbers are exactly ``mmd2_unbiased_many([x, x_alt], y, bandwidth)`` (the same
    kernel blocks, summed in the same order). ``x`` and ``x_alt`` hold n rows each; ``subsets`` is a
    (B, 2n) boolean array, each row selecting n rows S of the pool P = [x; x_alt], whose statistic
    against the fixed ``y`` is returned in the (B,) array: with the selection's indicator a,
    sum_{i != j in S} k(p_i, p_j) = a' K_PP a - n and sum_{i in S, j} k(p_i, y_j) = a' K_Py 1, so the B
    statistics cost one product of the pool's kernel blocks with the (2n, B) indicators: a
    permutation null of the MMD against a fixed reference (under x ~ x_alt the pool is exchangeable).

    Cost O((4 n^2 + 2 n m + m^2) d) for the kernels (one n x n block more than the two values alone)
    plus O(n^2 B) for the products; memory O(block (n + m) + n B).
    """
    b = _as_f64(y, "y")
    a, _ = _pair(x, b)
    a2, _ = _pair(x_alt, b)
    n, m = a.shape[0], b.shape[0]
    if a2.shape[0] != n:
        raise ConfigError(f"the pooled samples must have the same size, got {n} and {a2.shape[0]}")
    sel = np.asarray(subsets)
    if sel.dtype != bool or sel.ndim != 2 or sel.shape[1] != 2 * n or np.any(sel.sum(axis=1) != n):
        raise ConfigError(f"subsets must be a (B, {2 * n}) boolean array selecting {n} rows each")
    h = float(bandwidth)
    if not h > 0 or not math.isfinite(h):
        raise ConfigError(f"MMD bandwidth {h} must be a positive finite number")
    if n < 2 or m < 2:
        raise ConfigError(f"unbiased MMD needs at least 2 points per sample, got n={n}, m={m}")
    gamma = 1.0 / (2.0 * h * h)
    sel_x = np.ascontiguousarray(sel[:, :n].T, dtype=np.float64)  # (n, B)
    sel_a = np.ascontiguousarray(sel[:, n:].T, dtype=np.float64)
    ones = np.ones((m, 1))
    kyy = _kernel_sum(b, b, gamma, block, True) / (m * (m - 1))
    s_xx, k_xx = _kernel_pass(a, a, gamma, block, True, sel_x)
    s_xy, r_x = _kernel_pass(a, b, gamma, block, False, ones)
    s_aa, k_aa = _kernel_pass(a2, a2, gamma, block, True, sel_a)
    s_ay, r_a = _kernel_pass(a2, b, gamma, block, False, ones)
    _, k_xa = _kernel_pass(a, a2, gamma, block, False, sel_a)
    val = s_xx / (n * (n - 1)) + kyy - 2.0 * (s_xy / (n * m))
    alt = s_aa / (n * (n - 1)) + kyy - 2.0 * (s_ay / (n * m))
    quad = (np.einsum("ib,ib->b", sel_x, k_xx) + np.einsum("ib,ib->b", sel_a, k_aa)
            + 2.0 * np.einsum("ib,ib->b", sel_x, k_xa))
    cross = sel_x.T @ r_x[:, 0] + sel_a.T @ r_a[:, 0]
    null = (quad - n) / (n * (n - 1)) + kyy - 2.0 * cross / (n * m)
    return float(val), float(alt), null


# ---------------------------------------------------------------------------------------------
# neural-net distance
# ---------------------------------------------------------------------------------------------


def critic_class_name(in_dim: int, width: int, depth: int) -> str:
    """The critic class F in words (recorded beside the number, since d_F depends on F)."""
    widths = "-".join(str(w) for w in [in_dim, *[width] * depth, 1])
    return f"mlp[{widths}] relu, every layer spectral norm <= 1 (1-Lipschitz)"


@dataclass
class NNDistanceResult:
    """Held-out gap of a trained critic; ``train_gap`` is the same gap on the training split."""

    value: float
    train_gap: float
    critic_class: str
    steps: int
    n_train: int
    n_test: int
    seconds: float
    #: the trained critic's values on the held-out points of x and of y (for a permutation null)
    scores_x: np.ndarray | None = field(default=None, repr=False)
    scores_y: np.ndarray | None = field(default=None, repr=False)


class _LipschitzMLP(nn.Module):
    def __init__(self, in_dim: int, width: int, depth: int):
        super().__init__()
        dims = [in_dim, *[width] * depth, 1]
        self.layers = nn.ModuleList(nn.Linear(i, o, dtype=torch.float64) for i, o in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for lin in self.layers[:-1]:
            x = torch.relu(lin(x))
        return self.layers[-1](x).squeeze(-1)

    @torch.no_grad()
    def project_(self) -> None:
        """W <- W / max(1, ||W||_2): every layer 1-Lipschitz, so the critic is (ReLU is 1-Lipschitz)."""
        for lin in self.layers:
            s = float(torch.linalg.svdvals(lin.weight)[0])  # exact sigma_max; 15x faster than matrix_norm
            if s > 1.0:
                lin.weight.div_(s)


def neural_net_distance(x: Any, y: Any, *, width: int = 64, depth: int = 2, steps: int = 300,
                        lr: float = 2e-3, train_fraction: float = 0.5, batch_size: int = 256,
                        threads: int | None = 1, generator: torch.Generator) -> NNDistanceResult:
    """Neural-net distance of Arora, Ge, Liang, Ma, Zhang (2017) with phi(t) = t, held-out estimate.

    .. math:: d_F(P, Q) = \\sup_{D \\in F} \\mathbb{E}_P D(x) - \\mathbb{E}_Q D(y)

    F = ReLU MLPs ``in_dim -> width (x depth) -> 1`` whose every weight matrix has spectral norm
    <= 1 (enforced exactly after each Adam step by W <- W / max(1, sigma_max(W))), so every
    D in F is 1-Lipschitz and d_F <= W1 (here: the held-out gap is <= W1 of the held-out samples).
    The critic is trained on a random ``train_fraction`` of each sample to maximize the gap and the
    reported ``value`` is the gap on the rest: an unbiased estimate of the trained critic's gap (it
    can be slightly negative when P = Q). Inputs are used unscaled, so the value is in data units.

    Parameters
    ----------
    x, y : array (n, d), (m, d)
        Samples of P (e.g. generated) and Q (e.g. true).
    width, depth, steps, lr, batch_size : critic class and training budget (Adam with betas
        (0.5, 0.9); mini-batches of ``batch_size`` per side drawn from ``generator``, or full
        batches when smaller).
    threads : int or None
        torch threads during the call (see :func:`pfbench.system.torch_threads`); None keeps the current count.
    generator : torch.Generator
        Drives the split, the critic initialization and the batches.

    Cost: O(steps * batch_size * (d width + depth width^2)) plus one SVD per layer per step.
    """
    a, b = _pair(x, y)
    if not isinstance(generator, torch.Generator):
        raise ConfigError("neural_net_distance needs generator= (a torch.Generator from pfbench.seeding)")
    if not 0.0 < train_fraction < 1.0:
        raise ConfigError(f"train_fraction={train_fraction} must be in (0, 1)")
    if width < 1 or depth < 0 or steps < 0 or batch_size < 1:
        raise ConfigError(f"critic width={width}, depth={depth}, steps={steps}, batch_size={batch_size} "
                          "must be >= 1, >= 0, >= 0, >= 1")
    with torch_threads(threads):
        return _train_critic(a, b, width, depth, steps, lr, train_fraction, batch_size, generator)


def _train_critic(a: np.ndarray, b: np.ndarray, width: int, depth: int, steps: int, lr: float,
                  train_fraction: float, batch_size: int, generator: torch.Generator) -> NNDistanceResult:
    t0 = time.perf_counter()
    xa, xb = torch.from_numpy(a), torch.from_numpy(b)

    def split(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = int(round(train_fraction * t.shape[0]))
        if k < 1 or k >= t.shape[0]:
            raise ConfigError(f"a sample of {t.shape[0]} points cannot be split {train_fraction}/rest")
        perm = torch.randperm(t.shape[0], generator=generator)
        return t[perm[:k]], t[perm[k:]]

    xa_tr, xa_te = split(xa)
    xb_tr, xb_te = split(xb)
    critic = _LipschitzMLP(a.shape[1], width, depth)
    with torch.no_grad():
        for lin in critic.layers:  # PyTorch's default init, from the explicit generator
            bound = 1.0 / lin.in_features**0.5
            for t in (lin.weight, lin.bias):
                t.copy_((torch.rand(t.shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound)
    critic.project_()
    # Adam (betas 0.5, 0.9 as in WGAN critics) written out rather than torch.optim.Adam, measured with
    # torch 2.13 CPU: (1) Adam(..., foreach=False) is not bit-identical to this loop (it updates the
    # first moment with lerp_ and divides sqrt(v) by sqrt(1 - beta2^t) instead of taking sqrt(v / (1 -
    # beta2^t))): the held-out gap moves in its last bits (relative 9e-16 at the default settings,
    # 1.6e-14 at eval=fast), so every nn_dist in metrics.json would change; (2) its constructor still
    # imports torch._dynamo on first use, 1.0 s in a fresh process (quiet machine), which an estimator
    # run never imports otherwise; (3) warm, 300 default steps take 0.44 s here and 0.49 s with it.
    params = list(critic.parameters())
    m1 = [torch.zeros_like(q) for q in params]
    m2 = [torch.zeros_like(q) for q in params]
    beta1, beta2, eps = 0.5, 0.9, 1e-8

    def batch(t: torch.Tensor) -> torch.Tensor:
        if t.shape[0] <= batch_size:
            return t
        return t[torch.randint(t.shape[0], (batch_size,), generator=generator)]

    for t in range(1, steps + 1):
        ba, bb = batch(xa_tr), batch(xb_tr)
        loss = critic(bb).mean() - critic(ba).mean()  # minimize -(E_P D - E_Q D)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            c1, c2 = 1 - beta1**t, 1 - beta2**t
            for q, g, s1, s2 in zip(params, grads, m1, m2):
                s1.mul_(beta1).add_(g, alpha=1 - beta1)
                s2.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                q.addcdiv_(s1, (s2 / c2).sqrt_().add_(eps), value=-lr / c1)
        critic.project_()
    with torch.no_grad():
        fa, fb = critic(xa_te), critic(xb_te)
        gap = float(fa.mean() - fb.mean())
        train_gap = float(critic(xa_tr).mean() - critic(xb_tr).mean())
    return NNDistanceResult(gap, train_gap, critic_class_name(a.shape[1], width, depth), int(steps),
                            int(xa_tr.shape[0] + xb_tr.shape[0]), int(xa_te.shape[0] + xb_te.shape[0]),
                            time.perf_counter() - t0, fa.numpy().copy(), fb.numpy().copy())


# ---------------------------------------------------------------------------------------------
# birthday-paradox support size
# ---------------------------------------------------------------------------------------------


def _min_pairwise(a: np.ndarray, block: int = 2048, positive: bool = False) -> float:
    """min_{i < j} ||a_i - a_j|| (over non-zero distances if ``positive``), by row blocks.

    O(n^2 d) time (GEMM), O(block n) memory; inf when no pair qualifies.
    """
    best = math.inf
    n = a.shape[0]
    for i in range(0, n - 1, block):
        d2 = pairwise_sqdist(a[i:i + block], a[i:])
        # keep only j > i within the block's own square
        rows = np.arange(d2.shape[0])[:, None]
        d2[np.arange(d2.shape[1])[None, :] <= rows] = np.inf
        if positive:
            d2[d2 <= 0.0] = np.inf
        best = min(best, float(d2.min()) if d2.size else math.inf)
    return math.sqrt(best) if math.isfinite(best) else math.inf


def true_atoms(x_true: Any) -> np.ndarray:
    """Rows that occur more than once in a true sample (N, d): atoms of the true distribution.

    ReLU pushforwards put positive mass on single points (x = 0 when every pre-activation is
    negative); exact repeats of such points are not evidence of a small support. Cost O(N d log N).
    """
    a = _as_f64(x_true, "x_true")
    rows, counts = np.unique(a, axis=0, return_counts=True)
    return rows[counts > 1]


def collision_threshold(x_true: Any) -> float:
    """Near-duplicate threshold tau = min ||x_i - x_j|| over pairs x_i != x_j of a true sample (N, d).

    Two generated points closer than tau are closer than any pair of distinct points among N
    true points (exact repeats are atoms, :func:`true_atoms`, handled separately). A batch of
    s <= N/4 true points then collides with probability about s^2 / (s^2 + N^2) <= 1/17 (the
    minimum of s^2/2 exchangeable pair distances falls below that of N^2/2), far below the 1/2
    the birthday test looks for; so use batches up to N/4 (larger ones, drawn from one pool of
    about N points, share its closest pairs and collide too often). Cost O(N^2 d).
    """
    return _min_pairwise(_as_f64(x_true, "x_true"), positive=True)


def birthday_support(x: Any, threshold: float, *, max_batch: int, n_batches: int = 20,
                     generator: np.random.Generator, atoms: np.ndarray | None = None) -> dict[str, Any]:
    """Birthday-paradox support-size estimate (Arora and Zhang 2017), automated.

    A distribution supported on S equally likely points gives a batch of s samples a duplicate
    with probability about 1 - exp(-s^2 / (2 S)), i.e. >= 1/2 once s ~ sqrt(S). For batch sizes
    s = 16, 32, ..., ``max_batch`` (from the sample ``x`` without replacement, ``n_batches`` each,
    drawn from ``generator``) we count batches holding a pair closer than ``threshold`` (see
    :func:`collision_threshold`); at the first s where at least half collide, the estimated
    support size is s^2 (the paper's rule). Otherwise the support is reported as > max_batch^2.
    Keep ``max_batch`` <= N/4 for a threshold calibrated on N true points and <= n/4 for a pool
    ``x`` of n points (see :func:`collision_threshold`); it is capped at a quarter of the pool.
    Points of ``x`` equal to one of the true ``atoms`` (:func:`true_atoms`) are set aside first
    (their fraction is ``support_atom_fraction``): the test then concerns the rest of the support.

    Returns a dict: ``support_size`` (s^2 or None), ``support_batch`` (s or None),
    ``support_collision_rate`` (at s, or at max_batch when none), ``support_lower_bound``
    (max_batch^2 when no collision), ``support_status`` (words), ``support_threshold``,
    ``support_atom_fraction``. Cost O(n^2 d) for a pool of n <= 4096 points (all distances once),
    else O(n_batches * sum_s s^2 d).
    """
    a = _as_f64(x, "x")
    if not isinstance(generator, np.random.Generator):
        raise ConfigError("birthday_support needs generator= (a numpy Generator)")
    base: dict[str, Any] = {"support_threshold": float(threshold), "support_atom_fraction": 0.0}
    if atoms is not None and len(atoms):
        on_atom = np.zeros(a.shape[0], dtype=bool)
        for row in np.asarray(atoms, dtype=np.float64):
            on_atom |= np.all(a == row, axis=1)
        base["support_atom_fraction"] = float(on_atom.mean())
        a = a[~on_atom]
    none = {"support_size": None, "support_batch": None, "support_collision_rate": None,
            "support_lower_bound": None}
    max_batch = min(int(max_batch), a.shape[0] // 4)
    if not (threshold > 0 and math.isfinite(threshold)):
        return {**base, **none, "support_status": "not applicable: no two distinct true points"}
    if max_batch < 2:
        return {**base, **none,
                "support_status": f"not applicable: only {a.shape[0]} points off the true atoms"}
    sizes = []
    s = 16
    while s < max_batch:
        sizes.append(s)
        s *= 2
    sizes.append(max_batch)
    # For pools up to 4096 points, all squared distances once (<= 134 MB); each batch is then a
    # sub-matrix minimum, O(s^2) instead of O(s^2 d).
    full = pairwise_sqdist(a, a) if a.shape[0] <= 4096 else None
    tau2 = float(threshold) ** 2
    note = f" (off true atoms: {base['support_atom_fraction']:.1%} of points set aside)" \
        if base["support_atom_fraction"] > 0 else ""
    rate = 0.0
    for s in sizes:
        hits = 0
        for _ in range(n_batches):
            idx = generator.choice(a.shape[0], size=s, replace=False)
            if full is not None:
                sub = full[np.ix_(idx, idx)]
                hits += bool(np.min(sub[np.triu_indices(s, 1)]) < tau2)
            else:
                hits += _min_pairwise(a[idx]) < threshold
        rate = hits / n_batches
        if rate >= 0.5:
            return {**base, "support_size": int(s * s), "support_batch": int(s),
                    "support_collision_rate": rate, "support_lower_bound": None,
                    "support_status": f"collisions in {hits}/{n_batches} batches of {s}: support ~ {s * s}"
                                      + note}
    return {**base, "support_size": None, "support_batch": None, "support_collision_rate": rate,
            "support_lower_bound": int(max_batch * max_batch),
            "support_status": f"no collision up to s={max_batch} (support > {max_batch * max_batch})" + note}


# ---------------------------------------------------------------------------------------------
# moment discrepancy
# ---------------------------------------------------------------------------------------------


@dataclass
class MomentFolds:
    """Unbiased per-fold estimates of a sample's first three moments, in the sketch's coordinates.

    ``mean`` (J, k); ``cov`` (J, k, k), the unbiased sample covariance; ``third`` (J, K), the
    unbiased third cumulant (k-statistic k_3) of the sample projected on each of the K directions.
    """

    mean: np.ndarray
    cov: np.ndarray
    third: np.ndarray


@dataclass
class MomentSketch:
    """Where the moments are compared: a projection to k <= ``sketch_dim`` coordinates (None: all d
    coordinates, when d <= sketch_dim) and K unit directions in those coordinates for the third cumulant."""

    projection: np.ndarray | None  # (d, k) orthonormal columns, or None
    directions: np.ndarray  # (K, k) unit rows

    @classmethod
    def draw(cls, d: int, sketch_dim: int, n_directions: int, generator: np.random.Generator) -> MomentSketch:
        """A random sketch: Haar-orthonormal k = min(d, sketch_dim) columns (none when d <= sketch_dim)
        and ``n_directions`` directions uniform on the sphere, from ``generator``."""
        if not isinstance(generator, np.random.Generator):
            raise ConfigError("MomentSketch.draw needs a numpy Generator (pfbench.seeding.numpy_generator)")
        if sketch_dim < 1 or n_directions < 1:
            raise ConfigError(f"sketch_dim={sketch_dim} and n_directions={n_directions} must be >= 1")
        proj = None
        if d > sketch_dim:
            q, r = np.linalg.qr(generator.standard_normal((d, sketch_dim)))
            proj = q * np.sign(np.diag(r))
        k = d if proj is None else sketch_dim
        return cls(proj, random_directions(k, n_directions, generator))

    def coords(self, x: Any) -> np.ndarray:
        a = _as_f64(x, "x")
        return a if self.projection is None else a @ self.projection


def moment_folds(x: Any, sketch: MomentSketch, folds: int) -> MomentFolds:
    """:class:`MomentFolds` of ``x`` (n, d) split into ``folds`` consecutive blocks of floor(n / folds)
    rows (the last n mod folds rows unused). Cost O(n (d k + k^2 + k K))."""
    a = sketch.coords(x)
    m = a.shape[0] // folds
    if folds < 2 or m < 3:
        raise ConfigError(f"the moment discrepancy needs folds >= 2 of at least 3 points, got {a.shape[0]} "
                          f"points in {folds} folds")
    blocks = a[:folds * m].reshape(folds, m, a.shape[1])
    mean = blocks.mean(axis=1)
    c = blocks - mean[:, None, :]
    cov = np.matmul(c.transpose(0, 2, 1), c) / (m - 1)
    u = c @ sketch.directions.T  # (J, m, K): u'(x - mean) per fold
    third = (u * u * u).sum(axis=1) * (m / ((m - 1) * (m - 2)))
    return MomentFolds(mean, cov, third)


def moment_scales(y: Any, sketch: MomentSketch) -> tuple[float, float, float]:
    """The reference's scales: tr S, ||S||_F^2 and sum_u (u' S u)^3 over the sketch's directions
    (S its unbiased covariance in the sketch's coordinates). Raises if any is not positive."""
    a = sketch.coords(y)
    if a.shape[0] < 2:
        raise ConfigError("the moment discrepancy's reference needs at least 2 points")
    c = a - a.mean(axis=0)
    cov = c.T @ c / (a.shape[0] - 1)
    var_u = np.einsum("lk,kj,lj->l", sketch.directions, cov, sketch.directions)
    scales = (float(np.trace(cov)), float(np.sum(cov * cov)), float(np.sum(var_u ** 3)))
    if not all(v > 0 and math.isfinite(v) for v in scales):
        raise ConfigError("the moment discrepancy's reference has no spread (zero covariance)")
    return scales


def _cross_fold(dx: np.ndarray, dy: np.ndarray) -> float:
    """sum_{j != j'} <D_j, D_j'> / (J (J - 1)) for the fold differences D_j = dx_j - dy_j: unbiased
    for ||E D||^2 since the folds are independent."""
    dd = (dx - dy).reshape(dx.shape[0], -1)
    tot = dd.sum(axis=0)
    j = dd.shape[0]
    return float((tot @ tot - np.einsum("jp,jp->", dd, dd)) / (j * (j - 1)))


def moment_discrepancy_folds(fx: MomentFolds, fy: MomentFolds, scales: tuple[float, float, float]) -> dict[str, float]:
    """The moment discrepancy of two samples from their :class:`MomentFolds` (the same sketch and number
    of folds) and the reference's :func:`moment_scales`; see :func:`moment_discrepancy`."""
    if fx.mean.shape[0] != fy.mean.shape[0]:
        raise ConfigError(f"both samples need the same number of folds, got {fx.mean.shape[0]} and {fy.mean.shape[0]}")
    parts = {"mean": _cross_fold(fx.mean, fy.mean) / scales[0],
             "cov": _cross_fold(fx.cov, fy.cov) / scales[1],
             "third": _cross_fold(fx.third, fy.third) / scales[2]}
    parts["total"] = parts["mean"] + parts["cov"] + parts["third"]
    return parts


def moment_discrepancy(x: Any, y: Any, *, folds: int = 10, sketch_dim: int = 64, n_directions: int = 64,
                       generator: np.random.Generator) -> dict[str, float]:
    """Squared relative errors of the mean, the covariance and the third cumulant of x against y.

    .. math::
        \\text{mean} = \\frac{\\|\\mu_x - \\mu_y\\|^2}{\\operatorname{tr} \\Sigma_y}, \\quad
        \\text{cov} = \\frac{\\|\\Sigma_x - \\Sigma_y\\|_F^2}{\\|\\Sigma_y\\|_F^2}, \\quad
        \\text{third} = \\frac{\\sum_u (\\kappa_3^x(u) - \\kappa_3^y(u))^2}{\\sum_u (u' \\Sigma_y u)^3},
        \\qquad \\text{total} = \\text{mean} + \\text{cov} + \\text{third}

    with :math:`\\kappa_3(u) = E[(u'(x - \\mu))^3]` over K = ``n_directions`` random unit directions u
    (a sketch of the third-cumulant tensor: never d^3 memory). For d > ``sketch_dim`` everything is
    computed on a random ``sketch_dim``-dimensional orthogonal projection (:class:`MomentSketch`).
    Each numerator is estimated without bias: both samples are split into J = ``folds`` blocks,
    D_j is the difference of the blocks' unbiased estimates (mean, covariance, k-statistic k_3) and
    sum_{j != j'} <D_j, D_j'> / (J (J - 1)) has expectation ||E D||^2 exactly. So each part is 0 in
    expectation when x and y come from the same distribution (it can be slightly negative, as the
    unbiased MMD^2) and, e.g., ||delta||^2 / d for N(mu + delta, I) against N(mu, I). The
    denominators are y's unbiased sample quantities (scale-free parts; their ratio bias is O(1/n)).

    Cost O((n + m)(d k + k^2 + k K)); memory O(J k^2 + n k).
    """
    a, b = _pair(x, y)
    sketch = MomentSketch.draw(a.shape[1], sketch_dim, n_directions, generator)
    return moment_discrepancy_folds(moment_folds(a, sketch, folds), moment_folds(b, sketch, folds),
                                    moment_scales(b, sketch))


# ---------------------------------------------------------------------------------------------
# data copying (Meehan, Chaudhuri, Dasgupta 2020)
# ---------------------------------------------------------------------------------------------


def nearest_rows(x: np.ndarray, ref: np.ndarray, *, max_entries: int = 2**22) -> tuple[np.ndarray, np.ndarray]:
    """For each row of x (n, d): the index of its nearest row of ``ref`` (m, d) and the squared
    distance to it (exact 0 for coincident rows, :func:`pairwise_sqdist`). Blocks of rows so that
    at most ``max_entries`` distances are held at once; cost O(n m d)."""
    n = x.shape[0]
    idx = np.empty(n, dtype=np.int64)
    d2 = np.empty(n)
    step = max(1, max_entries // max(ref.shape[0], 1))
    for i in range(0, n, step):
        blk = pairwise_sqdist(x[i:i + step], ref)
        j = np.argmin(blk, axis=1)
        idx[i:i + step] = j
        d2[i:i + step] = np.maximum(blk[np.arange(blk.shape[0]), j], 0.0)
    return idx, d2


def kmeans(x: Any, k: int, *, generator: np.random.Generator, iters: int = 20) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding, all draws from ``generator``: the (k, d) centres.

    Stops after ``iters`` updates or when no assignment changes; a centre that loses all its points
    stays where it is. Cost O(iters n k d).
    """
    a = _as_f64(x, "x")
    n = a.shape[0]
    if not 1 <= k <= n:
        raise ConfigError(f"k-means needs 1 <= k <= n, got k={k} for n={n} points")
    if not isinstance(generator, np.random.Generator):
        raise ConfigError("kmeans needs a numpy Generator (pfbench.seeding.numpy_generator)")
    centres = np.empty((k, a.shape[1]))
    centres[0] = a[generator.integers(n)]
    closest = np.maximum(pairwise_sqdist(a, centres[:1])[:, 0], 0.0)
    for c in range(1, k):
        tot = float(closest.sum())
        i = int(generator.choice(n, p=closest / tot)) if tot > 0 else int(generator.integers(n))
        centres[c] = a[i]
        closest = np.minimum(closest, np.maximum(pairwise_sqdist(a, centres[c:c + 1])[:, 0], 0.0))
    labels = None
    for _ in range(iters):
        new, _ = nearest_rows(a, centres)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        counts = np.bincount(labels, minlength=k)
        sums = np.zeros_like(centres)
        np.add.at(sums, labels, a)
        keep = counts > 0
        centres[keep] = sums[keep] / counts[keep, None]
    return centres


def mann_whitney_z(a: np.ndarray, b: np.ndarray) -> float:
    """Z-scored Mann-Whitney U of sample a against b: U = #{(i, j): a_i > b_j} + #{a_i = b_j} / 2,
    z = (U - n m / 2) / sd with the tie-corrected null sd. Negative: a tends to be smaller. 0 when
    every value ties."""
    n, m = len(a), len(b)
    v = np.concatenate([np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)])
    order = np.argsort(v, kind="stable")
    _, first, t = np.unique(v[order], return_index=True, return_counts=True)
    ranks = np.empty(v.size)
    ranks[order] = np.repeat(first + (t + 1) / 2.0, t)  # 1-based mid-ranks
    u = float(ranks[:n].sum()) - n * (n + 1) / 2.0
    tot = n + m
    var = n * m / 12.0 * ((tot + 1) - float(np.sum(t.astype(np.float64) ** 3 - t)) / (tot * (tot - 1)))
    return (u - n * m / 2.0) / math.sqrt(var) if var > 0 else 0.0


class DataCopyingTest:
    """The data-copying test C_T of Meehan, Chaudhuri and Dasgupta (AISTATS 2020).

    The training sample T is partitioned into ``cells`` cells by k-means (:func:`kmeans`, seeded by
    ``generator``); a point belongs to the cell of its nearest centre. L(x) is the distance from x to
    its nearest training point in its cell. In each cell pi, Z_U(pi) is the Mann-Whitney z-score
    (:func:`mann_whitney_z`) of L over the generated points against L over the held-out true points
    ``x_test``: negative when generated points lie closer to the training points than fresh true
    points do (data copying), positive when farther (underfitting). Cells with at least
    ``min_cell`` generated points (the paper's tau) and 2 held-out points enter

        C_T = sum_pi w_pi Z_U(pi) / sum_pi w_pi,   w_pi = the fraction of held-out points in pi.

    Without copying the Z_U(pi) are about independent N(0, 1), so z = C_T sum w / sqrt(sum w^2) is
    about N(0, 1) and p = Phi(z) is the one-sided p-value of copying. The training partition and
    the held-out distances are computed once; each call tests one generated sample. Cost
    O(iters N k d) for k-means on N training points, then O((n + m) N d / k) for balanced cells.
    """

    def __init__(self, x_train: Any, x_test: Any, *, cells: int, generator: np.random.Generator,
                 min_cell: int = 20, iters: int = 20):
        self.train = _as_f64(x_train, "x_train")
        self.test = _as_f64(x_test, "x_test")
        if self.train.shape[1] != self.test.shape[1]:
            raise ConfigError(f"x_train has dimension {self.train.shape[1]}, x_test {self.test.shape[1]}")
        if min_cell < 1:
            raise ConfigError(f"min_cell={min_cell} must be >= 1")
        self.cells, self.min_cell = int(cells), int(min_cell)
        self.centres = kmeans(self.train, self.cells, generator=generator, iters=iters)
        self.train_cell, _ = nearest_rows(self.train, self.centres)
        self.members = [self.train[self.train_cell == c] for c in range(self.cells)]
        self.test_cell, self.test_dist = self._distances(self.test)

    def _distances(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cell, _ = nearest_rows(x, self.centres)
        dist = np.full(x.shape[0], np.inf)
        for c in range(self.cells):
            at = np.nonzero(cell == c)[0]
            if at.size and self.members[c].shape[0]:
                dist[at] = np.sqrt(nearest_rows(x[at], self.members[c])[1])
        return cell, dist

    def __call__(self, x_gen: Any) -> dict[str, Any]:
        """``ct`` (C_T, or None when no cell qualifies), ``z``, ``p``, ``null_sd`` (C_T's sd without
        copying), ``cells_used``, and the median
        distance to the nearest training point of the generated and the held-out points."""
        g = _as_f64(x_gen, "x_gen")
        if g.shape[1] != self.train.shape[1]:
            raise ConfigError(f"x_gen has dimension {g.shape[1]}, x_train {self.train.shape[1]}")
        cell, dist = self._distances(g)
        n_test = self.test.shape[0]
        w, z = [], []
        for c in range(self.cells):
            dg, dt = dist[cell == c], self.test_dist[self.test_cell == c]
            if dg.size >= self.min_cell and dt.size >= 2:
                w.append(dt.size / n_test)
                z.append(mann_whitney_z(dg, dt))
        out: dict[str, Any] = {"cells_used": len(w), "gen_nn_median": float(np.median(dist)),
                               "test_nn_median": float(np.median(self.test_dist))}
        if not w:
            return {**out, "ct": None, "z": None, "p": None, "null_sd": None}
        wa, za = np.asarray(w), np.asarray(z)
        ct = float(wa @ za / wa.sum())
        null_sd = math.sqrt(float(wa @ wa)) / float(wa.sum())  # of C_T when the Z_U(pi) are iid N(0, 1)
        zz = ct / null_sd
        return {**out, "ct": ct, "z": zz, "p": float(scipy.special.ndtr(zz)), "null_sd": null_sd}

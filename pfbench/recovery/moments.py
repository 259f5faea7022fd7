"""Streamed low-order moments of an (n, d) sample in float64, in bounded memory.

Definitions (empirical, over rows x_1..x_n of X):

.. math::
    \\bar x = \\tfrac1n \\sum_s x_s, \\qquad
    C = \\tfrac1n \\sum_s (x_s - \\bar x)(x_s - \\bar x)^T, \\qquad
    K_U = \\tfrac1n \\sum_s y_s \\otimes y_s \\otimes y_s,\\quad y_s = U^T (x_s - \\bar x),

so :math:`K_U = \\kappa_3 \\times_1 U^T \\times_2 U^T \\times_3 U^T` is the (biased) third-cumulant
estimate contracted with a (d, k) matrix U on every mode. With U = I it is the full d x d x d
tensor; the moment estimators only need it in a k-dimensional principal subspace (MATH 2b step 3),
so they never form the d^3 tensor.

Every pass reads X in chunks of rows (numpy array, ``np.memmap`` or torch tensor), converting one
chunk at a time to float64, so memory is O(chunk * (d + k^2) + d^2 + k^3) whatever n is: 1e7 rows
from a memory-mapped file work. Mean and covariance use the pairwise (Chan-Golub-LeVeque) update
of chunk statistics, which is as accurate as the two-pass in-memory formula.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pfbench import ConfigError

#: Rows read from the source per step (bounded memory: 65536 x d float64) ...
DEFAULT_CHUNK = 65536
#: ... and at most this many rows per third-moment sub-block: the (k//2 + 1) k pair products of a
#: sub-block (about 1 MiB, _PAIR_BYTES) stay in the 2 MiB L2 while each GEMM is long enough.
#: Measured, 1 thread, GFLOP/s for 256 / 512 / 1024 / 2048 / 4096 rows: k = 15: 25, 27, 27, 24, 24;
#: k = 55: 52, 51, 50, 46, 33 (scripts/bench_recovery.py reports the rate against GEMM).
_SUB = 1024
_PAIR_BYTES = 1 << 20
#: Rows per covariance GEMM (measured at d = 20: 0.49 / 0.61 / 0.64 x peak for 1024 / 4096 / 65536
#: rows, while 4096 x d keeps the shifted copy in L2).
_COV_SUB = 4096


def _n_rows(X: Any) -> tuple[int, int]:
    shape = tuple(X.shape)
    if len(shape) != 2:
        raise ConfigError(f"samples must be a 2-D (n, d) array, got shape {shape}; reshape to (n, d)")
    n, d = int(shape[0]), int(shape[1])
    if n < 1 or d < 1:
        raise ConfigError(f"samples have shape {shape}; need at least one row and one column")
    return n, d


def iter_chunks(X: Any, chunk: int = DEFAULT_CHUNK, check_finite: bool = True) -> Iterator[torch.Tensor]:
    """Yield consecutive row blocks of X as contiguous float64 CPU torch tensors (<= ``chunk`` rows).

    Accepts numpy arrays, ``np.memmap`` (only the current block is paged in) and torch tensors
    (moved to CPU one block at a time). Raises :class:`pfbench.ConfigError` on non-finite values
    unless ``check_finite`` is False (for a caller whose sums would turn non-finite anyway: it checks
    them once and calls :func:`_raise_non_finite` to name the row).
    The contractions run in torch because its CPU BLAS (MKL) is 2x faster than numpy's OpenBLAS on
    the skinny GEMMs here (e.g. (120 x 1024) @ (1024 x 15) at k = 15; measured in scripts/bench_recovery.py).
    """
    n, _ = _n_rows(X)
    if int(chunk) < 1:
        raise ConfigError(f"chunk={chunk} must be >= 1 rows")
    is_torch = isinstance(X, torch.Tensor)
    for start in range(0, n, int(chunk)):
        block = X[start:start + int(chunk)]
        if is_torch:
            block = block.detach().to(device="cpu", dtype=torch.float64).contiguous()
        else:
            arr = np.ascontiguousarray(block, dtype=np.float64)
            # A read-only float64 memmap comes back as a view; torch wants writable memory.
            block = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
        if check_finite:
            _check_block(block, start)
        yield block


def _check_block(block: torch.Tensor, start: int) -> None:
    # One reduction is 40x cheaper than an elementwise isfinite mask; locate rows only on failure.
    if not math.isfinite(float(block.sum())):
        bad = torch.nonzero(~torch.isfinite(block).all(dim=1)).reshape(-1)
        where = f"row {start + int(bad[0])}" if bad.numel() else f"rows {start}..{start + len(block) - 1}"
        raise ConfigError(f"samples contain non-finite values (or overflow) at {where}; clean the data")


def _raise_non_finite(X: Any, chunk: int, what: str) -> None:
    """Sums over X came out non-finite: raise the one-line error naming X's first non-finite row,
    or, if every row is finite, saying that ``what`` overflowed."""
    for _ in iter_chunks(X, chunk):
        pass
    raise ConfigError(f"the {what} overflowed float64 on finite data; rescale the samples")


def mean_cov(X: Any, chunk: int = DEFAULT_CHUNK) -> tuple[int, np.ndarray, np.ndarray]:
    """One streamed pass: (n, mean (d,), covariance (d, d) with the 1/n normalization).

    Within a chunk the rows are shifted by a pilot mean s (the running mean, or for the first chunk
    the mean of its first rows) into a reused buffer with a column of ones, and one GEMM per
    sub-block of _COV_SUB rows accumulates [x - s, 1]^T [x - s, 1]: the shifted sums S2, S1 and the
    count together. Chunk statistics n_j, mean_j = s + S1 / n_j, M2_j = S2 - S1 S1^T / n_j are exact
    up to rounding of order eps |mean_j - s|^2 / var (s is close to the chunk mean), and chunks are
    merged by M2 = M2_a + M2_b + delta delta^T n_a n_b / (n_a + n_b), delta = mean_b - mean_a (Chan,
    Golub and LeVeque), so drifting or offset data lose no digits to the one-pass E[x x^T] - mean
    mean^T cancellation. Cost O(n d^2) flops, memory O(chunk d + d^2). Non-finite data make the sums
    non-finite; only then is X scanned to name the row.
    """
    _, d = _n_rows(X)
    count = 0
    mean = torch.zeros(d, dtype=torch.float64)
    m2 = torch.zeros(d, d, dtype=torch.float64)
    buf = torch.empty(_COV_SUB, d + 1, dtype=torch.float64)
    buf[:, d] = 1.0
    acc = torch.empty(d + 1, d + 1, dtype=torch.float64)
    for block in iter_chunks(X, chunk, check_finite=False):
        nb = block.shape[0]
        shift = mean.clone() if count else block[:1024].mean(dim=0)
        acc.zero_()
        for s in range(0, nb, _COV_SUB):
            b = buf[:min(_COV_SUB, nb - s)]
            torch.sub(block[s:s + _COV_SUB], shift, out=b[:, :d])
            acc.addmm_(b.T, b)
        dc = acc[d, :d] / nb
        mb = shift + dc
        delta = mb - mean
        tot = count + nb
        m2.add_(acc[:d, :d]).sub_(torch.outer(dc, dc), alpha=nb).add_(torch.outer(delta, delta), alpha=count * nb / tot)
        mean += delta * (nb / tot)
        count = tot
    if not (bool(torch.isfinite(m2).all()) and bool(torch.isfinite(mean).all())):
        _raise_non_finite(X, chunk, "covariance")
    cov = (m2 / count).numpy()
    return count, mean.numpy(), 0.5 * (cov + cov.T)


class _ThirdMoment:
    """Accumulates sum_s y_s (x) y_s (x) y_s over centred row blocks, y_s = U^T x_s in R^k.

    Pair products without a gather: for odd k, every unordered pair {i, j} is exactly one
    (i, (i + o) mod k) with offset o in 0..(k-1)/2 (for even k the offset k/2 lists its k/2 pairs
    twice). With y2 = [y; y] stored feature-major (2k, c), the m = k//2 + 1 shifted copies
    y2[o:o + k] are one strided view (m, k, c), so a single multiply writes all m k products
    z[o, i] = y_i y_(i+o) with a contiguous inner loop over the c samples, and one GEMM
    (m k, c) @ (c, k) contracts them with y. Per sub-block of ``self.sub`` <= _SUB rows (fewer for
    large k, so the products stay in L2): centre, project, one multiply, one GEMM; buffers and views
    are made once. The GEMM stage runs at 0.75-0.95 x peak; at small k the pair products and reading the
    data cost as much again (scripts/bench_recovery.py times each stage). Flops per row: d
    (centring) + 2 d k (projection) + m k (pairs) + 2 k^2 m (GEMM); memory O(sub (d + m k)).
    """

    def __init__(self, U: np.ndarray, mean: np.ndarray):
        d, k = U.shape
        self.d, self.k = int(d), int(k)
        self.m = self.k // 2 + 1
        self.ncol = self.m * self.k
        self.ut = torch.from_numpy(np.ascontiguousarray(U.T, dtype=np.float64))
        self.mu = torch.from_numpy(np.ascontiguousarray(mean, dtype=np.float64))
        self.acc = torch.zeros(self.ncol, self.k, dtype=torch.float64)
        self.sub = max(256, min(_SUB, 1 << int(math.log2(max(1.0, _PAIR_BYTES / (8 * self.ncol))))))
        self._flat = [torch.empty(self.sub * n, dtype=torch.float64) for n in (self.d, 2 * self.k, self.ncol)]
        self._full = self._views(self.sub)

    def _views(self, c: int) -> tuple[torch.Tensor, ...]:
        cflat, yflat, zflat = self._flat
        cb = cflat[:c * self.d].view(c, self.d)
        y2 = yflat[:2 * self.k * c].view(2 * self.k, c)
        y, z = y2[:self.k], zflat[:self.ncol * c].view(self.m, self.k, c)
        return cb, cb.T, y, y2[self.k:], y.unsqueeze(0), y2.as_strided((self.m, self.k, c), (c, c, 1)), \
            z, z.view(self.ncol, c), y.T

    def add(self, block: torch.Tensor) -> None:
        """Add the rows of an uncentred float64 block (c, d)."""
        full, sub = self._full, self.sub
        mu, ut, acc = self.mu, self.ut, self.acc
        for s in range(0, block.shape[0], sub):
            xs = block[s:s + sub]
            cb, cbt, y, ycopy, yrow, shifted, z, z2, yt = full if xs.shape[0] == sub else self._views(xs.shape[0])
            # Centre before projecting: U^T x - U^T mean would lose |mean| / |x - mean| digits.
            torch.sub(xs, mu, out=cb)
            torch.mm(ut, cbt, out=y)
            ycopy.copy_(y)
            torch.mul(yrow, shifted, out=z)
            acc.addmm_(z2, yt)

    def tensor(self, n: int) -> np.ndarray:
        return _unpack_pairs(self.acc.numpy() / n, self.k)


def _unpack_pairs(acc: np.ndarray, k: int) -> np.ndarray:
    """(m k, k) with row o k + i holding sum y_i y_(i+o mod k) y_l in column l -> the symmetric (k, k, k) tensor.

    Entry (i, j, l) is read once, at its sorted index i <= j <= l, from the row of the pair {i, j},
    and written to all its permutations, so the result is exactly symmetric (the GEMM computes
    some entries more than once, with different rounding).
    """
    i, j, l = (np.asarray(t) for t in zip(*itertools.combinations_with_replacement(range(k), 3)))
    o = (j - i) % k
    row = np.where(o <= k // 2, o * k + i, ((i - j) % k) * k + j)
    vals = acc[row, l]
    out = np.empty((k, k, k))
    for a, b, c in itertools.permutations((i, j, l)):
        out[a, b, c] = vals
    return out


def third_moment_projected(X: Any, mean: np.ndarray, U: np.ndarray, chunk: int = DEFAULT_CHUNK) -> np.ndarray:
    """K_U = (1/n) sum_s y_s^{(x)3}, y_s = U^T (x_s - mean): the third central moment in U coordinates.

    Shapes: X (n, d), mean (d,), U (d, k) -> (k, k, k), fully symmetric. Cost 2 n k^2 (k//2 + 1)
    flops for the contraction (n k^2 (k+1) for odd k) plus 2 n d k for the projection; memory
    O(chunk d + _SUB (d + k^2) + k^3), never O(d^3) unless U is d x d. The data are not checked
    chunk by chunk: a non-finite row makes the accumulated sums non-finite, and only then is X
    scanned to name the row (an overflow with finite data is reported as such).
    """
    n, d = _n_rows(X)
    U = np.asarray(U, dtype=np.float64)
    mean = np.asarray(mean, dtype=np.float64)
    if U.ndim != 2 or U.shape[0] != d or mean.shape != (d,):
        raise ConfigError(
            f"third_moment_projected: need mean ({d},) and U ({d}, k); got {mean.shape} and {U.shape}"
        )
    acc = _ThirdMoment(U, mean)
    for block in iter_chunks(X, chunk, check_finite=False):
        acc.add(block)
    if not bool(torch.isfinite(acc.acc).all()):
        _raise_non_finite(X, chunk, "third moment")
    return acc.tensor(n)


@dataclass(frozen=True)
class MomentSummary:
    """Moments an estimator needs, from data (:func:`moment_summary`) or exact (population).

    Attributes
    ----------
    n : float
        Number of samples (``inf`` for population moments).
    mean : (d,) array
        Mean of x.
    cov : (d, d) array
        Covariance of x.
    basis : (d, k) array
        Orthonormal columns: the top-k eigenvectors of ``cov`` in decreasing eigenvalue order.
    cov_eigvals : (d,) array
        All eigenvalues of ``cov``, decreasing.
    third : (k, k, k) array
        Third cumulant contracted with ``basis`` on every mode.
    """

    n: float
    mean: np.ndarray
    cov: np.ndarray
    basis: np.ndarray
    cov_eigvals: np.ndarray
    third: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])


def contract_modes(T: np.ndarray, M: np.ndarray) -> np.ndarray:
    """M applied on every mode of T: out[i, j, ...] = sum M[i, a] M[j, b] ... T[a, b, ...].

    One tensordot per mode (O(d^(p+1)) for a p-mode tensor), where the equivalent single einsum
    costs O(d^(2p)): at d = 26, p = 3 it is 0.5 ms against 1.7 s.
    """
    for _ in range(T.ndim):
        T = np.tensordot(T, M, axes=([0], [1]))  # the contracted mode moves to the end: p steps cycle back
    return T


def principal_basis(cov: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues of ``cov`` (decreasing, all d) and the top-k eigenvectors (d, k). O(d^3)."""
    w, v = np.linalg.eigh(cov)
    order = np.argsort(w)[::-1]
    return w[order], np.ascontiguousarray(v[:, order[:k]])


def moment_summary(X: Any, k: int, chunk: int = DEFAULT_CHUNK) -> MomentSummary:
    """Two streamed passes over X: mean and covariance, then the third cumulant in the top-k basis.

    Shapes: X (n, d); returns a :class:`MomentSummary` with basis (d, min(k, d)) and third
    (k, k, k). Cost O(n d^2 + n d k + n k^3) flops, memory independent of n.
    """
    n, mean, cov = mean_cov(X, chunk)
    evals, basis = principal_basis(cov, min(int(k), mean.shape[0]))
    third = third_moment_projected(X, mean, basis, chunk)
    return MomentSummary(n=float(n), mean=mean, cov=cov, basis=basis, cov_eigvals=evals, third=third)

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
#: ... and rows per third-moment GEMM: keeps the (k(k+1)/2, 1024) pair-product block in cache while
#: each GEMM is long enough (measured at k = 55: 50, 45, 37 GFLOP/s for 1024, 2048, 4096 rows; at
#: k = 15 the pair products, not the GEMM, bound the rate, about 20 GFLOP/s whatever the size).
_SUB = 1024


def _n_rows(X: Any) -> tuple[int, int]:
    shape = tuple(X.shape)
    if len(shape) != 2:
        raise ConfigError(f"samples must be a 2-D (n, d) array, got shape {shape}; reshape to (n, d)")
    n, d = int(shape[0]), int(shape[1])
    if n < 1 or d < 1:
        raise ConfigError(f"samples have shape {shape}; need at least one row and one column")
    return n, d


def iter_chunks(X: Any, chunk: int = DEFAULT_CHUNK) -> Iterator[torch.Tensor]:
    """Yield consecutive row blocks of X as contiguous float64 CPU torch tensors (<= ``chunk`` rows).

    Accepts numpy arrays, ``np.memmap`` (only the current block is paged in) and torch tensors
    (moved to CPU one block at a time). Raises :class:`pfbench.ConfigError` on non-finite values.
    The contractions run in torch because its CPU BLAS (MKL) is 2x faster than numpy's OpenBLAS on
    the skinny GEMMs here (k = 15 rows x 2048 x 120 columns; measured in scripts/bench_recovery.py).
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
        # One reduction is 40x cheaper than an elementwise isfinite mask; locate rows only on failure.
        if not math.isfinite(float(block.sum())):
            bad = torch.nonzero(~torch.isfinite(block).all(dim=1)).reshape(-1)
            where = f"row {start + int(bad[0])}" if bad.numel() else f"rows {start}..{start + len(block) - 1}"
            raise ConfigError(f"samples contain non-finite values (or overflow) at {where}; clean the data")
        yield block


def mean_cov(X: Any, chunk: int = DEFAULT_CHUNK) -> tuple[int, np.ndarray, np.ndarray]:
    """One streamed pass: (n, mean (d,), covariance (d, d) with the 1/n normalization).

    Chunk statistics (n_j, mean_j, M2_j = sum (x - mean_j)(x - mean_j)^T) are merged by
    M2 = M2_a + M2_b + delta delta^T n_a n_b / (n_a + n_b), delta = mean_b - mean_a (Chan, Golub and
    LeVeque), which avoids the cancellation of the one-pass E[x x^T] - mean mean^T formula. Cost
    O(n d^2) flops (one GEMM per chunk), memory O(chunk d + d^2).
    """
    _, d = _n_rows(X)
    count = 0
    mean = torch.zeros(d, dtype=torch.float64)
    m2 = torch.zeros(d, d, dtype=torch.float64)
    for block in iter_chunks(X, chunk):
        nb = block.shape[0]
        mb = block.mean(dim=0)
        cb = block - mb
        delta = mb - mean
        tot = count + nb
        m2.addmm_(cb.T, cb).add_(torch.outer(delta, delta), alpha=count * nb / tot)
        mean += delta * (nb / tot)
        count = tot
    cov = (m2 / count).numpy()
    return count, mean.numpy(), 0.5 * (cov + cov.T)


class _ThirdMoment:
    """Accumulates sum_s y_s (x) y_s (x) y_s over row blocks y (c, k), storing the k(k+1)/2 pairs i <= j.

    Per sub-block of _SUB rows: the pair products y_i y_j (i <= j) go into a preallocated
    (k(k+1)/2, c) buffer (k vectorized products, no gather), then one GEMM (k x c) @ (c x k(k+1)/2)
    adds the contraction with y: 2 c k^2 (k+1)/2 flops, memory O(_SUB k^2).
    """

    def __init__(self, k: int):
        self.k = int(k)
        self.npair = self.k * (self.k + 1) // 2
        self.acc = torch.zeros(self.k, self.npair, dtype=torch.float64)
        self.buf = torch.empty(self.npair, _SUB, dtype=torch.float64)

    def add(self, centred: torch.Tensor, ut: torch.Tensor) -> None:
        """Add the rows of a centred block (c, d), projected sub-block by sub-block with ut = U^T (k, d).

        Each sub-block's projection yt = U^T x^T (k, c) is computed contiguous: a strided view of a
        whole-block projection has a leading dimension of 65536 doubles, a power of two that makes
        the GEMM's rows alias in cache (measured: 27 against 46 GFLOP/s at k = 55).
        """
        k = self.k
        for s in range(0, centred.shape[0], _SUB):
            yt = torch.mm(ut, centred[s:s + _SUB].T)  # (k, c), contiguous
            c = yt.shape[1]
            buf = self.buf[:, :c]
            off = 0
            for i in range(k):
                torch.mul(yt[i:], yt[i], out=buf[off:off + k - i])
                off += k - i
            self.acc.addmm_(yt, buf.T)

    def tensor(self, n: int) -> np.ndarray:
        return _unpack_pairs(self.acc.numpy() / n, self.k)


def pair_index(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i <= j) of a k x k symmetric matrix in the order i, then j: k(k+1)/2 of them."""
    return np.triu_indices(k)


def _unpack_pairs(acc: np.ndarray, k: int) -> np.ndarray:
    """(k, k(k+1)/2) with columns over pairs j <= l -> the symmetric (k, k, k) tensor.

    Entry (i, j, l) is read once, at its sorted index i <= j <= l, and written to all its
    permutations, so the result is exactly symmetric (the GEMM computes some entries twice, with
    different rounding).
    """
    iu, ju = pair_index(k)
    col = np.empty((k, k), dtype=np.int64)
    col[iu, ju] = np.arange(iu.size)
    i, j, l = (np.asarray(t) for t in zip(*itertools.combinations_with_replacement(range(k), 3)))
    vals = acc[i, col[j, l]]
    out = np.empty((k, k, k))
    for a, b, c in itertools.permutations((i, j, l)):
        out[a, b, c] = vals
    return out


def third_moment_projected(X: Any, mean: np.ndarray, U: np.ndarray, chunk: int = DEFAULT_CHUNK) -> np.ndarray:
    """K_U = (1/n) sum_s y_s^{(x)3}, y_s = U^T (x_s - mean): the third central moment in U coordinates.

    Shapes: X (n, d), mean (d,), U (d, k) -> (k, k, k), fully symmetric. Cost n k^2 (k+1) flops for
    the contraction plus 2 n d k for the projection; memory O(chunk (d + k) + _SUB k^2 + k^3), never
    O(d^3) unless U is d x d.
    """
    n, d = _n_rows(X)
    U = np.asarray(U, dtype=np.float64)
    mean = np.asarray(mean, dtype=np.float64)
    if U.ndim != 2 or U.shape[0] != d or mean.shape != (d,):
        raise ConfigError(
            f"third_moment_projected: need mean ({d},) and U ({d}, k); got {mean.shape} and {U.shape}"
        )
    acc = _ThirdMoment(U.shape[1])
    ut = torch.from_numpy(np.ascontiguousarray(U.T))
    mu_t = torch.from_numpy(mean)
    for block in iter_chunks(X, chunk):
        # Centre before projecting: U^T x - U^T mean would lose |mean| / |x - mean| digits.
        acc.add(block - mu_t, ut)
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

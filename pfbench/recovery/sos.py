"""``+model=sos`` on ``data=quadratic``: the degree-4 sum-of-squares relaxation of MATH 2a (cvxpy),
gauge-fixed and symmetry-reduced.

The moment identities are Tr Q_a = mu_a, Tr(Q_a Q_b) = G_ab (G = Cov/2) and Tr(Q_a Q_b Q_c) = T_abc
(T = kappa_3/8), invariant under the gauge Q_a -> U Q_a U^T, U in O(r). Before relaxing, the gauge is
fixed as far as the moments allow (r <= 3):

1. Frame. For a unit w in R^d, Q_w = sum_a w_a Q_a has the power sums Tr Q_w^k = mu(w), G(w, w),
   T(w, w, w), k = 1, 2, 3, which for r <= 3 fix its spectrum lambda_1 > .. > lambda_r (Newton's
   identities). The data are rotated by an orthogonal W whose first row is the w, among the d axes and
   256 seeded random directions, with the widest relative eigengap min(lambda_i - lambda_i+1)/|lambda|;
   in that frame (x' = W x) the truth has a gauge copy with Q'_1 = D = diag(lambda). This is no
   assumption: every solution of the identities has such a copy.
2. Diagonals. Tr Q'_b, Tr(D Q'_b) and Tr(D^2 Q'_b) are linear in the diagonal of Q'_b: a Vandermonde
   system in lambda (its first r rows) fixes every diagonal entry.
3. What is left of O(r) is the group of sign flips diag(+-1) modulo -I (2^(r-1) elements), acting on
   the N = (d - 1) r(r-1)/2 unknowns o_b,ij = (Q'_b)_ij, i < j, b >= 2, by o_ij -> s_i s_j o_ij.

A degree-4 pseudo-expectation E~ on the o's has E~[1] = 1, a PSD moment matrix M[alpha, beta] =
E~[o^alpha o^beta] over the monomials of degree <= 2, and meets every remaining identity f = 0 as
E~[f p] = 0 for each monomial p with deg f p <= 4 (identities left constant by steps 1-2 hold by
construction and are dropped). The program is invariant under the sign group, so averaging an
optimal E~ over it gives an optimal invariant one (symmetry reduction): only sign-invariant monomials
have non-zero E~, identities times a non-invariant p vanish identically, and M splits into 2^(r-1)
blocks, one per character (the parity of the pairs' degrees at each index). At r = 3, d = 6: blocks
of 46 + 3 x 30 rows, against one of 136 rows after steps 1-2 only and 406 rows before (whose
interior-point estimate was about 410 GB).

Sample moments never satisfy the identities exactly, so they are soft: the program minimizes the
2-norm of all the residuals E~[f p] (pair identities scaled by 1/||G||, triples by 1/||T||), which is
0 on exact moments.

Rounding and certificate. The invariant E~ of a point o is the uniform mixture over its sign orbit,
and then every block of M is rank one (within a block all monomials change sign together). The
certificate ``rank1_ratio`` is the largest second/first eigenvalue over the blocks: 0 for the orbit of
a point (the relaxation is tight and its rounding certified), and it also catches a mixture of the
two orbits that differ in the one gauge-invariant sign, o_12 o_13 o_23 (r = 3). The rounding: o_ij =
sqrt(top eigenvalue) x top eigenvector of X_ij = E~[o_ij o_ij^T] (the signs of o_12, o_13 are gauge,
fixed by a convention), and for r = 3 the sign of o_23 from the invariant triple moment
E~[o_12 x o_13 x o_23]. The program's objective at that point (``rounding_residual``) is an upper
bound for the best point and the relaxation's optimum a lower bound.

What a certificate guarantees. Exact moments: a certificate and a rounding residual at solver accuracy
mean the output reproduces the mean, covariance and third cumulant; order <= 3 moments determine Q up
to O(r) when the Q_a span Sym(r) (d >= r(r+1)/2, generic; MATH 2b's spectral algorithm is the
constructive proof), so it is the truth up to the gauge. An interior-point solution (Clarabel) lies in
the relative interior of the optimal face, so a rank-one one also shows the relaxation has no other
optimum; a first-order solution (SCS) shows only the former. Steps 1-2 need a combination with
distinct eigenvalues (``frame_eigengap`` > 0; generic). Sample moments: no relaxation is exactly tight;
the residual is a lower bound on every point's, the error is first order in the moment error
(tests/test_recovery_sos.py), and the run is called converged when the certificate is below
RANK1_TOL + RESIDUAL_SLACK x the residual (the spread the moments' inconsistency explains).

Size and cost: :func:`sos_size` (O(1), before anything is built) with a cost model per solver fitted
to measured solves; the estimator refuses what exceeds the memory/time limits. r >= 4 is refused:
order-3 moments do not fix the spectrum of any Q_w there.

Measured (scripts/bench_recovery.py --only-sos; SCS; 2 cores shared, load 2-5; gauge-aligned error
about 1e-6 or less and certificate <= 1e-6 on every exact-moment solve), wall time with exact moments /
with n = 1e5 samples, and peak memory:

    r = 3: d = 6   1.1 s / 3.4 s, 0.35 GB     d = 10  4.3 s / 27 s, 0.41 GB
           d = 13  6.9 s / 46 s, 0.55 GB      d = 14  9.5 s / 102 s, 0.62 GB (refused by default: 639 s estimated)
    r = 2: d = 8   0.9 s / 1.2 s, 0.35 GB     d = 20  18 s / 20 s, 1.1 GB      d = 26  146 s / 257 s, 3.7 GB

Before this formulation, r = 2, d = 8 took 84-513 s and 5.0 GB (Clarabel, one 136-row moment matrix)
and r = 3, d = 6 was refused (one 406-row matrix, about 410 GB). Steps 1-2 alone bring r = 3, d = 6 to
one 136-row block (Clarabel: 317 s, 5.0 GB); the symmetry reduction to 46 + 3 x 30 rows (Clarabel:
5-8 s, 0.48 GB; SCS: 1 s, 0.35 GB). SCS and Clarabel reach the same solution (to 1e-7 at r = 3, d = 8,
n = 1e5: SCS 9 s, Clarabel 177 s and 1.8 GB).
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from pfbench import ConfigError
from pfbench.families.base import Pushforward
from pfbench.families.quadratic import QuadraticPushforward
from pfbench.recovery.moments import (
    DEFAULT_CHUNK,
    MomentSummary,
    contract_modes,
    mean_cov,
    third_moment_projected,
)
from pfbench.recovery.quadratic_moments import check_identifiable

Poly = dict[tuple[int, ...], float]  # monomial (sorted variable indices, with repeats) -> coefficient

#: the largest latent dimension the gauge fixing reaches (order-3 moments fix the spectrum of Q_w)
MAX_R = 3
SOLVERS = ("SCS", "CLARABEL")
#: solver tolerances when model.params.eps is null (see SoSQuadraticEstimator)
DEFAULT_EPS = {"SCS": 1e-6, "CLARABEL": 1e-8}

# Cost models, fitted to the solves of scripts/bench_recovery.py on this machine (2 shared cores; r = 2,
# d = 3..26 and r = 3, d = 6..14 with SCS; r = 2, d = 3..14 and r = 3, d = 6..9 with Clarabel), in the
# residual rows, the block rows R_k and the blocks' PSD entries P_k = R_k(R_k + 1)/2.
#: memory: Python and cvxpy, the program's construction (per residual row and per moment-block entry)
#: and, for Clarabel, its dense KKT blocks (bytes per S = sum P_k^2); measured peaks 0.75-1.03x the estimate
_MEM_BASE_GB, _MEM_GB_PER_ROW, _MEM_GB_PER_ENTRY = 0.33, 3e-6, 1.5e-6
_CLARABEL_BYTES_PER_S = 80.0
#: time: construction and cvxpy's compilation per residual row; an SCS iteration costs about
#: _SCS_CUBE * sum R_k^3 + _SCS_ROW[r] * rows seconds (its sparse solve with the residual rows), and
#: _SCS_ITERS[r] is 1.6-2.3x the most iterations measured on n = 1e5 samples (r = 2: 875, r = 3: 3125;
#: exact moments: <= 200); Clarabel about _CLARABEL_COEF * sum P_k^3 seconds (9-22 iterations, each
#: factorizing the dense blocks). Estimates were 1-70x the measured times of 5 s or more (closest on
#: sample moments at load 5: Clarabel, r = 3, d = 8, 177 s measured, 183 s estimated).
_BUILD_S_PER_ROW = 4e-5
_SCS_CUBE, _SCS_ROW, _SCS_ITERS = 6e-10, {1: 0.0, 2: 7e-8, 3: 8e-7}, {1: 0, 2: 2000, 3: 5000}
_CLARABEL_COEF = 1.5e-9
#: the machine is shared: measured 2-6x slower at load 5 than quiet
_LOAD_FACTOR = 2.0


@dataclass(frozen=True)
class SoSSize:
    """Size of the gauge-fixed, symmetry-reduced degree-4 relaxation for (r, d), known before building."""

    r: int
    d: int
    solver: str
    n_vars: int  # N unknowns: off-diagonal entries of Q'_2..Q'_d
    blocks: tuple[int, ...]  # rows of each moment-matrix block (the invariant block first)
    psd_entries: int  # sum of R_k(R_k+1)/2
    monomials: int  # sign-invariant monomials of degree <= 4: the pseudo-moments
    soft_constraints: int  # residual rows of the moment identities
    est_memory_gb: float
    est_seconds: float

    @property
    def rows(self) -> int:
        """Rows of the largest block (it dominates the cost)."""
        return max(self.blocks)

    def blocks_text(self) -> str:
        runs: list[list[int]] = []
        for b in self.blocks:
            if runs and runs[-1][0] == b:
                runs[-1][1] += 1
            else:
                runs.append([b, 1])
        return " + ".join(f"{k} x {b}" if k > 1 else f"{b}" for b, k in runs)

    def describe(self) -> str:
        how = "SCS (first order)" if self.solver == "SCS" else "Clarabel (interior point)"
        return (f"r={self.r}, d={self.d}: N={self.n_vars} unknowns after fixing the gauge, moment-matrix blocks of "
                f"{self.blocks_text()} rows ({self.psd_entries:,} PSD entries), {self.monomials:,} pseudo-moments, "
                f"{self.soft_constraints:,} constraint rows; estimated {self.est_memory_gb:.3g} GB and "
                f"{_fmt_seconds(self.est_seconds)} with {how}")


def _fmt_seconds(s: float) -> str:
    if s < 120:
        return f"{s:.3g} s"
    if s < 7200:
        return f"{s / 60:.3g} min"
    return f"{s / 3600:.3g} h"


def _pairs(r: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(r) for j in range(i + 1, r)]


def _pair_mask(i: int, j: int) -> int:
    return (1 << i) | (1 << j)


def _count_by_mask(r: int, k: int, max_deg: int) -> dict[int, int]:
    """Monomials of degree <= max_deg in the o's (k per pair), counted by character mask. O(1) for r <= 3."""
    pairs = _pairs(r)
    out: dict[int, int] = defaultdict(int)
    for e in itertools.product(range(max_deg + 1), repeat=len(pairs)):
        if sum(e) > max_deg:
            continue
        mask, count = 0, 1
        for (i, j), ep in zip(pairs, e):
            count *= math.comb(k + ep - 1, ep)
            if ep % 2:
                mask ^= _pair_mask(i, j)
        out[mask] += count
    return out


def _cost(solver: str, r: int, blocks: tuple[int, ...], soft: int) -> tuple[float, float]:
    """(memory GB, seconds) of the cost model above."""
    psd = [b * (b + 1) // 2 for b in blocks]
    mem = _MEM_BASE_GB + _MEM_GB_PER_ROW * soft + _MEM_GB_PER_ENTRY * sum(float(b) ** 2 for b in blocks)
    secs = _BUILD_S_PER_ROW * soft
    if solver == "CLARABEL":
        mem += _CLARABEL_BYTES_PER_S * sum(float(p) ** 2 for p in psd) / 1e9
        secs += _CLARABEL_COEF * sum(float(p) ** 3 for p in psd)
    else:
        r_ = min(r, MAX_R)
        secs += _SCS_ITERS[r_] * (_SCS_CUBE * sum(float(b) ** 3 for b in blocks) + _SCS_ROW[r_] * soft)
    return mem, _LOAD_FACTOR * secs


def sos_size(r: int, d: int, solver: str = "SCS") -> SoSSize:
    """Counts for the program at (r, d), 1 <= r <= 3, and the cost model's estimate for ``solver``."""
    if not 1 <= r <= MAX_R:
        raise ValueError(f"sos_size: r={r} outside 1..{MAX_R}")
    solver = solver.upper()
    k = d - 1
    n = k * len(_pairs(r))
    by_mask = _count_by_mask(r, k, 2)
    blocks = (by_mask[0], *sorted((v for m, v in by_mask.items() if m), reverse=True))
    inv = [_count_by_mask(r, k, e)[0] for e in range(5)]
    # identities with unknowns left (module docstring): pairs (a, b) and triples (1, a, b), a, b >= 2,
    # are quadratic; triples (a, b, c), all >= 2, cubic for r = 3 (o_12 o_23 o_31) and quadratic for r = 2
    n_quad = k * (k + 1) if r >= 2 else 0
    n_rest = math.comb(k + 2, 3) if r >= 2 else 0
    soft = n_quad * inv[2] + n_rest * inv[4 - (3 if r >= 3 else 2)]
    mem, secs = _cost(solver, r, blocks, soft)
    return SoSSize(r=r, d=d, solver=solver, n_vars=n, blocks=blocks, psd_entries=sum(b * (b + 1) // 2 for b in blocks),
                   monomials=inv[4], soft_constraints=soft, est_memory_gb=mem, est_seconds=secs)


def _available_memory_gb() -> float:
    from pfbench.system import available_memory_bytes

    avail = available_memory_bytes()
    if avail is None:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) / 1e9
    return avail / 1024 / 1e6  # MemAvailable's kB / 1e6, as before (1.024e9 bytes: 2.4% on the safe side)


# ---------------------------------------------------------------------------------------------
# the frame: which combination Q_w is diagonal, its spectrum, and every diagonal entry
# ---------------------------------------------------------------------------------------------


def spectrum_from_power_sums(p1: float, p2: float, p3: float, r: int) -> np.ndarray | None:
    """Eigenvalues (descending) of a symmetric r x r matrix with Tr A^k = p_k, k = 1, 2, 3 (r <= 3);
    None when no real spectrum fits (sample moments of a nearly degenerate combination)."""
    if r == 1:
        return np.array([p1])
    if r == 2:
        disc = 2.0 * p2 - p1 * p1  # (lambda_1 - lambda_2)^2
        if disc < 0:
            return None
        s = math.sqrt(disc)
        return np.array([(p1 + s) / 2.0, (p1 - s) / 2.0])
    e1, e2, e3 = p1, (p1 * p1 - p2) / 2.0, (p1**3 - 3.0 * p1 * p2 + 2.0 * p3) / 6.0  # Newton's identities
    roots = np.roots([1.0, -e1, e2, -e3])
    if np.max(np.abs(roots.imag)) > 1e-9 * max(1.0, math.sqrt(abs(p2))):
        return None
    return np.sort(roots.real)[::-1]


@dataclass
class Frame:
    """x' = W x (W orthogonal, first row w); Q'_1 = diag(lam); diag[b] is the diagonal of Q'_b."""

    W: np.ndarray  # (d, d)
    lam: np.ndarray  # (r,)
    diag: np.ndarray  # (d, r)
    gap: float  # min(lambda_i - lambda_i+1) / ||lambda||: how well conditioned steps 1-2 are


def choose_frame(mean: np.ndarray, G: np.ndarray, T: np.ndarray, r: int, seed: int = 0,
                 candidates: int = 256) -> Frame:
    """Steps 1-2 of the module docstring. O((d + candidates) d^3)."""
    d = mean.shape[0]
    rng = np.random.default_rng(seed)
    U = np.concatenate([np.eye(d), rng.standard_normal((candidates, d))])
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    p1, p2 = U @ mean, np.einsum("na,ab,nb->n", U, G, U)
    p3 = np.einsum("abc,na,nb,nc->n", T, U, U, U)
    best, best_gap, lam_best = -1, -math.inf, None
    for i in range(len(U)):
        lam = spectrum_from_power_sums(float(p1[i]), float(p2[i]), float(p3[i]), r)
        if lam is None or p2[i] <= 0:
            continue
        gap = 1.0 if r == 1 else float(np.min(-np.diff(lam))) / math.sqrt(float(p2[i]))
        if gap > best_gap:
            best, best_gap, lam_best = i, gap, lam
    if lam_best is None:
        raise RuntimeError("SoS frame: no combination of the outputs has a real spectrum fitting its moments")
    w = U[best]
    Qm, _ = np.linalg.qr(np.column_stack([w, np.eye(d)]))  # an orthonormal completion of w
    W = Qm[:, :d].T.copy()
    W[0] = w
    mu, G1 = W @ mean, W @ (G @ w)
    T11 = W @ np.einsum("abc,a,b->c", T, w, w)
    V = np.vander(lam_best, r, increasing=True).T  # rows lambda^0 .. lambda^(r-1)
    diag = np.linalg.solve(V, np.stack([mu, G1, T11])[:r]).T  # Tr Q'_b, Tr(D Q'_b), Tr(D^2 Q'_b)
    diag[0] = lam_best
    return Frame(W=W, lam=lam_best, diag=diag, gap=best_gap)


# ---------------------------------------------------------------------------------------------
# polynomials over the off-diagonal unknowns
# ---------------------------------------------------------------------------------------------


def _variables(fr: Frame, r: int, d: int) -> tuple[list[list[list[Poly]]], list[int], dict[tuple[int, int], list[int]]]:
    """Entry polynomials Q'[a][i][j] in the frame, each variable's character mask, the variables by pair.

    Variables are pair-major: (i, j) in :func:`_pairs` order, then b = 2..d.
    """
    q: list[list[list[Poly]]] = [[[{} for _ in range(r)] for _ in range(r)] for _ in range(d)]
    for a in range(d):
        for i in range(r):
            if fr.diag[a, i] != 0.0:
                q[a][i][i] = {(): float(fr.diag[a, i])}
    masks: list[int] = []
    by_pair: dict[tuple[int, int], list[int]] = {}
    for i, j in _pairs(r):
        by_pair[i, j] = []
        for a in range(1, d):
            q[a][i][j] = q[a][j][i] = {(len(masks),): 1.0}
            by_pair[i, j].append(len(masks))
            masks.append(_pair_mask(i, j))
    return q, masks, by_pair


def _mul(p: Poly, q: Poly) -> Poly:
    out: Poly = defaultdict(float)
    for ma, ca in p.items():
        for mb, cb in q.items():
            out[tuple(sorted(ma + mb))] += ca * cb
    return out


def _add_into(acc: Poly, p: Poly, scale: float = 1.0) -> None:
    for mono, c in p.items():
        acc[mono] = acc.get(mono, 0.0) + scale * c


def _monomials(n: int, max_deg: int) -> list[tuple[int, ...]]:
    """All monomials in n variables of degree <= max_deg, graded."""
    out: list[tuple[int, ...]] = []
    for deg in range(max_deg + 1):
        out.extend(itertools.combinations_with_replacement(range(n), deg))
    return out


def _mask(mono: tuple[int, ...], masks: list[int]) -> int:
    m = 0
    for v in mono:
        m ^= masks[v]
    return m


class _Builder:
    """Sparse linear maps from the invariant pseudo-moment vector y to the program's matrices and residuals."""

    def __init__(self, mono: list[tuple[int, ...]]):
        self.mono = mono
        self.index = {mo: i for i, mo in enumerate(mono)}

    def matrix(self, polys: list[Poly]) -> sp.csr_matrix:
        indptr, cols, vals = [0], [], []
        for p in polys:
            for mo, c in p.items():
                if c != 0.0:
                    cols.append(self.index[mo])
                    vals.append(c)
            indptr.append(len(cols))
        return sp.csr_matrix((vals, cols, indptr), shape=(len(polys), len(self.mono)))

    def gram(self, basis: list[tuple[int, ...]]) -> sp.csr_matrix:
        """Matrix of E~[u_alpha u_beta], flattened (len(basis)^2, monomials), column-major."""
        return self.matrix([{tuple(sorted(a + b)): 1.0} for b in basis for a in basis])

    def point(self, values: np.ndarray) -> np.ndarray:
        """The pseudo-moments of the point mass at ``values`` (one per variable)."""
        return np.array([math.prod(values[v] for v in mo) for mo in self.mono])


def _identities(q: list[list[list[Poly]]], G: np.ndarray, T: np.ndarray, r: int) -> list[tuple[Poly, float]]:
    """(f, scale) for every pair and triple identity f = Tr(..) - target that still has unknowns."""
    d = len(q)
    s2 = 1.0 / max(float(np.linalg.norm(G)), 1e-12)
    s3 = 1.0 / max(float(np.linalg.norm(T)), 1e-12)
    out: list[tuple[Poly, float]] = []

    def keep(acc: Poly, target: float, scale: float) -> None:
        f = {mo: c for mo, c in acc.items() if c != 0.0}
        if any(mo for mo in f):  # identities left constant hold by the frame's construction (or are redundant)
            f[()] = f.get((), 0.0) - target
            out.append((f, scale))

    for a, b in itertools.combinations_with_replacement(range(d), 2):
        acc: Poly = {}
        for i, j in itertools.product(range(r), repeat=2):
            if q[a][i][j] and q[b][i][j]:
                _add_into(acc, _mul(q[a][i][j], q[b][i][j]))
        keep(acc, float(G[a, b]), s2)
    for a, b, c in itertools.combinations_with_replacement(range(d), 3):
        acc = {}
        for i, j, k in itertools.product(range(r), repeat=3):
            if q[a][i][j] and q[b][j][k] and q[c][k][i]:
                _add_into(acc, _mul(_mul(q[a][i][j], q[b][j][k]), q[c][k][i]))
        keep(acc, float(T[a, b, c]), s3)
    return out


def _round(yv: np.ndarray, b: _Builder, by_pair: dict[tuple[int, int], list[int]], r: int) -> np.ndarray:
    """The rounding of the module docstring: one value per variable."""
    def ey(mono: tuple[int, ...]) -> float:
        return float(yv[b.index[tuple(sorted(mono))]])

    out = np.zeros(sum(len(vs) for vs in by_pair.values()))
    o: dict[tuple[int, int], np.ndarray] = {}
    for p, vs in by_pair.items():
        X = np.array([[ey((u, v)) for v in vs] for u in vs])
        ev, vec = np.linalg.eigh(0.5 * (X + X.T))
        u = vec[:, -1] * math.sqrt(max(float(ev[-1]), 0.0))
        o[p] = u if u[np.argmax(np.abs(u))] >= 0 else -u  # gauge: the sign flips
    if r == 3:
        (p12, v12), (p13, v13), (p23, v23) = by_pair.items()
        t = sum(ey((x, y, z)) * o[p12][i] * o[p13][j] * o[p23][k]
                for i, x in enumerate(v12) for j, y in enumerate(v13) for k, z in enumerate(v23))
        if t < 0:  # the one sign the gauge does not reach
            o[p23] = -o[p23]
    for p, vs in by_pair.items():
        out[vs] = o[p]
    return out


@dataclass
class Program:
    """The relaxation in a frame: pseudo-moments (``builder.mono``), moment blocks, residual rows."""

    builder: _Builder
    blocks: list[list[tuple[int, ...]]]  # monomial bases, the invariant block first
    grams: list[sp.csr_matrix]  # per block, y -> its moment matrix (column-major), builder.gram(basis)
    by_pair: dict[tuple[int, int], list[int]]  # the variables of each off-diagonal position (i, j)
    A_res: sp.csr_matrix  # residual rows: the objective is ||A_res y||
    r: int

    def block_matrices(self, y: np.ndarray) -> list[np.ndarray]:
        out = []
        for basis, gram in zip(self.blocks, self.grams):
            R = len(basis)
            m = (gram @ y).reshape(R, R, order="F")
            out.append(0.5 * (m + m.T))
        return out

    def certificate(self, y: np.ndarray) -> float:
        """Largest second/first eigenvalue over the moment blocks: 0 for the orbit of a point."""
        ratio = 0.0
        for m in self.block_matrices(y):
            if len(m) > 1:
                ev = np.linalg.eigvalsh(m)
                if ev[-1] > 0:
                    ratio = max(ratio, float(ev[-2] / ev[-1]))
        return ratio

    def round(self, y: np.ndarray) -> np.ndarray:
        return _round(y, self.builder, self.by_pair, self.r)


def build_program(fr: Frame, G: np.ndarray, T: np.ndarray, r: int) -> Program:
    """The program of the module docstring for frame moments G' = W G W^T, T' = T x W x W x W."""
    d = fr.W.shape[0]
    q, masks, by_pair = _variables(fr, r, d)
    n = len(masks)
    b = _Builder([mo for mo in _monomials(n, 4) if _mask(mo, masks) == 0])
    blocks: dict[int, list[tuple[int, ...]]] = defaultdict(list)
    for mo in _monomials(n, 2):
        blocks[_mask(mo, masks)].append(mo)
    inv_mult = {e: [mo for mo in _monomials(n, e) if _mask(mo, masks) == 0] for e in range(3)}
    resid: list[Poly] = []
    for f, scale in _identities(q, G, T, r):
        for p in inv_mult[min(4 - max(len(mo) for mo in f), 2)]:
            resid.append({tuple(sorted(mo + p)): scale * c for mo, c in f.items()})
    bases = [blocks[0]] + [v for m, v in blocks.items() if m]
    return Program(builder=b, blocks=bases, grams=[b.gram(basis) for basis in bases], by_pair=by_pair,
                   A_res=b.matrix(resid), r=r)


def sos_recover(mean: np.ndarray, G: np.ndarray, T: np.ndarray, r: int, *, solver: str = "SCS",
                eps: float = 1e-6, seed: int = 0, time_limit: float | None = None,
                verbose: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """Solve the relaxation for mean (d,), G = Cov/2 (d, d), T = kappa_3/8 (d, d, d), 1 <= r <= 3.

    Returns the rounded Q (d, r, r) and a record: solver status, residual norm (the relaxation's
    optimum), the rounding's residual, build and solve times, the certificate ``rank1_ratio``, the
    frame and the program. ``time_limit`` (seconds) stops the solver with its current iterate.
    Cost: :func:`sos_size`; call it (or the estimator, which does) before this on large inputs.
    """
    import cvxpy as cp

    d = mean.shape[0]
    if not 1 <= r <= MAX_R:
        raise ValueError(f"sos_recover: r={r} outside 1..{MAX_R}")
    solver = solver.upper()
    t0 = time.perf_counter()
    fr = choose_frame(mean, G, T, r, seed=seed)
    prog = build_program(fr, fr.W @ G @ fr.W.T, contract_modes(T, fr.W), r)
    b, A_res = prog.builder, prog.A_res
    rec: dict[str, Any] = {"solver": solver, "frame": fr, "program": prog, "iterations": 0}
    if A_res.shape[0] == 0:  # r = 1: the frame is the answer
        t1 = time.perf_counter()
        yv = np.ones(1)
        rec.update(status="optimal", objective=0.0)
    else:
        y = cp.Variable(len(b.mono))
        cons = [y[b.index[()]] == 1.0]
        for basis, gram in zip(prog.blocks, prog.grams):
            R = len(basis)
            cons.append(cp.reshape(gram @ y, (R, R), order="F") >> 0)
        problem = cp.Problem(cp.Minimize(cp.norm(A_res @ y, 2)), cons)
        t1 = time.perf_counter()
        opts: dict[str, Any] = {}
        if solver == "SCS":
            opts = {"eps_abs": eps, "eps_rel": eps, "max_iters": 10**6}
            if time_limit is not None:
                opts["time_limit_secs"] = float(time_limit)
        elif solver == "CLARABEL":
            opts = {"tol_gap_abs": eps, "tol_gap_rel": eps, "tol_feas": eps}
            if time_limit is not None:
                opts["time_limit"] = float(time_limit)
        problem.solve(solver=solver, verbose=verbose, **opts)
        if y.value is None:
            raise RuntimeError(f"SoS solver {solver} returned status '{problem.status}' without a solution")
        yv = np.asarray(y.value)
        rec.update(status=str(problem.status), objective=float(np.linalg.norm(A_res @ yv)),
                   iterations=int(problem.solver_stats.num_iters or 0))
    rec["build_time_s"] = t1 - t0
    rec["solve_time_s"] = time.perf_counter() - t1  # cvxpy's compilation and the solver
    rec["rank1_ratio"] = prog.certificate(yv)
    values = prog.round(yv)
    rec["rounding_residual"] = float(np.linalg.norm(A_res @ b.point(values))) if A_res.shape[0] else 0.0
    Qf = np.zeros((d, r, r))
    for a in range(d):
        Qf[a][np.diag_indices(r)] = fr.diag[a]
    for (i, j), vs in prog.by_pair.items():
        Qf[1:, i, j] = Qf[1:, j, i] = values[vs]
    rec["Q_frame"] = Qf
    return np.einsum("ba,bij->aij", fr.W, Qf), rec


#: the relaxation is tight (its rounding certified) when the certificate is below this on exact
#: moments (measured 1e-7 or less) ...
RANK1_TOL = 1e-3
#: ... plus this multiple of the moment residual on sample moments, whose inconsistency spreads the
#: pseudo-distribution: measured ratio / residual 0.02 .. 12 on random instances (seed 0 at r = 2,
#: d = 3..26 and r = 3, d = 6..14, n = 1e5: scripts/bench_recovery.py; seeds 0-4 at r = 2, d = 3, 5 and
#: seeds 0-2 at r = 3, d = 6, n = 1e4 .. 1e6)
RESIDUAL_SLACK = 20.0


class SoSQuadraticEstimator:
    """Degree-4 SoS relaxation (MATH 2a), gauge-fixed and symmetry-reduced, for x_a = g^T Q_a g, r <= 3.

    Parameters
    ----------
    latent_dim, out_dim : int
        r <= 3 and d (d >= r(r+1)/2 for identifiability); checked by :meth:`validate` before any work.
    seed : int
        Seeds the candidate directions of the frame (module docstring, step 1).
    solver : str
        ``SCS`` (first order; default: 10-50x faster here at the same solution) or ``CLARABEL``
        (interior point, memory grows with the square of the PSD entries).
    eps : float or None
        Solver tolerance; None: 1e-6 for SCS (1e-8 took 6-8x the iterations on slightly perturbed
        moments for the same solution to 4e-7; exact moments still give errors <= 2e-6), 1e-8 for
        Clarabel.
    max_memory_gb, max_seconds : float
        :meth:`validate` refuses (ConfigError, with the sizes) when the estimate exceeds these.
        ``max_memory_gb`` defaults to half the memory available when it runs; ``max_seconds`` also
        stops the solver (which then returns its current iterate, judged by the certificate).
    chunk : int
        Rows per step when streaming the moments.
    """

    def __init__(self, *, latent_dim: int, out_dim: int, seed: int = 0, solver: str = "SCS",
                 eps: float | None = None, max_memory_gb: float | None = None, max_seconds: float = 600.0,
                 chunk: int = DEFAULT_CHUNK, verbose: bool = False):
        self.latent_dim, self.out_dim, self.seed = latent_dim, out_dim, seed
        self.solver, self.eps, self.max_memory_gb, self.max_seconds = solver, eps, max_memory_gb, max_seconds
        self.chunk, self.verbose = chunk, verbose

    def validate(self) -> None:
        """Raise ConfigError unless d >= r(r+1)/2, r <= 3, the solver is known and the program fits
        (:meth:`check_size`). O(1); the entry point calls it before it samples or reads any data,
        :meth:`fit` and :meth:`fit_moments` call it first.
        """
        r, d = int(self.latent_dim), int(self.out_dim)
        check_identifiable(r, d)
        if str(self.solver).upper() not in SOLVERS:
            raise ConfigError(f"model.params.solver={self.solver!r}; choose CLARABEL or SCS")
        if self.eps is not None and not float(self.eps) > 0:
            raise ConfigError(f"model.params.eps={self.eps!r}; a solver tolerance must be > 0 (null: the default)")
        if r > MAX_R:
            k, pairs = d - 1, r * (r - 1) // 2
            rows = 1 + pairs * k * (k + 1) // 2
            mem, secs = _cost(str(self.solver).upper(), r, (rows,), 0)
            raise ConfigError(
                f"+model=sos refuses this instance: r={r} > {MAX_R}, where the gauge fixing stops (moments of "
                f"order <= 3 fix the spectrum of one Q_a only for r <= {MAX_R}), and the off-diagonal unknowns alone "
                f"would give a moment block of {rows} rows (estimated >= {mem:.3g} GB and {_fmt_seconds(secs)}); "
                "use +model=moments")
        self.check_size()

    def check_size(self) -> SoSSize:
        """Estimate the program and raise ConfigError if it cannot be solved in reasonable time here."""
        size = sos_size(int(self.latent_dim), int(self.out_dim), str(self.solver))
        mem_cap = 0.5 * _available_memory_gb() if self.max_memory_gb is None else float(self.max_memory_gb)
        if size.est_memory_gb > mem_cap or size.est_seconds > float(self.max_seconds):
            raise ConfigError(
                f"+model=sos refuses this instance: {size.describe()}; the limits are {mem_cap:.3g} GB and "
                f"{_fmt_seconds(float(self.max_seconds))} (model.params.max_memory_gb / max_seconds). "
                f"practical sizes are r=2 with d<=26 and r=3 with d<=13; use +model=moments for larger instances"
            )
        return size

    def fit(self, X: Any) -> SoSQuadraticEstimator:
        """Sample moments of X (n, d) (streamed; full d^3 third cumulant, d is small here), then solve."""
        self.validate()
        t0 = time.perf_counter()
        d = int(self.out_dim)
        if len(X.shape) != 2 or int(X.shape[1]) != d:
            raise ConfigError(f"samples have shape {tuple(X.shape)}; expected (n, {d})")
        n, mean, cov = mean_cov(X, int(self.chunk))
        third = third_moment_projected(X, mean, np.eye(d), int(self.chunk))
        s = MomentSummary(n=float(n), mean=mean, cov=cov, basis=np.eye(d),
                          cov_eigvals=np.linalg.eigvalsh(cov)[::-1], third=third)
        self.fit_moments(s)
        self.info_["fit_time_s"] = time.perf_counter() - t0
        return self

    def fit_moments(self, s: MomentSummary) -> SoSQuadraticEstimator:
        """Solve from a moment summary (third cumulant in any orthonormal basis of R^d)."""
        self.validate()
        t0 = time.perf_counter()
        r, d = int(self.latent_dim), int(self.out_dim)
        size = sos_size(r, d, str(self.solver))
        U = s.basis
        if U.shape != (d, d):
            raise ConfigError(f"SoS needs the full third cumulant: basis of shape ({d}, {d}), got {U.shape}")
        T = contract_modes(s.third, U) / 8.0
        solver = str(self.solver).upper()
        eps = float(self.eps) if self.eps is not None else DEFAULT_EPS[solver]
        Qh, rec = sos_recover(s.mean, s.cov / 2.0, T, r, solver=solver, eps=eps,
                              seed=int(self.seed), time_limit=float(self.max_seconds), verbose=bool(self.verbose))
        self.Q_ = Qh
        self.frame_ = rec["frame"]
        self.pushforward_ = QuadraticPushforward(r, d, dtype=torch.float64)
        self.pushforward_.set_params({"Q": torch.from_numpy(Qh)})
        for p in self.pushforward_.parameters():
            p.requires_grad_(False)
        ok = rec["status"] in {"optimal", "optimal_inaccurate"}
        ratio = rec["rank1_ratio"]
        slack = RANK1_TOL + RESIDUAL_SLACK * max(0.0, float(rec["objective"]))
        tight = ratio <= slack
        self.info_ = {
            "n_samples": float(s.n) if math.isfinite(s.n) else None,
            "solver": rec["solver"],
            "solver_status": rec["status"],
            "solver_iterations": rec["iterations"],
            # a solved but non-tight relaxation returns a rounding, not a certified recovery
            "converged": bool(ok and tight),
            "certificate": ("rank-one moment blocks: the relaxation is tight" if ratio <= RANK1_TOL else
                            f"rank-one up to the moment residual: second/first eigenvalue of a moment block "
                            f"{ratio:.3g} <= {slack:.3g} ({RANK1_TOL:g} + {RESIDUAL_SLACK:g} x the residual), the "
                            "spread the sample moments' inconsistency explains" if tight else
                            f"not tight: second/first eigenvalue of a moment block {ratio:.3g} > {slack:.3g} "
                            f"({RANK1_TOL:g} + {RESIDUAL_SLACK:g} x the moment residual); "
                            "Q_ is a rounding of the pseudo-distribution, not a certified solution"),
            "residual_norm": rec["objective"],
            "final_loss": rec["objective"],
            "rounding_residual": rec["rounding_residual"],
            "moment_matrix_rank1_ratio": ratio,
            "moment_rows": size.rows,
            "moment_blocks": size.blocks_text(),
            "sos_unknowns": size.n_vars,
            "pseudo_moments": size.monomials,
            "frame_eigengap": self.frame_.gap,
            "est_memory_gb": size.est_memory_gb,
            "est_seconds": size.est_seconds,
            "build_time_s": rec["build_time_s"],
            "solve_time_s": rec["solve_time_s"],
            "fit_time_s": time.perf_counter() - t0,
            "warning": ("" if ok else f"solver status {rec['status']}; ") + ("" if tight else "relaxation not tight"),
        }
        return self

    def extra_metrics(self, truth: Pushforward, X: Any = None) -> dict[str, Any]:
        """Nothing beyond the shared gauge-aligned error: the program has no oracle variant."""
        return {}

"""``+model=sos`` on ``data=quadratic``: the degree-4 sum-of-squares relaxation of MATH 2a (cvxpy).

Unknowns: the entries of symmetric Q_1..Q_d (r x r). Q_1 is diagonal (symmetry breaking) and the
linear identities Tr Q_a = mu_a are substituted exactly, (Q_a)_{rr} = mu_a - sum_{i<r} (Q_a)_ii, which
leaves N = d (m - 1) - (m - r) scalars, m = r(r+1)/2. A degree-4 pseudo-expectation is a linear
functional E~ on polynomials of degree <= 4 in them (one number y_alpha per monomial alpha) with

- E~[1] = 1 and the moment matrix M[alpha, beta] = y_{alpha beta} (alpha, beta of degree <= 2) PSD;
- the moment identities, multiplied by every monomial p that keeps the degree <= 4:
  E~[(Tr Q_a Q_b - G_ab) p] (deg p <= 2) and E~[(Tr Q_a Q_b Q_c - T_abc) p] (deg p <= 1), with
  G = Cov/2 and T = kappa_3 / 8 (MATH 2);
- symmetry breaking: Q_1 diagonal with sorted entries, (Q_1)_ii - (Q_1)_{i+1,i+1} >= 0, and the
  reflections diag(+-1) (which keep Q_1 diagonal) fixed by (Q_2)_{1l} >= 0, l >= 2. Each inequality
  h >= 0 enters as the localizing constraint [E~[h u_i u_j]] PSD over u = (1, scalars), which a
  mixture of sign classes violates; a plain E~[h] >= 0 would let E~ average them towards 0.

Sample moments never satisfy the identities exactly, so they are soft: the program minimizes the
2-norm of all the residuals above (each family scaled by its target's norm), which is 0 on exact
moments. The output is E~[Q_a]. The second eigenvalue of the degree <= 1 block of M over the first
(0 for a point mass) is reported as a certificate that the relaxation was tight.

Size: the moment matrix has R = C(N+2, 2) rows and P = R(R+1)/2 PSD entries; the pseudo-expectation
has C(N+4, 4) entries. Clarabel (interior point) needs about 0.3 GB + 60 P^2 bytes and 7.5e-8 P^2.28
seconds on a quiet machine here (fitted, see below); :func:`sos_size` computes this before anything
is built, and the estimator refuses oversize problems with the numbers. Practical: r = 2 with d <= 8
(measured: d = 8, R = 136, P = 9316: 84 s quiet, 513 s at load 5, 5.0 GB, gauge error 8e-9); d = 9
needs about 13 GB. r = 3 needs d >= 6: N = 27, R = 406, P = 82621, about 400 GB: out of reach.
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
from pfbench.recovery.moments import DEFAULT_CHUNK, MomentSummary, mean_cov, third_moment_projected
from pfbench.recovery.quadratic_moments import check_identifiable, sym_dim

Poly = dict[tuple[int, ...], float]  # monomial (sorted variable indices, with repeats) -> coefficient

#: Clarabel cost model in P = R(R+1)/2 (PSD entries), fitted to exact-moment solves on this machine
#: (r = 2, d = 3 .. 8, P = 231 .. 9316; scripts/bench_recovery.py): peak memory 0.3 GB + 60 bytes * P^2
#: (measured 0.32 .. 5.0 GB, within 10 %); time 7.5e-8 s * P^2.28 on a quiet machine (0.05 .. 84 s,
#: within 30 %), doubled here because the machine is shared (measured up to 6x slower at load 5).
_MEM_BASE_GB = 0.3
_MEM_BYTES_PER_P2 = 60.0
_SEC_COEF, _SEC_EXP = 1.5e-7, 2.28


@dataclass(frozen=True)
class SoSSize:
    """Size of the degree-4 relaxation for (r, d), known before building anything."""

    r: int
    d: int
    n_vars: int  # N scalar unknowns (Q_1 diagonal)
    rows: int  # R = C(N+2, 2): rows of the moment matrix
    psd_entries: int  # R(R+1)/2
    monomials: int  # C(N+4, 4): entries of the pseudo-expectation
    soft_constraints: int  # residual rows of the moment identities
    est_memory_gb: float
    est_seconds: float

    def describe(self) -> str:
        return (f"r={self.r}, d={self.d}: N={self.n_vars} unknowns, a moment matrix of {self.rows} rows "
                f"({self.psd_entries:,} PSD entries), {self.monomials:,} pseudo-moments, "
                f"{self.soft_constraints:,} constraint rows; estimated {self.est_memory_gb:.3g} GB and "
                f"{_fmt_seconds(self.est_seconds)} with an interior-point solver")


def _fmt_seconds(s: float) -> str:
    if s < 120:
        return f"{s:.3g} s"
    if s < 7200:
        return f"{s / 60:.3g} min"
    return f"{s / 3600:.3g} h"


def sos_size(r: int, d: int) -> SoSSize:
    """Counts for the relaxation at (r, d) and the cost model's memory/time estimate. O(1)."""
    m = sym_dim(r)
    n = d * m - (m - r) - d  # Q_1 diagonal; the trace identities substituted (see _variables)
    rows = math.comb(n + 2, 2)
    psd = rows * (rows + 1) // 2
    mono = math.comb(n + 4, 4)
    n_pairs = d * (d + 1) // 2
    n_triples = math.comb(d + 2, 3)
    soft = n_pairs * rows + n_triples * (n + 1)
    return SoSSize(r=r, d=d, n_vars=n, rows=rows, psd_entries=psd, monomials=mono, soft_constraints=soft,
                   est_memory_gb=_MEM_BASE_GB + _MEM_BYTES_PER_P2 * psd**2 / 1e9,
                   est_seconds=_SEC_COEF * psd**_SEC_EXP)


def _available_memory_gb() -> float:
    from pfbench.system import available_memory_bytes

    avail = available_memory_bytes()
    if avail is None:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) / 1e9
    return avail / 1024 / 1e6  # MemAvailable's kB / 1e6, as before (1.024e9 bytes: 2.4% on the safe side)


# ---------------------------------------------------------------------------------------------
# polynomials over the entries of Q
# ---------------------------------------------------------------------------------------------


def _variables(r: int, d: int, mean: np.ndarray | None) -> tuple[list[list[list[Poly]]], int]:
    """Entry polynomials Q[a][i][j] and the number of scalar unknowns.

    One variable per (a, i <= j), with Q_1 (a = 0) diagonal; with ``mean`` given, the linear
    identity Tr Q_a = mu_a is substituted exactly, (Q_a)_{r-1,r-1} = mu_a - sum_{i<r-1} (Q_a)_ii,
    removing d unknowns (for this degree-4 program that is equivalent to imposing the identity times
    every monomial of degree <= 3, and it shrinks the moment matrix about 4x at r = 2).
    """
    q: list[list[list[Poly]]] = []
    v = 0
    for a in range(d):
        rows: list[list[Poly]] = [[{} for _ in range(r)] for _ in range(r)]
        for i in range(r):
            for j in range(i, r):
                if (a == 0 and i != j) or (mean is not None and i == j == r - 1):
                    continue
                rows[i][j] = rows[j][i] = {(v,): 1.0}
                v += 1
        if mean is not None:
            last: Poly = {(): float(mean[a])}
            for i in range(r - 1):
                _add_into(last, rows[i][i], -1.0)
            rows[r - 1][r - 1] = last
        q.append(rows)
    return q, v


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


class _Builder:
    """Sparse linear maps from the pseudo-moment vector y to the program's matrices and residuals."""

    def __init__(self, n: int):
        self.mono = _monomials(n, 4)
        self.index = {mo: i for i, mo in enumerate(self.mono)}

    def row(self, poly: Poly) -> tuple[list[int], list[float]]:
        cols, vals = [], []
        for mo, c in poly.items():
            if c != 0.0:
                cols.append(self.index[mo])
                vals.append(c)
        return cols, vals

    def matrix(self, polys: list[Poly]) -> sp.csr_matrix:
        indptr, cols, vals = [0], [], []
        for p in polys:
            c, v = self.row(p)
            cols.extend(c)
            vals.extend(v)
            indptr.append(len(cols))
        return sp.csr_matrix((vals, cols, indptr), shape=(len(polys), len(self.mono)))

    def gram(self, basis: list[tuple[int, ...]], weight: Poly | None = None) -> sp.csr_matrix:
        """Matrix of E~[weight * u_alpha u_beta], flattened (len(basis)^2, monomials), column-major."""
        w = weight if weight is not None else {(): 1.0}
        polys = []
        for b in basis:  # column-major: the row index runs fastest
            for a in basis:
                polys.append({tuple(sorted(mo + a + b)): c for mo, c in w.items()})
        return self.matrix(polys)


def sos_recover(mean: np.ndarray, G: np.ndarray, T: np.ndarray, r: int, *, solver: str = "CLARABEL",
                eps: float = 1e-9, verbose: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """Solve the degree-4 relaxation for mean (d,), G = Cov/2 (d, d), T = kappa_3/8 (d, d, d).

    Returns E~[Q] (d, r, r) and a record (status, residual norm, solve time, tightness certificate).
    Cost: see :func:`sos_size`; call it (or the estimator, which does) before this on large inputs.
    """
    import cvxpy as cp

    d = mean.shape[0]
    q, n = _variables(r, d, mean)
    b = _Builder(n)
    basis2 = _monomials(n, 2)
    basis1 = _monomials(n, 1)

    pairs = [(a, bb) for a in range(d) for bb in range(a, d)]
    tr2 = {}
    for a, bb in pairs:
        acc: Poly = {}
        for i in range(r):
            for j in range(r):
                _add_into(acc, _mul(q[a][i][j], q[bb][i][j]))
        tr2[a, bb] = acc
    triples = list(itertools.combinations_with_replacement(range(d), 3))
    tr3 = {}
    for a, bb, c in triples:
        acc = {}
        for i, j, k in itertools.product(range(r), repeat=3):
            if q[a][i][j] and q[bb][j][k] and q[c][k][i]:
                _add_into(acc, _mul(_mul(q[a][i][j], q[bb][j][k]), q[c][k][i]))
        tr3[a, bb, c] = acc

    # Scale each family of identities by its target's size so they weigh alike.
    s2 = 1.0 / max(float(np.linalg.norm(G)), 1e-12)
    s3 = 1.0 / max(float(np.linalg.norm(T)), 1e-12)
    resid: list[Poly] = []
    for a, bb in pairs:
        ident = dict(tr2[a, bb])
        _add_into(ident, {(): -float(G[a, bb])})
        for p in basis2:
            resid.append({tuple(sorted(mo + p)): s2 * c for mo, c in ident.items()})
    for a, bb, c in triples:
        ident = dict(tr3[a, bb, c])
        _add_into(ident, {(): -float(T[a, bb, c])})
        for p in basis1:
            resid.append({tuple(sorted(mo + p)): s3 * cc for mo, cc in ident.items()})
    A_res = b.matrix(resid)

    y = cp.Variable(len(b.mono))
    R = len(basis2)
    M = cp.reshape(b.gram(basis2) @ y, (R, R), order="F")
    cons = [y[b.index[()]] == 1.0, M >> 0]
    # Localizing constraints for the symmetry breaking (see the module docstring).
    loc_polys: list[Poly] = []
    for i in range(r - 1):
        h: Poly = {}
        _add_into(h, q[0][i][i])
        _add_into(h, q[0][i + 1][i + 1], -1.0)
        loc_polys.append(h)
    if d > 1:
        for ll in range(1, r):
            loc_polys.append(dict(q[1][0][ll]))
    R1 = len(basis1)
    for h in loc_polys:
        cons.append(cp.reshape(b.gram(basis1, h) @ y, (R1, R1), order="F") >> 0)
    prob = cp.Problem(cp.Minimize(cp.norm(A_res @ y, 2)), cons)
    t0 = time.perf_counter()
    opts: dict[str, Any] = {}
    if solver.upper() == "SCS":
        opts = {"eps": eps, "max_iters": 200000}
    elif solver.upper() == "CLARABEL":
        opts = {"tol_gap_abs": eps, "tol_gap_rel": eps, "tol_feas": eps}
    prob.solve(solver=solver.upper(), verbose=verbose, **opts)
    secs = time.perf_counter() - t0
    if y.value is None:
        raise RuntimeError(f"SoS solver {solver} returned status '{prob.status}' without a solution")
    yv = np.asarray(y.value)
    Qh = np.zeros((d, r, r))
    for a in range(d):
        for i in range(r):
            for j in range(r):
                # E~ is linear: E~[affine entry] = its constant + sum of coefficients times E~[x_v].
                Qh[a, i, j] = sum(c * yv[b.index[mo]] for mo, c in q[a][i][j].items())
    m1 = (b.gram(basis1) @ yv).reshape(R1, R1, order="F")
    ev = np.linalg.eigvalsh(0.5 * (m1 + m1.T))[::-1]
    info = {"status": str(prob.status), "objective": float(prob.value), "solve_time_s": secs,
            "rank1_ratio": float(ev[1] / ev[0]) if ev[0] > 0 else None,
            "solver": solver.upper()}
    return Qh, info


#: the moment block is rank one (the relaxation is tight, its E~[Q] a certified solution) when its
#: second eigenvalue is below this fraction of the first, plus the moment residual for sample moments;
#: exact-moment solves reach 1e-6 or less
RANK1_TOL = 1e-3


class SoSQuadraticEstimator:
    """Degree-4 SoS relaxation (MATH 2a) for x_a = g^T Q_a g; the output is E~[Q_a].

    Parameters
    ----------
    latent_dim, out_dim : int
        r and d (d >= r(r+1)/2 for identifiability, checked by :meth:`validate` before any work).
    seed : int
        Unused (the program is deterministic); accepted for the estimator contract.
    solver : str
        ``CLARABEL`` (interior point, accurate; default) or ``SCS`` (first order, less memory).
    eps : float
        Solver tolerance.
    max_memory_gb, max_seconds : float
        :meth:`validate` refuses (ConfigError, with the sizes) when the estimate exceeds these.
        ``max_memory_gb`` defaults to half the memory available when it runs.
    chunk : int
        Rows per step when streaming the moments.
    """

    def __init__(self, *, latent_dim: int, out_dim: int, seed: int = 0, solver: str = "CLARABEL",
                 eps: float = 1e-8, max_memory_gb: float | None = None, max_seconds: float = 600.0,
                 chunk: int = DEFAULT_CHUNK, verbose: bool = False):
        self.latent_dim, self.out_dim, self.seed = latent_dim, out_dim, seed
        self.solver, self.eps, self.max_memory_gb, self.max_seconds = solver, eps, max_memory_gb, max_seconds
        self.chunk, self.verbose = chunk, verbose

    def validate(self) -> None:
        """Raise ConfigError unless d >= r(r+1)/2, the solver is known and the program fits
        (:meth:`check_size`). O(1); the entry point calls it before it samples or reads any data,
        :meth:`fit` and :meth:`fit_moments` call it first.
        """
        check_identifiable(int(self.latent_dim), int(self.out_dim))
        if str(self.solver).upper() not in {"CLARABEL", "SCS"}:
            raise ConfigError(f"model.params.solver={self.solver!r}; choose CLARABEL or SCS")
        self.check_size()

    def check_size(self) -> SoSSize:
        """Estimate the program and raise ConfigError if it cannot be solved in reasonable time here."""
        size = sos_size(int(self.latent_dim), int(self.out_dim))
        mem_cap = 0.5 * _available_memory_gb() if self.max_memory_gb is None else float(self.max_memory_gb)
        if size.est_memory_gb > mem_cap or size.est_seconds > float(self.max_seconds):
            raise ConfigError(
                f"+model=sos refuses this instance: {size.describe()}; the limits are {mem_cap:.3g} GB and "
                f"{_fmt_seconds(float(self.max_seconds))} (model.params.max_memory_gb / max_seconds). "
                f"practical sizes are r=2 with d<=8; use +model=moments for larger instances"
            )
        return size

    def fit(self, X: Any) -> SoSQuadraticEstimator:
        """Sample moments of X (n, d) (streamed; full d^3 third cumulant, d is tiny here), then solve."""
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
        size = sos_size(r, d)
        U = s.basis
        if U.shape != (d, d):
            raise ConfigError(f"SoS needs the full third cumulant: basis of shape ({d}, {d}), got {U.shape}")
        T = np.einsum("ijk,ai,bj,ck->abc", s.third, U, U, U) / 8.0
        Qh, rec = sos_recover(s.mean, s.cov / 2.0, T, r, solver=str(self.solver), eps=float(self.eps),
                              verbose=bool(self.verbose))
        self.Q_ = Qh
        self.pushforward_ = QuadraticPushforward(r, d, dtype=torch.float64)
        self.pushforward_.set_params({"Q": torch.from_numpy(Qh)})
        for p in self.pushforward_.parameters():
            p.requires_grad_(False)
        ok = rec["status"] in {"optimal", "optimal_inaccurate"}
        ratio = rec["rank1_ratio"]
        # exact moments: rank one to solver accuracy; sample moments perturb the block by about the
        # moment residual (r=2, d=3: ratio 0.002-0.05 at residuals 0.02-0.07, n=1e4), so that is the slack
        slack = RANK1_TOL + max(0.0, float(rec["objective"]))
        tight = ratio is not None and ratio <= slack
        self.info_ = {
            "n_samples": float(s.n) if math.isfinite(s.n) else None,
            "solver": rec["solver"],
            "solver_status": rec["status"],
            # a solved but non-tight relaxation returns a rounding, not a certified recovery
            "converged": bool(ok and tight),
            "certificate": ("rank-one moment block: the relaxation is tight" if tight else
                            f"not tight: second/first eigenvalue of the moment block {ratio} > {slack:.3g} "
                            "(1e-3 + the moment residual); "
                            "Q_ is a rounding of the pseudo-distribution, not a certified solution"),
            "residual_norm": rec["objective"],
            "final_loss": rec["objective"],
            "moment_matrix_rank1_ratio": rec["rank1_ratio"],
            "moment_rows": size.rows,
            "sos_unknowns": size.n_vars,
            "pseudo_moments": size.monomials,
            "est_memory_gb": size.est_memory_gb,
            "est_seconds": size.est_seconds,
            "solve_time_s": rec["solve_time_s"],
            "fit_time_s": time.perf_counter() - t0,
            "warning": ("" if ok else f"solver status {rec['status']}; ") + ("" if tight else "relaxation not tight"),
        }
        return self

    def extra_metrics(self, truth: Pushforward, X: Any = None) -> dict[str, Any]:
        """Nothing beyond the shared gauge-aligned error: the program has no oracle variant."""
        return {}

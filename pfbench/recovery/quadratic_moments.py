"""Core algebra of quadratic pushforwards x_a = g^T Q_a g: moments, spectral init, refinement.

Everything works on a :class:`~pfbench.recovery.moments.MomentSummary`, so the same code runs on
exact population moments (tests) and on streamed sample moments (``fit``).

Coordinates. Sym(r) has the orthonormal basis (for <X, Y> = Tr(XY)) Z = {E_ii} u {(E_ij + E_ji)/sqrt 2,
i < j}, m = r(r+1)/2 elements; a family {Q_a} is the (d, m) coordinate matrix C with Q_a = sum_i C_ai Z_i.
Then (MATH section 2), with tau_ijk = Tr(Z_i Z_j Z_k) the structure tensor of the Jordan algebra
(Sym(r), X o Y = (XY + YX)/2) and iota0 the coordinates of the identity:

    E x = C iota0,   Cov x / 2 = C C^T,   kappa_3(x) / 8 = tau x_1 C x_2 C x_3 C.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from pfbench import ConfigError
from pfbench.recovery.moments import MomentSummary, principal_basis
from pfbench.recovery.optim import lbfgs


def sym_dim(r: int) -> int:
    """m = r(r+1)/2 = dim Sym(r)."""
    return r * (r + 1) // 2


def check_identifiable(r: int, d: int) -> None:
    """Raise ConfigError unless d >= r(r+1)/2: fewer Q_a cannot span Sym(r) (MATH section 2)."""
    m = sym_dim(int(r))
    if int(r) < 1 or int(d) < 1:
        raise ConfigError(f"latent_dim={r} and out_dim={d} must both be >= 1")
    if int(d) < m:
        raise ConfigError(
            f"quadratic recovery is not identifiable: out_dim d={d} < r(r+1)/2={m} for latent_dim r={r}, "
            f"so the Q_a cannot span the symmetric matrices; use out_dim >= {m} or latent_dim <= "
            f"{int((math.isqrt(8 * int(d) + 1) - 1) // 2)}"
        )


@functools.lru_cache(maxsize=32)
def _sym_basis_cached(r: int) -> np.ndarray:
    m = sym_dim(r)
    z = np.zeros((m, r, r))
    for i in range(r):
        z[i, i, i] = 1.0
    iu, ju = np.triu_indices(r, 1)
    z[r + np.arange(iu.size), iu, ju] = 1.0 / math.sqrt(2.0)
    z[r + np.arange(iu.size), ju, iu] = 1.0 / math.sqrt(2.0)
    z.setflags(write=False)
    return z


def sym_basis(r: int) -> np.ndarray:
    """Orthonormal basis of Sym(r): (m, r, r), diagonal units first, then (E_ij + E_ji)/sqrt 2, i < j."""
    return _sym_basis_cached(int(r))


@functools.lru_cache(maxsize=32)
def _structure_tensor_cached(r: int) -> np.ndarray:
    z = sym_basis(r)
    m = z.shape[0]
    zz = np.einsum("iab,jbc->ijac", z, z).reshape(m * m, r * r)
    # Tr(Z_i Z_j Z_k) = sum_{ac} (Z_i Z_j)_{ac} (Z_k)_{ca}; Z_k symmetric, so a plain dot of flattenings.
    tau = (zz @ z.reshape(m, r * r).T).reshape(m, m, m)
    tau.setflags(write=False)
    return tau


def structure_tensor(r: int) -> np.ndarray:
    """tau_ijk = Tr(Z_i Z_j Z_k) (m, m, m), fully symmetric. Cached per r; O(m^3 r^2) once."""
    return _structure_tensor_cached(int(r))


def identity_coords(r: int) -> np.ndarray:
    """Coordinates of I_r in :func:`sym_basis`: ones on the diagonal units, zeros elsewhere. (m,)"""
    out = np.zeros(sym_dim(r))
    out[:r] = 1.0
    return out


def to_coords(Q: np.ndarray) -> np.ndarray:
    """(d, r, r) symmetric (only the symmetric part is used) -> (d, m) coordinates."""
    Q = np.asarray(Q, dtype=np.float64)
    r = Q.shape[-1]
    return np.einsum("aij,kij->ak", 0.5 * (Q + np.swapaxes(Q, -1, -2)), sym_basis(r))


def from_coords(C: np.ndarray, r: int) -> np.ndarray:
    """(d, m) coordinates -> (d, r, r) symmetric matrices."""
    return np.tensordot(C, sym_basis(r), axes=1)


def _model_third(A: np.ndarray, tau: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """tau x_1 A x_2 A x_3 A for A (k, m) -> (k, k, k), and the partial B = tau x_2 A x_3 A (m, k, k).

    Three GEMMs, O(m^3 k + m^2 k^2 + m k^3) flops.
    """
    m = tau.shape[0]
    k = A.shape[0]
    t1 = (tau.reshape(m * m, m) @ A.T).reshape(m, m, k)  # contract mode 3
    b = np.matmul(t1.transpose(0, 2, 1), A.T)  # (m, k, k): contract mode 2; symmetric in the last two
    m3 = (A @ b.reshape(m, k * k)).reshape(k, k, k)
    return m3, b


def population_summary(Q: np.ndarray, k: int | None = None) -> MomentSummary:
    """Exact moments of x_a = g^T Q_a g (MATH 2): mean Tr Q_a, Cov 2 Tr(Q_a Q_b), kappa_3 8 Tr(Q_a Q_b Q_c).

    Q (d, r, r). The third cumulant is contracted with the top-k eigenvectors of the covariance
    (default k = min(d, r(r+1)/2)), without forming the d^3 tensor. Cost O(d^2 m + d^3 + m^3 k + k^3 m).
    """
    Q = np.asarray(Q, dtype=np.float64)
    r = Q.shape[-1]
    C = to_coords(Q)
    d, m = C.shape
    k = min(d, m if k is None else int(k))
    mean = C @ identity_coords(r)
    cov = 2.0 * (C @ C.T)
    evals, basis = principal_basis(cov, k)
    third, _ = _model_third(basis.T @ C, structure_tensor(r))
    return MomentSummary(n=math.inf, mean=mean, cov=cov, basis=basis, cov_eigvals=evals, third=8.0 * third)


# ---------------------------------------------------------------------------------------------
# Spectral (Jordan-algebra) initialization, MATH 2b steps 1-6
# ---------------------------------------------------------------------------------------------


def _jordan(t: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Jordan products in coordinates, column by column: (u o v)_kb = sum_ij t_ijk u_ib v_jb.

    u, v (m, b) -> (m, b); O(b m^3) flops as one GEMM plus a batched contraction.
    """
    m = t.shape[0]
    tu = (u.T @ t.reshape(m, m * m)).reshape(u.shape[1], m, m)  # tu[b, j, k] = sum_i u_ib t_ijk
    return np.einsum("bjk,jb->kb", tu, v)


@dataclass
class SpectralInit:
    """Output of :func:`spectral_init`: Q (d, r, r) and diagnostics."""

    Q: np.ndarray
    idempotent_residual: float  # max_k ||E_k o E_k - E_k|| / ||E_k|| after polishing (0 on exact moments)
    trace_score_gap: float  # r-th over (r+1)-th largest |<e, iota>| among L_X eigenvectors (>> 1 is clean)


def spectral_init(s: MomentSummary, r: int, rng: np.random.Generator, polish: int = 3) -> SpectralInit:
    """The Jordan-algebra spectral algorithm of MATH 2b (steps 1-6) on moments ``s``.

    Uses the top m = r(r+1)/2 eigenpairs of G = Cov/2 (needs ``s.basis`` with >= m columns), the
    trace functional iota = P mu and the structure tensor t = (kappa_3 / 8) x P x P x P, P = M^+;
    a random element X (from ``rng``) gives the idempotents E_k as the eigenvectors of L_X with
    non-zero trace, a random Z gives the Peirce pieces S_kl = v_k v_l^T + v_l v_k^T; then
    (Q_a)_kk = <Q_a, E_k>, (Q_a)_kl = <Q_a, S_kl>/2. Exact (to rounding) on population moments.
    Cost O(m^3 + d m r^2). Returns Q (d, r, r) in the (unknown) gauge of the eigenbasis {v_k}.
    """
    m = sym_dim(r)
    if s.basis.shape[1] < m:
        raise ConfigError(f"spectral_init needs the third cumulant in >= {m} principal directions, got "
                          f"{s.basis.shape[1]}")
    lam = np.clip(s.cov_eigvals[:m] / 2.0, 1e-300, None)
    isq = 1.0 / np.sqrt(lam)
    Mmat = s.basis[:, :m] * np.sqrt(lam)  # (d, m): G ~ M M^T
    iota = isq * (s.basis[:, :m].T @ s.mean)  # P mu
    t = s.third[:m, :m, :m] / 8.0 * isq[:, None, None] * isq[None, :, None] * isq[None, None, :]
    t = (t + t.transpose(1, 0, 2) + t.transpose(2, 1, 0) + t.transpose(0, 2, 1)
         + t.transpose(1, 2, 0) + t.transpose(2, 0, 1)) / 6.0  # exact symmetry on noisy input

    x = rng.standard_normal(m)
    lx = np.tensordot(x, t, axes=1)
    _, vecs = np.linalg.eigh(lx)
    score = np.abs(vecs.T @ iota)
    order = np.argsort(score)[::-1]
    gap = float(score[order[r - 1]] / max(score[order[r]], 1e-300)) if m > r else math.inf
    E = vecs[:, order[:r]]
    E = E / (E.T @ iota)  # <E_k, I> = Tr(v_k v_k^T) = 1
    for _ in range(polish):  # E <- 3E^2 - 2E^3 (Newton-like iteration towards an idempotent)
        e2 = _jordan(t, E, E)
        E = 3.0 * e2 - 2.0 * _jordan(t, E, e2)
    resid = np.linalg.norm(_jordan(t, E, E) - E, axis=0) / np.maximum(np.linalg.norm(E, axis=0), 1e-300)

    # Peirce pieces relative to E_1 fix each v_l's sign against v_1 (the gauge's reflections).
    z = rng.standard_normal(m)
    e1z = _jordan(t, E[:, :1], z[:, None])  # (m, 1)
    S1 = 4.0 * _jordan(t, E, np.repeat(e1z, r, axis=1))  # column l: z_1l S_1l
    S1 = S1 * (math.sqrt(2.0) / np.maximum(np.linalg.norm(S1, axis=0), 1e-300))
    Qh = np.empty((s.dim, r, r))
    diag = Mmat @ E  # (d, r): <Q_a, E_k>
    for kk in range(r):
        Qh[:, kk, kk] = diag[:, kk]
    for ll in range(1, r):
        Qh[:, 0, ll] = Qh[:, ll, 0] = 0.5 * (Mmat @ S1[:, ll])
    if r > 2:
        kk, ll = np.triu_indices(r, 1)
        keep = kk >= 1
        kk, ll = kk[keep], ll[keep]
        Skl = 2.0 * _jordan(t, S1[:, kk], S1[:, ll])  # S_kl = 2 S_1k o S_1l
        off = 0.5 * (Mmat @ Skl)
        Qh[:, kk, ll] = off
        Qh[:, ll, kk] = off
    return SpectralInit(Q=Qh, idempotent_residual=float(resid.max()), trace_score_gap=gap)


# ---------------------------------------------------------------------------------------------
# Moment-matching refinement, MATH 2b step 7
# ---------------------------------------------------------------------------------------------


class MomentLoss:
    """L(C) = ||C iota0 - mu||^2/||mu||^2 + ||C C^T - G||^2/||G||^2 + ||m3(U^T C) - t||^2/||t||^2.

    C (d, m) are the coordinates of {Q_a}; G = Cov/2 (d, d); t = kappa_3(U)/8 (k, k, k) is the third
    cumulant in the summary's principal basis U (d, k), and m3(A)_pqs = Tr(Qt_p Qt_q Qt_s) for the
    matrices Qt_p = sum_a U_ap Q_a. With k = d this is the loss of MATH 2b step 7 (Frobenius norms are
    rotation invariant); with k = m it drops the third-moment residual outside the top-m principal
    subspace. For this family the centred data lie exactly in the span of the m columns of C, so
    the two coincide on data as well (checked: identical fits to 1e-12 at r = 5, d = 20).

    Value and closed-form gradient in torch float64 (its thread count is the run's ``threads``; the
    numpy BLAS oversubscribes a loaded machine). Using the symmetry of m3 in (p, q), only the
    k(k+1)/2 products Qt_p Qt_q, p <= q, are formed: O(k^2 r^3 + k^3 r^2 + d^2 m) flops per call.
    """

    def __init__(self, s: MomentSummary, r: int):
        self.r = int(r)
        self.d, self.m = s.dim, sym_dim(self.r)
        self.k = s.basis.shape[1]
        f64 = torch.float64
        self.z = torch.from_numpy(sym_basis(self.r).reshape(self.m, -1).copy())  # (m, r^2)
        self.iota0 = torch.from_numpy(identity_coords(self.r))
        self.U = torch.from_numpy(np.ascontiguousarray(s.basis))
        self.mu = torch.from_numpy(np.ascontiguousarray(s.mean))
        self.G = torch.from_numpy(s.cov / 2.0)
        iu, ju = np.triu_indices(self.k)
        self.iu, self.ju = torch.from_numpy(iu), torch.from_numpy(ju)
        # Off-diagonal pairs stand for both (p, q) and (q, p) in the full sums.
        self.c = torch.where(self.iu == self.ju, 1.0, 2.0).to(f64)
        t = s.third / 8.0
        self.t_pairs = torch.from_numpy(np.ascontiguousarray(t[iu, ju, :]))  # (P, k)
        # Scale guards: a zero target (e.g. traceless Q) must not divide by zero.
        g2 = max(float(np.sum(s.cov * s.cov)) / 4.0, 1e-300)
        self.w1 = 1.0 / max(float(s.mean @ s.mean), 1e-12 * math.sqrt(g2))
        self.w2 = 1.0 / g2
        self.w3 = 1.0 / max(float(np.sum(t * t)), 1e-12 * g2 ** 0.75)

    def _forward(self, C: torch.Tensor, grad: bool) -> tuple[float, torch.Tensor | None, tuple[float, ...]]:
        r1 = C @ self.iota0 - self.mu
        r2 = C @ C.T - self.G
        A = self.U.T @ C  # (k, m)
        qt = (A @ self.z).view(self.k, self.r, self.r)
        prod = qt[self.iu] @ qt[self.ju]
        sp = (0.5 * (prod + prod.transpose(1, 2))).reshape(-1, self.r * self.r)  # sym(Qt_p Qt_q)
        r3 = sp @ qt.view(self.k, -1).T - self.t_pairs  # (P, k): m3 - t over pairs p <= q
        parts = (self.w1 * float(r1 @ r1), self.w2 * float((r2 * r2).sum()),
                 self.w3 * float((self.c[:, None] * r3 * r3).sum()))
        if not grad:
            return sum(parts), None, parts
        g = (2.0 * self.w1) * torch.outer(r1, self.iota0) + (4.0 * self.w2) * (r2 @ C)
        # d/dQt_s sum c_pq R_pqs^2 = 3 * 2 sum_pq c_pq R_pqs sym(Qt_p Qt_q) (m3 is symmetric cubic).
        g_qt = (6.0 * self.w3) * ((self.c[:, None] * r3).T @ sp)  # (k, r^2), symmetric matrices
        g += self.U @ (g_qt @ self.z.T)
        return sum(parts), g, parts

    def parts(self, C: np.ndarray) -> tuple[float, float, float]:
        """The three normalized terms (mean, covariance, third cumulant) at coordinates C (d, m)."""
        return self._forward(torch.from_numpy(np.ascontiguousarray(C, dtype=np.float64)), grad=False)[2]

    def __call__(self, c_flat: np.ndarray) -> tuple[float, np.ndarray]:
        C = torch.from_numpy(np.asarray(c_flat, dtype=np.float64)).view(self.d, self.m)
        val, g, _ = self._forward(C, grad=True)
        return val, g.reshape(-1).numpy()


@dataclass
class RefineResult:
    Q: np.ndarray  # (d, r, r)
    loss: float
    iterations: int
    converged: bool
    grad_norm: float  # max |gradient entry| at the end
    seconds: float
    message: str


def refine(loss: MomentLoss, Q0: np.ndarray, max_iter: int = 1000, gtol: float = 1e-10,
           ftol: float = 1e-15) -> RefineResult:
    """Minimize :class:`MomentLoss` from Q0 (d, r, r) by L-BFGS (:func:`pfbench.recovery.optim.lbfgs`).

    ``converged`` means the largest gradient entry fell below ``gtol`` or the loss stopped
    decreasing at rounding level (relative ``ftol``) before ``max_iter`` iterations. About 1.1 loss
    evaluations per iteration, each of the cost stated in :class:`MomentLoss`.
    """
    t0 = time.perf_counter()

    def fun(x: torch.Tensor) -> tuple[float, torch.Tensor]:
        val, g, _ = loss._forward(x.view(loss.d, loss.m), grad=True)
        return val, g.reshape(-1)

    res = lbfgs(fun, torch.from_numpy(to_coords(Q0)).reshape(-1), max_iter=max_iter, gtol=gtol, ftol=ftol)
    C = res.x.view(loss.d, loss.m).numpy().copy()
    return RefineResult(Q=from_coords(C, loss.r), loss=res.f, iterations=res.iterations,
                        converged=res.converged, grad_norm=res.grad_max, seconds=time.perf_counter() - t0,
                        message=f"{res.reason}: max |grad| {res.grad_max:.3g}, {res.iterations} iterations")

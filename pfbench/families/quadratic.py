"""Quadratic pushforward x_a = g^T Q_a g (MATH section 1-2) and its gauge-aligned error (section 8)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse.linalg
import torch
from torch import nn

from pfbench import ConfigError
from pfbench.families.alignment import as_f64, polar, sym_np
from pfbench.families.base import FamilyArgs, Pushforward, random_rotation
from pfbench.seeding import numpy_generator


def sym(a: torch.Tensor) -> torch.Tensor:
    """Symmetric part (A + A^T)/2 over the last two axes."""
    return 0.5 * (a + a.transpose(-1, -2))


class QuadraticPushforward(Pushforward):
    """x_a = g^T Q_a g for a = 1..d, g ~ N(0, I_r); Q has shape (d, r, r).

    Gauge: Q_a -> U Q_a U^T, U in O(r). Moments: E x_a = Tr Q_a, Cov(x_a, x_b) = 2 Tr(Q_a Q_b),
    third cumulant 8 Tr(Q_a Q_b Q_c).

    Random instance: Q_a = sym(N(0,1)^{r x r}) / sqrt(r) with sym(A) = (A + A^T)/2, i.i.d. over a;
    then Var(x_a) = O(1) whatever r.
    """

    family = "quadratic"

    def __init__(self, latent_dim: int, out_dim: int, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.latent_dim, self.out_dim = int(latent_dim), int(out_dim)
        r, d = self.latent_dim, self.out_dim
        # Parameter stored unconstrained; only its symmetric part enters forward().
        self.Q = nn.Parameter(torch.zeros(d, r, r, dtype=dtype))
        self.reset_random_(torch.Generator().manual_seed(0))

    @property
    def Q_sym(self) -> torch.Tensor:
        return sym(self.Q)

    @torch.no_grad()
    def reset_random_(self, generator: torch.Generator) -> QuadraticPushforward:
        r = self.latent_dim
        a = torch.randn(self.Q.shape, generator=generator, dtype=self.Q.dtype)
        self.Q.copy_(sym(a) / r**0.5)
        return self

    @torch.no_grad()
    def random_symmetry_(self, generator: torch.Generator) -> torch.Tensor:
        """Q_a -> U Q_a U^T: z^T U Q_a U^T z = F(U^T z)."""
        u = random_rotation(self.latent_dim, generator, self.Q.dtype)
        self.Q.copy_(u @ self.Q @ u.T)
        return u.T

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        q = self.Q_sym  # (d, r, r)
        d, r, _ = q.shape
        # (n, r) @ (r, d*r) -> (n, d, r); then contract with z again: one GEMM, no (n, d, r, r).
        zq = (z @ q.permute(1, 0, 2).reshape(r, d * r)).reshape(-1, d, r)
        return (zq * z.unsqueeze(1)).sum(-1)

    def params(self) -> dict[str, torch.Tensor]:
        return {"Q": self.Q_sym.detach().clone()}

    @classmethod
    def aligned_error(cls, true: Mapping[str, Any], est: Mapping[str, Any], *, args: FamilyArgs,
                      restarts: int, seed: int) -> dict[str, Any]:
        """:func:`quadratic_gauge_align` over O(r), with how many refined starts reached the best value."""
        cls._require(true, est, ("Q",))
        err, _, info = quadratic_gauge_align(true["Q"], est["Q"], restarts=restarts, seed=seed, return_info=True)
        if not info["certified"] and restarts > 0:  # a local optimum: search harder, once
            err2, _, info2 = quadratic_gauge_align(true["Q"], est["Q"], restarts=4 * restarts, seed=seed,
                                                   return_info=True)
            if err2 <= err:
                err, info = err2, info2
        k, n, low = info["starts_at_best"], info["starts"], info["lower_bound"]
        starts = (f"reached by {k} of {n} refined starts (U = I and the best {n - 1} of {info['screened']} "
                  f"screened eigenbasis starts)")
        if info["certified"]:
            search = f"global minimum over O(r), certified by a dual bound (lower bound {low:.6g}); {starts}"
        else:
            search = (f"upper bound on the minimum over O(r): the dual bound at the best rotation is {low:.6g}, "
                      f"not tight (a local optimum, or a relaxation gap); {starts}")
        return {"param_error": err, "param_error_lower_bound": min(low, err),
                "param_error_certified": info["certified"], "param_error_starts": n,
                "param_error_starts_at_best": k, "param_error_search": search}


# ---------------------------------------------------------------------------------------------
# gauge alignment: min over U in O(r) of sum_a ||U Q_a U^T - Q_hat_a||_F^2
# ---------------------------------------------------------------------------------------------


def _signed_eigbasis(q: np.ndarray, u: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Eigenbasis of sum_a u_a Q_a (ascending eigenvalues) with gauge-covariant relative signs.

    The sign of each eigenvector is not determined by the eigenproblem, and a wrong relative sign
    is a reflection diag(+-1) that changes the Q_a. We fix signs by a rule that commutes with the
    gauge: in the basis B, the second generic combination M = B^T (sum_a w_a Q_a) B has entries
    whose signs flip with s_j s_k; a maximum spanning tree on |M| (Prim, from eigenvector 0) is made
    of positive edges. For Q_hat = V Q V^T the same tree and signs come out, so U0 = B_hat B^T = V.
    """
    _, b = np.linalg.eigh(np.tensordot(u, q, axes=1))
    m = b.T @ np.tensordot(w, q, axes=1) @ b
    r = b.shape[1]
    absm = np.abs(m)
    np.fill_diagonal(absm, -1.0)
    in_tree = np.zeros(r, dtype=bool)
    in_tree[0] = True
    sign = np.ones(r)
    best = absm[0].copy()  # strongest link of each node to the tree so far
    parent = np.zeros(r, dtype=int)
    for _ in range(r - 1):
        cand = np.where(in_tree, -np.inf, best)
        k = int(np.argmax(cand))
        j = parent[k]
        sign[k] = sign[j] * (1.0 if m[j, k] >= 0 else -1.0)
        in_tree[k] = True
        closer = (~in_tree) & (absm[k] > best)
        best[closer] = absm[k][closer]
        parent[closer] = k
    return b * sign


def _shift_for_monotone(q: np.ndarray, qh: np.ndarray) -> float:
    """c >= 0 making A + c I PSD for f(U) = sum_a <U Q_a U^T, Q_hat_a> = vec(U)^T A vec(U).

    A = sum_a Q_hat_a (x) Q_a (r^2 x r^2). With A + cI PSD, f + c r is convex in U, so the update
    U <- polar(grad) never decreases f on O(r) (it maximizes the linearization, which minorizes).
    """
    d, r, _ = q.shape
    if r * r <= 256:
        a = np.einsum("ail,ajk->ijlk", qh, q).reshape(r * r, r * r)
        lam_min = float(np.linalg.eigvalsh(sym_np(a))[0])
    else:
        def mv(x: np.ndarray) -> np.ndarray:
            u = x.reshape(r, r)
            return np.einsum("ail,lk,ajk->ij", qh, u, q).reshape(-1)

        op = scipy.sparse.linalg.LinearOperator((r * r, r * r), matvec=mv, dtype=np.float64)
        v0 = np.ones(r * r) / r  # deterministic start: no hidden global randomness
        lam_min = float(scipy.sparse.linalg.eigsh(op, k=1, which="SA", v0=v0, tol=1e-6)[0][0])
        lam_min -= 1e-6 * abs(lam_min) + 1e-12  # eigsh tolerance margin
    return max(0.0, -lam_min)


def _procrustes_fixed_point(q: np.ndarray, qh: np.ndarray, u0: np.ndarray, shift: float,
                            max_iter: int, tol: float) -> tuple[np.ndarray, float, int]:
    """Ascent on f(U) = sum_a <U Q_a U^T, Q_hat_a> by U <- polar(sum_a Q_hat_a U Q_a + c U)."""
    scale = float(np.sum(q * q) + np.sum(qh * qh)) + 1e-300
    u = u0
    f_old = -np.inf
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 - the count is returned
        uq = np.einsum("ij,ajk->aik", u, q)  # U Q_a
        f = float(np.einsum("aik,lk,ali->", uq, u, qh))  # sum_a Tr(U Q_a U^T Q_hat_a)
        if f - f_old <= tol * scale:
            break
        f_old = f
        g = np.einsum("ail,alk->ik", qh, uq) + shift * u  # sum_a Q_hat_a U Q_a + c U
        u = polar(g)
    return u, f_old if np.isfinite(f_old) else f, it


def quadratic_gauge_align(Q_true: Any, Q_hat: Any, *, restarts: int = 5, seed: int = 0,
                          max_iter: int = 2000, tol: float = 1e-15, screen: int = 10,
                          return_info: bool = False) -> tuple:
    """Gauge-aligned relative error of quadratic maps and the aligning rotation.

    .. math::
        e = \\min_{U \\in O(r)} \\Big(\\sum_a \\|U Q_a U^T - \\hat Q_a\\|_F^2\\Big)^{1/2}
            \\Big/ \\Big(\\sum_a \\|Q_a\\|_F^2\\Big)^{1/2}

    The minimum is non-convex over U. Candidates: U = I, and for each restart the eigenbasis of a
    random combination sum_a u_a Q_a matched with the same combination of Q_hat (signs fixed by
    :func:`_signed_eigbasis`). Each is improved by the monotone fixed point U <- polar(sum_a
    Q_hat_a U Q_a + c U) (a Procrustes solve per step); the best is returned. Any U gives an upper
    bound on the minimum; for Q_hat = V Q V^T the eigenbasis candidate is V itself, so e = 0 up to
    rounding.

    Parameters
    ----------
    Q_true, Q_hat : array (d, r, r)
        Symmetric matrices Q_a (only the symmetric part is used: it alone enters g^T Q_a g).
    restarts : int
        Number of eigenbasis initializations (random combinations from ``seed``).
    seed : int
        Seed of the combination weights (stream ``"gauge_quadratic"``).

    Returns
    -------
    error : float
        The relative error e >= 0.
    U : array (r, r)
        The rotation achieving it (U Q_a U^T ~ Q_hat_a).

    Cost: O(restarts * iterations * d r^3) plus one r^2 x r^2 eigenvalue problem (O(d r^4 + r^6),
    Lanczos for r > 16).
    """
    q = sym_np(as_f64(Q_true, "Q_true"))
    qh = sym_np(as_f64(Q_hat, "Q_hat"))
    if q.ndim != 3 or q.shape[1] != q.shape[2] or q.shape != qh.shape:
        raise ConfigError(
            f"quadratic gauge error needs two (d, r, r) arrays of equal shape, got {q.shape} and {qh.shape}"
        )
    if restarts < 0:
        raise ConfigError(f"restarts={restarts} must be >= 0")
    d, r, _ = q.shape
    norm = math.sqrt(float(np.sum(q * q)))
    if norm == 0.0:
        raise ConfigError("quadratic gauge error: the true Q is zero, so a relative error is undefined")
    rng = numpy_generator(seed, "gauge_quadratic")
    shift = _shift_for_monotone(q, qh)
    # Screening: ``screen`` x ``restarts`` eigenbasis starts cost one r x r eigenproblem each; the
    # ``restarts`` with the best starting objective are refined (refinement is what costs). A noisy
    # Q_hat makes any single eigenbasis start unreliable when eigenvalue gaps are small, so many
    # cheap starts find the right basin far more often than a few refined ones.
    pool = []
    for _ in range(restarts * max(1, int(screen))):
        uw = rng.standard_normal((2, d))
        pool.append(_signed_eigbasis(qh, *uw) @ _signed_eigbasis(q, *uw).T)

    def start_value(u: np.ndarray) -> float:
        return float(np.einsum("ij,ajk,lk,ali->", u, q, u, qh))

    pool.sort(key=start_value, reverse=True)
    candidates = [np.eye(r), *pool[:restarts]]
    best_err, best_u = np.inf, np.eye(r)
    errs = []
    for u0 in candidates:
        u, _, _ = _procrustes_fixed_point(q, qh, u0, shift, max_iter, tol)
        # The error from the explicit difference (not from norms minus 2 f), so that an exact
        # gauge copy gives ~1e-16 rather than sqrt(rounding) ~ 1e-8.
        diff = np.einsum("ij,ajk,lk->ail", u, q, u) - qh
        err = math.sqrt(float(np.sum(diff * diff))) / norm
        errs.append(err)
        if err < best_err:
            best_err, best_u = err, u
    if not return_info:
        return best_err, best_u
    # how many refined starts reached the best value: k of k is evidence (not proof) of the minimum
    agree = sum(e <= best_err * (1 + 1e-6) + 1e-12 for e in errs)
    lower = quadratic_gauge_lower_bound(q, qh, best_u)
    info = {"starts": len(errs), "starts_at_best": int(agree), "screened": len(pool), "lower_bound": lower,
            "certified": bool(best_err - lower <= CERTIFY_RTOL * best_err + CERTIFY_ATOL)}
    return best_err, best_u, info


#: the aligned error counts as the certified global minimum when the dual bound is this close to it
#: (relative; the absolute part covers exact gauge copies, where both are at rounding level ~1e-8)
CERTIFY_RTOL, CERTIFY_ATOL = 1e-6, 1e-7


def quadratic_gauge_lower_bound(Q_true: Any, Q_hat: Any, U: np.ndarray) -> float:
    r"""A rigorous lower bound on the aligned error min_{V in O(r)} e(V), from a Lagrangian dual point built at U.

    With u = vec(V) (row-major), f(V) = sum_a <V Q_a V^T, Q_hat_a> = u^T A u, A = sum_a Q_hat_a (x) Q_a.
    For symmetric Y, Z and every orthogonal V, u^T (I (x) Y + Z (x) I) u = tr Y + tr Z, so with
    M = I (x) Y + Z (x) I - A and ||u||^2 = r,

    .. math:: \max_{V \in O(r)} f(V) \le \operatorname{tr} Y + \operatorname{tr} Z + r \max(0, -\lambda_{min}(M))

    (weak duality of the relaxation X = u u^T >= 0 with both orthogonality constraints, which is tight
    on every instance we measured). The dual point: S = sym(U^T sum_a Q_hat_a U Q_a), Y = S / 2,
    Z = U (S / 2) U^T, so tr Y + tr Z = f(U); at a global maximizer M is PSD up to rounding and the bound
    meets the error found at U, certifying it; at a local one lambda_min(M) < 0 and the bound is lower.
    Then e^2 >= (||Q||^2 + ||Q_hat||^2 - 2 max f) / ||Q||^2. Cost: one eigenvalue problem of size r^2
    (O(r^6); r = 10: about 2 ms).
    """
    q = sym_np(as_f64(Q_true, "Q_true"))
    qh = sym_np(as_f64(Q_hat, "Q_hat"))
    u = np.asarray(U, dtype=np.float64)
    r = q.shape[1]
    a = np.einsum("aik,ajl->ijkl", qh, q).reshape(r * r, r * r)
    s = u.T @ np.einsum("aik,kl,alj->ij", qh, u, q)
    s = sym_np(s)
    eye = np.eye(r)
    m = np.kron(eye, s / 2) + np.kron(u @ (s / 2) @ u.T, eye) - sym_np(a)
    lam_min = float(np.linalg.eigvalsh(m)[0])
    f_max = float(np.trace(s)) + r * max(0.0, -lam_min)
    nq2 = float(np.sum(q * q))
    return math.sqrt(max(0.0, nq2 + float(np.sum(qh * qh)) - 2.0 * f_max) / nq2)


def quadratic_gauge_error(Q_true: Any, Q_hat: Any, restarts: int = 5, seed: int = 0) -> float:
    """min_{U in O(r)} (sum_a ||U Q_a U^T - Q_hat_a||_F^2)^(1/2) / (sum_a ||Q_a||_F^2)^(1/2).

    See :func:`quadratic_gauge_align` (same procedure; this returns only the error). Inputs are
    (d, r, r) arrays or tensors. Cost O(restarts * iterations * d r^3).
    """
    return quadratic_gauge_align(Q_true, Q_hat, restarts=restarts, seed=seed)[0]

"""Low-rank degree-w polynomial pushforward x_a = sum_l lam_{a,l} <v_{a,l}, g>^w (MATH section 3)
and its gauge-aligned error on the coefficient tensors (section 8)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
import scipy.optimize
import torch
from torch import nn

from pfbench import ConfigError
from pfbench.families.alignment import as_f64, sym_np
from pfbench.families.base import FamilyArgs, Pushforward, random_rotation
from pfbench.families.quadratic import quadratic_gauge_align


@dataclass
class PolynomialArgs(FamilyArgs):
    degree: int = 3  # w
    rank: int = 2  # L terms per output

    def check(self) -> None:
        for key in ("degree", "rank"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"data.{key}={getattr(self, key)} must be >= 1")


class LowRankPolynomialPushforward(Pushforward):
    """x_a = sum_{l < L} lam[a, l] * <v[a, l], g>^w, g ~ N(0, I_r); lam (d, L), v (d, L, r).

    Gauge: v -> U v for U in O(r) (all a, l at once), plus relabelling the L terms of one output.

    Random instance: v[a, l] ~ N(0, I_r / r) (so <v, g> is about N(0, 1)), lam[a, l] ~ N(0, 1/L).
    """

    family = "polynomial"
    Args = PolynomialArgs
    aligned_error_needs = ("degree",)

    def __init__(self, latent_dim: int, out_dim: int, degree: int = PolynomialArgs.degree,
                 rank: int = PolynomialArgs.rank, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.latent_dim, self.out_dim = int(latent_dim), int(out_dim)
        self.degree, self.rank = int(degree), int(rank)
        self.lam = nn.Parameter(torch.zeros(self.out_dim, self.rank, dtype=dtype))
        self.v = nn.Parameter(torch.zeros(self.out_dim, self.rank, self.latent_dim, dtype=dtype))
        self.reset_random_(torch.Generator().manual_seed(0))

    @torch.no_grad()
    def reset_random_(self, generator: torch.Generator) -> LowRankPolynomialPushforward:
        self.v.copy_(torch.randn(self.v.shape, generator=generator, dtype=self.v.dtype) / self.latent_dim**0.5)
        self.lam.copy_(torch.randn(self.lam.shape, generator=generator, dtype=self.lam.dtype) / self.rank**0.5)
        return self

    @torch.no_grad()
    def random_symmetry_(self, generator: torch.Generator) -> torch.Tensor:
        """v -> c U v, lam -> c^-w lam (c = 1.5), terms of every output permuted: F(U^T z)."""
        u = random_rotation(self.latent_dim, generator, self.v.dtype)
        perm = torch.stack([torch.randperm(self.rank, generator=generator) for _ in range(self.out_dim)])
        idx = perm.unsqueeze(-1).expand_as(self.v)
        self.v.copy_(1.5 * torch.gather(self.v, 1, idx) @ u.T)
        self.lam.copy_(torch.gather(self.lam, 1, perm) / 1.5**self.degree)
        return u.T

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        d, L, r = self.v.shape
        proj = (z @ self.v.reshape(d * L, r).T).reshape(-1, d, L)  # <v_{a,l}, g>
        return (proj.pow(self.degree) * self.lam).sum(-1)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", degree={self.degree}, rank={self.rank}"

    def _args_mismatch(self, other: Pushforward) -> str | None:
        if other.degree != self.degree:  # another rank is fine: the error compares coefficient tensors
            return f"degrees differ ({other.degree} vs {self.degree})"
        return None

    @classmethod
    def aligned_error(cls, true: Mapping[str, Any], est: Mapping[str, Any], *, args: FamilyArgs,
                      restarts: int, seed: int) -> dict[str, Any]:
        """:func:`polynomial_gauge_error` at the family's degree; adds ``param_error_components``."""
        cls._require(true, est, ("lam", "v"))
        out = polynomial_gauge_error(true["lam"], true["v"], est["lam"], est["v"], args.degree,
                                     restarts=restarts, seed=seed)
        out["param_error_search"] = ("upper bound on the minimum over O(r): Riemannian ascent from the covariant "
                                     "matrices' quadratic alignment and U = I; no certificate for this family")
        return out


# ---------------------------------------------------------------------------------------------
# gauge alignment over O(r) acting on every mode of the coefficient tensors S_a
# ---------------------------------------------------------------------------------------------


def _sym_tensors(lam: np.ndarray, v: np.ndarray, w: int, keep_terms: bool = False) -> np.ndarray:
    """Dense S_a = sum_l lam_{a,l} v_{a,l}^{(x)w}: shape (d, r, ..., r), or (d, L, r, ..., r) per term."""
    t = lam[..., None] * v  # (d, L, r)
    for _ in range(w - 1):
        t = t[..., None] * v.reshape(v.shape[:2] + (1,) * (t.ndim - 2) + (v.shape[2],))
    return t if keep_terms else t.sum(axis=1)


def _poly_inner(lam1: np.ndarray, v1: np.ndarray, lam2: np.ndarray, v2: np.ndarray, w: int) -> np.ndarray:
    """<S1_a, S2_a> per output a: sum_{l,m} lam1 lam2 <v1_l, v2_m>^w (Frobenius inner product)."""
    g = np.einsum("alr,amr->alm", v1, v2)
    return np.einsum("al,am,alm->a", lam1, lam2, g**w)


def _covariant_matrices(lam: np.ndarray, v: np.ndarray, w: int) -> np.ndarray:
    """M_a = S_a contracted with itself on w-1 modes = sum_{l,m} lam_l lam_m <v_l,v_m>^{w-1} v_l v_m^T.

    Under the gauge S -> U.S (U acting on every mode) these are r x r symmetric matrices with
    M_a -> U M_a U^T, so the quadratic alignment of {M_a} gives a starting rotation.
    """
    g = np.einsum("alr,amr->alm", v, v) ** (w - 1)
    return sym_np(np.einsum("al,am,alm,alr,ams->ars", lam, lam, g, v, v))


def _refine_rotation_poly(lam: np.ndarray, v: np.ndarray, lamh: np.ndarray, vh: np.ndarray, w: int,
                          u0: np.ndarray, max_iter: int = 500, gtol: float = 1e-10
                          ) -> tuple[np.ndarray, float]:
    """Maximize F(U) = sum_a <U.S_a, S_hat_a> = sum_{a,l,m} lam lam_hat <v_hat_m, U v_l>^w over O(r).

    F is a degree-w polynomial in U, so no monotone closed-form step is available. Riemannian
    gradient ascent on O(r): direction Omega = skew(U^T grad F) (the Lie-algebra gradient),
    step U <- U expm(t Omega) with Barzilai-Borwein t and Armijo backtracking (so F never
    decreases), until ||Omega|| <= gtol (F normalized by ||S||^2 + ||S_hat||^2) or F stops
    increasing at rounding level. Returns (U, F).
    Cost O(d L L' r^2 + r^3) per iteration.
    """
    r = v.shape[-1]
    scale = float(np.sum(_poly_inner(lam, v, lam, v, w)) + np.sum(_poly_inner(lamh, vh, lamh, vh, w)))
    scale += 1e-300
    coef = lam[:, :, None] * lamh[:, None, :] / scale  # (d, L, L')

    def value_grad(u: np.ndarray) -> tuple[float, np.ndarray]:
        g = np.einsum("amr,rs,als->alm", vh, u, v)  # <v_hat_m, U v_l>
        f = float(np.sum(coef * g**w))
        grad = np.einsum("alm,amr,als->rs", coef * w * g ** (w - 1), vh, v)
        return f, grad

    u = u0.copy()
    f, grad = value_grad(u)
    if r == 1:
        return u, f
    step = 1.0
    prev = None
    for _ in range(max_iter):
        m = u.T @ grad
        om = 0.5 * (m - m.T)
        gn2 = float(np.sum(om * om))
        if math.sqrt(gn2) <= gtol:
            break
        if prev is not None:  # Barzilai-Borwein step from the last move and gradient change
            s_prev, om_prev = prev
            y = om - om_prev
            sy = abs(float(np.sum(s_prev * y)))
            if sy > 0:
                step = float(np.sum(s_prev * s_prev)) / sy
        t = step
        for _ in range(40):  # Armijo: F(U expm(t om)) >= F(U) + 1e-4 t ||om||^2
            u_new = u @ scipy.linalg.expm(t * om)
            f_new, grad_new = value_grad(u_new)
            if f_new >= f + 1e-4 * t * gn2:
                break
            t *= 0.5
        else:
            break  # no ascent possible: converged to rounding level
        if f_new <= f:
            break  # accepted only because the gain is below rounding: converged
        prev = (t * om, om)
        u, f, grad = u_new, f_new, grad_new
    return u, f


def polynomial_gauge_error(lam_true: Any, v_true: Any, lam_hat: Any, v_hat: Any, degree: int, *,
                           restarts: int = 5, seed: int = 0) -> dict[str, float]:
    """Gauge-aligned error of low-rank degree-w polynomial maps, on their coefficient tensors.

    With S_a = sum_l lam_{a,l} v_{a,l}^{(x)w} (the symmetric tensor of p_a(g) = <S_a, g^{(x)w}>),

    .. math::
        e = \\min_{U \\in O(r)} \\Big(\\sum_a \\|U \\cdot S_a - \\hat S_a\\|_F^2\\Big)^{1/2}
            \\Big/ \\Big(\\sum_a \\|S_a\\|_F^2\\Big)^{1/2},

    where U acts on every mode (v -> U v). Working on S_a rather than (lam, v) makes the error
    invariant to every symmetry of the parametrization: relabelling the L terms of an output,
    (lam, v) -> (c^-w lam, c v), and sign flips; the estimate may even have a different L.
    Start: quadratic alignment (:func:`quadratic_gauge_align`) of the covariant matrices
    M_a = S_a contracted with itself on w-1 modes (M_a -> U M_a U^T), and U = I; each refined by
    Riemannian gradient ascent over O(r); the best is kept.

    Also returned, ``param_error_components``: the rank-1 terms T_{a,l} = lam v^{(x)w} matched per
    output by assignment under the same U, sqrt(sum ||T - T_hat||^2) / sqrt(sum ||T||^2) (0 exactly
    when every term is recovered up to the gauge; for w = 2 the terms are not identifiable).

    Parameters
    ----------
    lam_true, lam_hat : array (d, L) and (d, L')
    v_true, v_hat : array (d, L, r) and (d, L', r)
    degree : int
        w >= 1.

    Returns
    -------
    dict with ``param_error`` and ``param_error_components``.

    Cost: O(d r^w (L + L')) for dense tensors when d L L' r^w <= 4e6 (else Gram identities,
    O(d L L' r)), plus the quadratic alignment of d r x r matrices and gradient ascent with
    O(d L L' r^2) per step.
    """
    w = int(degree)
    if w < 1:
        raise ConfigError(f"polynomial gauge error: degree={degree} must be >= 1")
    lam, v = as_f64(lam_true, "lam"), as_f64(v_true, "v")
    lamh, vh = as_f64(lam_hat, "lam_hat"), as_f64(v_hat, "v_hat")
    if lam.ndim != 2 or v.ndim != 3 or v.shape[:2] != lam.shape:
        raise ConfigError(f"polynomial parameters need lam (d, L), v (d, L, r); got {lam.shape}, {v.shape}")
    if lamh.ndim != 2 or vh.ndim != 3 or vh.shape[:2] != lamh.shape:
        raise ConfigError(f"estimated lam/v need shapes (d, L) and (d, L, r); got {lamh.shape}, {vh.shape}")
    if vh.shape[0] != v.shape[0] or vh.shape[2] != v.shape[2]:
        raise ConfigError(
            f"polynomial gauge error: truth has (d, r) = ({v.shape[0]}, {v.shape[2]}), estimate "
            f"({vh.shape[0]}, {vh.shape[2]}); out_dim and latent_dim must match"
        )
    d, L, r = v.shape
    Lh = vh.shape[1]
    norm2 = float(np.sum(_poly_inner(lam, v, lam, v, w)))
    if norm2 <= 0.0:
        raise ConfigError("polynomial gauge error: the true tensors are zero; a relative error is undefined")

    m, mh = _covariant_matrices(lam, v, w), _covariant_matrices(lamh, vh, w)
    cands = [np.eye(r)]
    if np.sum(m * m) > 0 and np.sum(mh * mh) > 0:
        u_m = quadratic_gauge_align(m, mh, restarts=restarts, seed=seed)[1]
        # M_a is even in U, S_a is not for odd w: U and -U are both candidates.
        cands += [u_m, -u_m]
    best = None
    for u0 in cands:
        u, f = _refine_rotation_poly(lam, v, lamh, vh, w, u0)
        if best is None or f > best[0]:
            best = (f, u)
    u = best[1]
    vu = np.einsum("rs,als->alr", u, v)

    dense = d * max(L, 1) * max(Lh, 1) * r**w <= 4_000_000
    if dense:
        terms, terms_h = _sym_tensors(lam, vu, w, keep_terms=True), _sym_tensors(lamh, vh, w, keep_terms=True)
        diff = terms.sum(axis=1) - terms_h.sum(axis=1)
        err2 = float(np.sum(diff * diff))
        tf = terms.reshape(d, L, -1)
        thf = terms_h.reshape(d, Lh, -1)
        cost = np.sum((tf[:, :, None, :] - thf[:, None, :, :]) ** 2, axis=-1)  # (d, L, L')
        own = np.sum(tf * tf, axis=-1)
        own_h = np.sum(thf * thf, axis=-1)
    else:
        # Gram identities: ||S - S_hat||^2 = ||S||^2 + ||S_hat||^2 - 2 <S, S_hat> (clamped at 0).
        err2 = max(0.0, float(np.sum(_poly_inner(lam, vu, lam, vu, w) + _poly_inner(lamh, vh, lamh, vh, w)
                                     - 2 * _poly_inner(lam, vu, lamh, vh, w))))
        own = lam**2 * np.sum(vu * vu, axis=-1) ** w
        own_h = lamh**2 * np.sum(vh * vh, axis=-1) ** w
        cross = lam[:, :, None] * lamh[:, None, :] * np.einsum("alr,amr->alm", vu, vh) ** w
        cost = np.maximum(own[:, :, None] + own_h[:, None, :] - 2 * cross, 0.0)
    # Terms left unmatched (L != L') are compared with zero: pad the cost matrix with their norms.
    comp2 = 0.0
    for a in range(d):
        c = np.zeros((max(L, Lh), max(L, Lh)))
        c[:L, :Lh] = cost[a]
        c[L:, :Lh] = own_h[a][None, :]
        c[:L, Lh:] = own[a][:, None]
        ri, ci = scipy.optimize.linear_sum_assignment(c)
        comp2 += float(c[ri, ci].sum())
    return {
        "param_error": math.sqrt(err2 / norm2),
        "param_error_components": math.sqrt(max(comp2, 0.0) / float(np.sum(own))),
    }

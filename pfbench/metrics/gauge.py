"""Gauge-aligned parameter error: distance between parameters modulo the family's symmetries.

Every family in :mod:`pfbench.families` has a gauge group (MATH.md section 1): transformations of
the parameters that leave the distribution of x = F(g) unchanged. An estimate can only be judged
up to that group, so each error here is a minimum (or a documented canonical choice) over the
gauge of a relative Frobenius distance (MATH.md section 8):

- ``quadratic``: min_{U in O(r)} (sum_a ||U Q_a U^T - Q_hat_a||_F^2)^(1/2) / (sum_a ||Q_a||_F^2)^(1/2);
- ``polynomial``: the same over the coefficient tensors S_a = sum_l lam_{a,l} v_{a,l}^{(x)w}, which
  absorbs relabelling of the L terms and the (lam, v) -> (c^-w lam, c v) rescaling;
- ``relu``: the paper's ||W_hat W_hat^T - W W^T||_F / ||W||_F^2, the orthogonal Procrustes error and
  the bias error;
- ``relu_deep``: canonical positive rescaling, hidden-unit permutations by assignment, latent
  rotation by Procrustes.

All computations are float64 numpy; inputs may be torch tensors or numpy arrays.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.sparse.linalg

from pfbench import ConfigError
from pfbench.seeding import numpy_generator

__all__ = [
    "parameter_error",
    "quadratic_gauge_error",
    "quadratic_gauge_align",
    "polynomial_gauge_error",
    "relu_gauge_error",
    "deep_relu_gauge_error",
    "GAUGE_FAMILIES",
]

GAUGE_FAMILIES = ("quadratic", "polynomial", "relu", "relu_deep")


def _f64(x: Any, name: str) -> np.ndarray:
    """A float64 numpy copy of a tensor/array, with a clear error for non-finite entries."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.array(x, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise ConfigError(f"parameter '{name}' has non-finite entries; a gauge error is undefined for it")
    return a


def _polar(m: np.ndarray) -> np.ndarray:
    """Orthogonal polar factor argmax_{U in O(r)} <U, m> = A B^T for m = A S B^T (Procrustes)."""
    a, _, bt = np.linalg.svd(m)
    return a @ bt


def _sym(q: np.ndarray) -> np.ndarray:
    return 0.5 * (q + np.swapaxes(q, -1, -2))


# ---------------------------------------------------------------------------------------------
# quadratic
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
        lam_min = float(np.linalg.eigvalsh(_sym(a))[0])
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
        u = _polar(g)
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
    q = _sym(_f64(Q_true, "Q_true"))
    qh = _sym(_f64(Q_hat, "Q_hat"))
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
    info = {"starts": len(errs), "starts_at_best": int(agree), "screened": len(pool)}
    return best_err, best_u, info


def quadratic_gauge_error(Q_true: Any, Q_hat: Any, restarts: int = 5, seed: int = 0) -> float:
    """min_{U in O(r)} (sum_a ||U Q_a U^T - Q_hat_a||_F^2)^(1/2) / (sum_a ||Q_a||_F^2)^(1/2).

    See :func:`quadratic_gauge_align` (same procedure; this returns only the error). Inputs are
    (d, r, r) arrays or tensors. Cost O(restarts * iterations * d r^3).
    """
    return quadratic_gauge_align(Q_true, Q_hat, restarts=restarts, seed=seed)[0]


# ---------------------------------------------------------------------------------------------
# low-rank polynomial
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
    return _sym(np.einsum("al,am,alm,alr,ams->ars", lam, lam, g, v, v))


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
    lam, v = _f64(lam_true, "lam"), _f64(v_true, "v")
    lamh, vh = _f64(lam_hat, "lam_hat"), _f64(v_hat, "v_hat")
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


# ---------------------------------------------------------------------------------------------
# one-layer and deep ReLU
# ---------------------------------------------------------------------------------------------


def relu_gauge_error(W_true: Any, b_true: Any, W_hat: Any, b_hat: Any) -> dict[str, float]:
    """Errors of x = ReLU(W z + b) modulo W -> W U, U in O(k) (MATH.md sections 4 and 8).

    - ``param_error_gram`` = ||W_hat W_hat^T - W W^T||_F / ||W||_F^2 (Wu, Dimakis, Sanghavi 2019);
    - ``param_error_procrustes`` = min_U ||W U - W_hat||_F / ||W||_F, closed form U = polar(W^T W_hat);
    - ``param_error_bias`` = ||b_hat - b|| / ||W||_F;
    - ``param_error`` (headline, same convention as the other families: all parameters, aligned,
      relative) = (min_U ||W U - W_hat||_F^2 + ||b_hat - b||^2)^(1/2) / (||W||_F^2 + ||b||^2)^(1/2).

    W (d, k), b (d,). Cost O(d k^2 + d^2 k).
    """
    W, b, Wh, bh = _f64(W_true, "W"), _f64(b_true, "b"), _f64(W_hat, "W_hat"), _f64(b_hat, "b_hat")
    if W.ndim != 2 or W.shape != Wh.shape or b.shape != (W.shape[0],) or bh.shape != b.shape:
        raise ConfigError(
            f"relu gauge error needs W (d, k) and b (d,) of equal shapes; got W {W.shape} vs {Wh.shape}, "
            f"b {b.shape} vs {bh.shape}"
        )
    nw2 = float(np.sum(W * W))
    if nw2 == 0.0:
        raise ConfigError("relu gauge error: the true W is zero, so errors relative to ||W||_F are undefined")
    u = _polar(W.T @ Wh)
    proc2 = float(np.sum((W @ u - Wh) ** 2))
    bias2 = float(np.sum((bh - b) ** 2))
    return {
        "param_error": math.sqrt((proc2 + bias2) / (nw2 + float(np.sum(b * b)))),
        "param_error_gram": float(np.linalg.norm(Wh @ Wh.T - W @ W.T)) / nw2,
        "param_error_procrustes": math.sqrt(proc2 / nw2),
        "param_error_bias": math.sqrt(bias2 / nw2),
    }


def _deep_layers(p: Mapping[str, Any], tag: str) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    n = 0
    while f"layers.{n}.weight" in p:
        n += 1
    if n == 0 or len(p) != n + sum(f"layers.{i}.bias" in p for i in range(n)):
        raise ConfigError(
            f"relu_deep {tag} parameters must be exactly 'layers.{{i}}.weight' (and optional "
            f"'layers.{{i}}.bias') as DeepReLUPushforward.params() returns; got {sorted(p)}"
        )
    ws = [_f64(p[f"layers.{i}.weight"], f"{tag} layers.{i}.weight") for i in range(n)]
    bs = [_f64(p[f"layers.{i}.bias"], f"{tag} layers.{i}.bias") if f"layers.{i}.bias" in p else None
          for i in range(n)]
    return ws, bs


def _canonical_scaling(ws: list[np.ndarray], bs: list[np.ndarray | None]) -> None:
    """In place: rescale every hidden unit so its incoming row [W_l[i, :], b_l[i]] has unit norm.

    ReLU(c t) = c ReLU(t) for c > 0, so dividing a unit's incoming weights by c and multiplying its
    outgoing column by c leaves the network unchanged; after this forward pass the only gauge left
    is permutations of hidden units and the latent rotation. Dead units (zero row) stay as they are.
    """
    for l in range(len(ws) - 1):
        n2 = np.sum(ws[l] ** 2, axis=1) + (bs[l] ** 2 if bs[l] is not None else 0.0)
        n = np.sqrt(n2)
        s = np.where(n > 0, n, 1.0)
        ws[l] = ws[l] / s[:, None]
        if bs[l] is not None:
            bs[l] = bs[l] / s
        ws[l + 1] = ws[l + 1] * s[None, :]


def deep_relu_gauge_error(true: Mapping[str, Any], est: Mapping[str, Any], *, max_sweeps: int = 20
                          ) -> dict[str, float]:
    """Error of deep ReLU nets modulo positive rescaling and permutation of hidden units and latent rotation.

    Both nets are first put in the canonical scaling (every hidden unit's incoming weights and bias
    of unit norm, :func:`_canonical_scaling`), which removes the rescaling gauge. Then

    .. math::
        e = \\min_{\\pi_1..\\pi_{L-1}, U \\in O(k)}
            \\Big(\\sum_l \\|W_l^{\\pi,U} - \\hat W_l\\|_F^2 + \\|b_l^{\\pi} - \\hat b_l\\|^2\\Big)^{1/2}
            \\Big/ \\Big(\\sum_l \\|W_l\\|_F^2 + \\|b_l\\|^2\\Big)^{1/2}

    over hidden-unit permutations pi_l and the rotation U (W_1 -> W_1 U), by block coordinate
    descent, each block solved exactly: for one layer's permutation the objective is a linear
    assignment (incoming row, bias and outgoing column of every unit); for U it is orthogonal
    Procrustes. The start matches units from the output backwards by their outgoing columns (the
    output coordinates carry no gauge). The objective never increases, so the result is an upper
    bound on the minimum, exact (0) for any gauge copy of the truth.

    Returns ``param_error`` and ``param_error_layer{l}`` (relative error of layer l's weights and
    bias in the canonical form). Cost: O(sweeps * sum_l (h_l^3 + h_l^2 h_{l-1})) (assignments).
    """
    ws, bs = _deep_layers(true, "true")
    wh, bh = _deep_layers(est, "estimated")
    shapes = [w.shape for w in ws], [b is None for b in bs]
    shapes_h = [w.shape for w in wh], [b is None for b in bh]
    if shapes != shapes_h:
        raise ConfigError(
            f"relu_deep gauge error needs equal architectures; truth layers {shapes[0]} (no-bias "
            f"{shapes[1]}), estimate {shapes_h[0]} (no-bias {shapes_h[1]})"
        )
    _canonical_scaling(ws, bs)
    _canonical_scaling(wh, bh)
    nl = len(ws)
    k = ws[0].shape[1]
    perms = [np.arange(w.shape[0]) for w in ws[:-1]]
    u = np.eye(k)

    def aligned(l: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Layer l of the truth after the current permutations (rows pi_l, columns pi_{l-1}) and U."""
        w = ws[l]
        if l < nl - 1:
            w = w[perms[l]]
        w = w @ u if l == 0 else w[:, perms[l - 1]]
        b = bs[l]
        if b is not None and l < nl - 1:
            b = b[perms[l]]
        return w, b

    def total() -> float:
        s = 0.0
        for l in range(nl):
            w, b = aligned(l)
            s += float(np.sum((w - wh[l]) ** 2))
            if b is not None:
                s += float(np.sum((b - bh[l]) ** 2))
        return s

    def assign(cost: np.ndarray) -> np.ndarray:
        # cost[i, j]: estimate unit i vs truth unit j; returns perm with perm[i] = truth unit for i.
        ri, ci = scipy.optimize.linear_sum_assignment(cost)
        out = np.empty_like(ci)
        out[ri] = ci
        return out

    def sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Pairwise squared distances between rows of a (estimate) and rows of b (truth)."""
        return np.sum(a * a, 1)[:, None] + np.sum(b * b, 1)[None, :] - 2 * a @ b.T

    def outgoing(l: int) -> np.ndarray:
        """Columns of layer l+1 (one per unit of layer l) with layer l+1's permutation applied."""
        w = ws[l + 1] if l + 1 == nl - 1 else ws[l + 1][perms[l + 1]]
        return w.T

    def first_layer_rotation() -> np.ndarray:
        rows = ws[0][perms[0]] if nl > 1 else ws[0]
        return _polar(rows.T @ wh[0])  # min_U ||rows U - W_hat_1||_F

    def descend() -> float:
        """Block coordinate descent from the current (perms, u); returns the final objective."""
        nonlocal u
        best = total()
        for _ in range(max_sweeps):
            for l in range(nl - 1):
                inc = ws[l] @ u if l == 0 else ws[l][:, perms[l - 1]]
                inc_h = wh[l]
                if bs[l] is not None:
                    inc = np.concatenate([inc, bs[l][:, None]], axis=1)
                    inc_h = np.concatenate([inc_h, bh[l][:, None]], axis=1)
                perms[l] = assign(sqdist(inc_h, inc) + sqdist(wh[l + 1].T, outgoing(l)))
                if l == 0:
                    u = first_layer_rotation()
            if nl == 1:
                u = first_layer_rotation()
            cur = total()
            if cur >= best - 1e-14 * best:
                return min(best, cur)
            best = cur
        return best

    # Start 1: units in their given order, U = I (so the result never exceeds that alignment).
    results = [(descend(), [p.copy() for p in perms], u.copy())]
    # Start 2: match units from the output backwards by outgoing columns (the output has no gauge).
    for l in range(nl - 2, -1, -1):
        perms[l] = assign(sqdist(wh[l + 1].T, outgoing(l)))
    u = first_layer_rotation()
    results.append((descend(), [p.copy() for p in perms], u.copy()))
    _, perms, u = min(results, key=lambda t: t[0])

    out: dict[str, float] = {}
    num = den = 0.0
    for l in range(nl):
        w, b = aligned(l)
        e2 = float(np.sum((w - wh[l]) ** 2))
        n2 = float(np.sum(ws[l] ** 2))
        if b is not None:
            e2 += float(np.sum((b - bh[l]) ** 2))
            n2 += float(np.sum(bs[l] ** 2))
        num, den = num + e2, den + n2
        out[f"param_error_layer{l}"] = math.sqrt(e2 / n2) if n2 > 0 else (0.0 if e2 == 0 else math.inf)
    if den == 0.0:
        raise ConfigError("relu_deep gauge error: the true network is zero, so a relative error is undefined")
    return {"param_error": math.sqrt(num / den), **out}


# ---------------------------------------------------------------------------------------------
# dispatcher
# ---------------------------------------------------------------------------------------------


def parameter_error(family: str, true: Mapping[str, Any], est: Mapping[str, Any], *, restarts: int = 5,
                    seed: int = 0, degree: int | None = None) -> dict[str, float]:
    """Gauge-aligned parameter error of ``est`` against ``true`` for a pushforward family.

    ``true`` and ``est`` are what :meth:`Pushforward.params` returns. ``param_error`` is always the
    headline: the relative Frobenius distance of all parameters after gauge alignment (MATH.md
    section 8); family-specific keys (all prefixed ``param_error_``) come beside it:

    - ``quadratic`` ("Q" (d, r, r)): :func:`quadratic_gauge_error`;
    - ``polynomial`` ("lam" (d, L), "v" (d, L, r); needs ``degree``): :func:`polynomial_gauge_error`,
      adds ``param_error_components``;
    - ``relu`` ("W" (d, k), "b" (d,)): :func:`relu_gauge_error`, adds ``_gram``, ``_procrustes``,
      ``_bias``;
    - ``relu_deep`` ("layers.{i}.weight", optional "layers.{i}.bias"): :func:`deep_relu_gauge_error`,
      adds ``param_error_layer{i}``.

    ``restarts`` and ``seed`` drive the non-convex rotation searches (quadratic, polynomial).
    Raises :class:`pfbench.ConfigError` for an unknown family, missing keys, mismatched shapes or
    non-finite parameters. Cost: that of the family's function (milliseconds for the default data
    configs: r = 5, d = 20 quadratic about 0.01-0.05 s; a 20-100-500 deep ReLU net about 0.5 s).
    """
    if family not in GAUGE_FAMILIES:
        raise ConfigError(f"no parameter error for family '{family}'; choose one of {list(GAUGE_FAMILIES)}")
    if family != "relu_deep":
        need = {"quadratic": ("Q",), "polynomial": ("lam", "v"), "relu": ("W", "b")}[family]
        for tag, p in (("true", true), ("estimated", est)):
            missing = [k for k in need if k not in p]
            if missing:
                raise ConfigError(f"{family}: {tag} parameters lack {missing}; expected keys {list(need)}")
    if family == "quadratic":
        err, _, info = quadratic_gauge_align(true["Q"], est["Q"], restarts=restarts, seed=seed, return_info=True)
        k, n = info["starts_at_best"], info["starts"]
        return {"param_error": err, "param_error_starts": n, "param_error_starts_at_best": k,
                "param_error_search": (f"upper bound on the minimum over O(r): reached by {k} of {n} refined starts "
                                       f"(U = I and the best {n - 1} of {info['screened']} screened eigenbasis starts)"
                                       + ("" if k > 1 or err < 1e-9 else "; one start only: raise "
                                          "eval.param_error.restarts for a firmer number"))}
    if family == "polynomial":
        if degree is None:
            raise ConfigError("polynomial parameter error needs degree=<w> (the family's degree attribute)")
        return polynomial_gauge_error(true["lam"], true["v"], est["lam"], est["v"], degree,
                                      restarts=restarts, seed=seed)
    if family == "relu":
        return relu_gauge_error(true["W"], true["b"], est["W"], est["b"])
    return deep_relu_gauge_error(true, est)

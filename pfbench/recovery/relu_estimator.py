r"""Wu-Dimakis-Sanghavi (2019) estimator for x = ReLU(W z + b), z ~ N(0, I_k), b >= 0 (MATH section 4).

Only Sigma = W W^T and b are identifiable (gauge W -> W U). The estimator has two steps:

1. Per coordinate i, the positive samples of x_i are N(b_i, ||W_i||^2) truncated to (0, inf). Their
   truncated-normal maximum-likelihood estimate gives (b_i, ||W_i||). After standardizing the positive
   samples (y = (x - m_i)/sd_i, truncation point c_i = -m_i/sd_i) the model is the exponential family

   .. math:: p_v(y) \propto \exp(-v_1 y^2/2 + v_2 y)\,1[y > c],\qquad v = (1/s^2, \mu/s^2),

   whose average log-likelihood ``v2 mean(y) - v1 mean(y^2)/2 - log Z(v)`` is concave in v. Like the
   reference code, v is restricted to the box v1 in [1/3, 3], |v2| <= 3 (in standardized units; every
   b >= 0 lies inside: b = 0 gives v1 = 1 - 2/pi ~ 0.363). ``solver="sgd"`` is the reference's projected
   SGD; ``solver="newton"`` (default) maximizes the same function on the same box deterministically.
2. All pairs at once: P[x_i > b_i, x_j > b_j] = P[W_i z > 0, W_j z > 0] = (pi - theta_ij)/(2 pi), so

   .. math:: \hat\theta_{ij} = \pi - 2\pi\,\overline{1[x_i > \hat b_i] 1[x_j > \hat b_j]},\qquad
             \hat\Sigma_{ij} = \|\hat W_i\| \|\hat W_j\| \cos\hat\theta_{ij},

   one (d, d) Gram matrix of the indicator matrix: O(n d^2) flops.

Sigma_hat need not be positive semidefinite. The fitted generator uses its best PSD rank-k approximation
(eigenvalues clipped at 0, top k kept), W_hat = V_k diag(sqrt(lambda_k)); ``info_`` flags the projection.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.special import log_ndtr, ndtr, ndtri

from pfbench import ConfigError
from pfbench.families.base import Pushforward
from pfbench.families.relu import OneLayerReLUPushforward
from pfbench.seeding import numpy_generator

#: the reference code's projection box for the standardized natural parameters
V1_BOUNDS = (1.0 / 3.0, 3.0)
V2_BOUND = 3.0
#: a Newton solution this close to the box counts as inside it (then it is clipped onto the box):
#: the box is a safeguard, not part of the model, and a maximizer lying exactly on a face (the test
#: case v = (3, -3)) lands a few ulp either side depending on the CPU's rounding of the moments
BOX_SLACK = 1e-9
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
_CHUNK = 65536


# ----------------------------------------------------------------------------------------------------
# truncated normal on (c, inf) in natural parameters
# ----------------------------------------------------------------------------------------------------
def _std_moments(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Raw moments M1..M4 of U ~ N(0,1) truncated to (a, inf), elementwise.

    Recursion M_j = (j-1) M_{j-2} + a^{j-1} lam with the inverse Mills ratio lam = phi(a)/(1 - Phi(a)),
    evaluated in log space so that it stays finite far in the tail.
    """
    lam = np.exp(-0.5 * a * a - _LOG_SQRT_2PI - log_ndtr(-a))
    m1 = lam
    m2 = 1.0 + a * lam
    m3 = 2.0 * m1 + a * a * lam
    m4 = 3.0 * m2 + a**3 * lam
    return m1, m2, m3, m4


def truncnorm_log_partition(v: np.ndarray, c: np.ndarray) -> np.ndarray:
    r"""log Z(v) = log \int_c^\infty exp(-v1 y^2/2 + v2 y) dy for v1 > 0; v shape (..., 2), c shape (...).

    Closed form: with mu = v2/v1, s = v1^{-1/2}, a = (c - mu)/s,
    log Z = log(sqrt(2 pi) s) + mu^2 v1 / 2 + log(1 - Phi(a)).
    """
    v1, v2 = v[..., 0], v[..., 1]
    mu = v2 / v1
    a = (c - mu) * np.sqrt(v1)
    return _LOG_SQRT_2PI - 0.5 * np.log(v1) + 0.5 * v2 * mu + log_ndtr(-a)


def truncnorm_stats(v: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Mean and covariance of the sufficient statistic T(y) = (-y^2/2, y) under p_v on (c, inf).

    These are the gradient and Hessian of log Z (exponential family). Shapes: v (m, 2), c (m,) ->
    mean (m, 2), cov (m, 2, 2). Central moments are formed from the standardized truncated normal
    U = (y - mu)/s, which avoids cancelling large raw moments when |mu| >> s.
    """
    v1, v2 = v[:, 0], v[:, 1]
    mu, s = v2 / v1, 1.0 / np.sqrt(v1)
    a = (c - mu) / s
    m1, m2, m3, m4 = _std_moments(a)
    var_u = m2 - m1 * m1
    cov_u_u2 = m3 - m1 * m2
    var_u2 = m4 - m2 * m2
    ey = mu + s * m1
    ey2 = mu * mu + 2 * mu * s * m1 + s * s * m2
    var_y = s * s * var_u
    cov_y_y2 = 2 * mu * s * s * var_u + s**3 * cov_u_u2
    var_y2 = 4 * mu * mu * s * s * var_u + 4 * mu * s**3 * cov_u_u2 + s**4 * var_u2
    mean = np.stack([-0.5 * ey2, ey], axis=-1)
    cov = np.empty((len(v1), 2, 2))
    cov[:, 0, 0] = 0.25 * var_y2
    cov[:, 0, 1] = cov[:, 1, 0] = -0.5 * cov_y_y2
    cov[:, 1, 1] = var_y
    return mean, cov


def _loglik(v: np.ndarray, tbar: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Average log-likelihood <v, tbar> - log Z(v); -inf outside v1 > 0."""
    out = np.full(v.shape[:-1], -np.inf)
    ok = v[..., 0] > 0
    out[ok] = (v[ok] * tbar[ok]).sum(-1) - truncnorm_log_partition(v[ok], c[ok])
    return out


def _in_box(v: np.ndarray, slack: float = BOX_SLACK) -> np.ndarray:
    """Rows of v inside the projection box, up to ``slack`` on every face."""
    return ((v[:, 0] >= V1_BOUNDS[0] - slack) & (v[:, 0] <= V1_BOUNDS[1] + slack)
            & (np.abs(v[:, 1]) <= V2_BOUND + slack))


def truncnorm_mle_newton(c: np.ndarray, tbar: np.ndarray, *, max_iter: int = 50,
                         tol: float = 1e-12) -> tuple[np.ndarray, dict[str, Any]]:
    r"""Box-constrained truncated-normal MLE for m independent problems at once (damped Newton).

    Maximizes l(v) = <v, tbar> - log Z(v) (concave) over v1 in [1/3, 3], |v2| <= 3, from v = (1, 0).
    Newton direction Cov(T)^{-1} (tbar - E_v T) with Armijo backtracking, vectorized over the m
    problems (each is 2-dimensional: O(m) work per iteration, typically 4-8 iterations). A problem
    whose unconstrained maximizer lies outside the box (or that did not converge) is re-solved on the
    box by L-BFGS-B with the exact gradient; because l is concave, an interior stationary point is the
    constrained maximum and nothing else needs checking.

    Parameters
    ----------
    c : (m,) truncation points of the standardized samples.
    tbar : (m, 2) sample means of T(y) = (-y^2/2, y).

    Returns
    -------
    v : (m, 2) maximizers; info: iterations, number of box-active problems, converged flag.
    """
    m = len(c)
    v = np.tile([1.0, 0.0], (m, 1))
    active = np.ones(m, dtype=bool)
    converged = np.zeros(m, dtype=bool)
    it = 0
    for it in range(1, max_iter + 1):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            it -= 1
            break
        va, ca, ta = v[idx], c[idx], tbar[idx]
        mean, cov = truncnorm_stats(va, ca)
        grad = ta - mean
        det = cov[:, 0, 0] * cov[:, 1, 1] - cov[:, 0, 1] ** 2
        step = np.stack([cov[:, 1, 1] * grad[:, 0] - cov[:, 0, 1] * grad[:, 1],
                         cov[:, 0, 0] * grad[:, 1] - cov[:, 0, 1] * grad[:, 0]], axis=-1) / det[:, None]
        dec = (grad * step).sum(-1)  # Newton decrement^2: predicted increase x 2
        bad = ~np.isfinite(dec) | (dec < 0)
        step[bad], dec[bad] = grad[bad], (grad[bad] ** 2).sum(-1)  # gradient fallback (never seen)
        l0 = _loglik(va, ta, ca)
        t = np.ones(len(idx))
        accepted = np.zeros(len(idx), dtype=bool)
        for _ in range(40):
            vt = va + t[:, None] * step
            ok = _loglik(vt, ta, ca) >= l0 + 0.25 * t * dec
            accepted |= ok
            if accepted.all():
                break
            t = np.where(accepted, t, 0.5 * t)
        v[idx] = va + np.where(accepted, t, 0.0)[:, None] * step
        converged[idx[dec <= tol]] = True
        active[idx[(dec <= tol) | ~accepted]] = False  # a failed line search goes to L-BFGS-B below
    need_box = ~converged | ~_in_box(v)
    v[~need_box] = np.clip(v[~need_box], [V1_BOUNDS[0], -V2_BOUND], [V1_BOUNDS[1], V2_BOUND])
    for i in np.flatnonzero(need_box):
        def negll(w: np.ndarray, i: int = i) -> tuple[float, np.ndarray]:
            mean, _ = truncnorm_stats(w[None], c[i:i + 1])
            return float(-_loglik(w[None], tbar[i:i + 1], c[i:i + 1])[0]), -(tbar[i] - mean[0])
        x0 = np.clip(v[i], [V1_BOUNDS[0], -V2_BOUND], [V1_BOUNDS[1], V2_BOUND])
        if not np.all(np.isfinite(x0)):
            x0 = np.array([1.0, 0.0])
        res = minimize(negll, x0, jac=True, method="L-BFGS-B",
                       bounds=[V1_BOUNDS, (-V2_BOUND, V2_BOUND)], options={"ftol": 1e-15, "gtol": 1e-10})
        v[i] = res.x
        converged[i] = bool(res.success)
    return v, {"newton_iterations": it, "box_active_coords": int(need_box.sum()),
               "converged": bool(converged.all())}


def sgd_distance_to_mle(v: np.ndarray, c: np.ndarray, counts: np.ndarray) -> np.ndarray:
    r"""How far the iterates v (m, 2) are from the box-constrained MLEs, in the MLEs' standard errors.

    At v the average log-likelihood of the standardized positive samples (mean(y) = 0, mean(y^2) = 1)
    has gradient g = (-1/2, 0) - E_v T and Hessian -F, F = Cov_v(T) (the Fisher information). One
    Newton step F^{-1} g estimates v_mle - v, and the MLE's covariance is F^{-1}/n_i, so

    .. math:: z_i = \sqrt{n_i\, g^T F^{-1} g}

    is the distance to the MLE in its own standard errors (0 at the MLE). Gradient components that
    point out of the box at an active face are dropped (the constrained optimum sits on the face).
    """
    mean, cov = truncnorm_stats(v, c)
    g = np.array([-0.5, 0.0]) - mean
    lo, hi = np.array([V1_BOUNDS[0], -V2_BOUND]), np.array([V1_BOUNDS[1], V2_BOUND])
    free = ~(((v <= lo + BOX_SLACK) & (g < 0)) | ((v >= hi - BOX_SLACK) & (g > 0)))
    dec = np.zeros(len(c))
    for i in range(len(c)):
        f = free[i]
        if f.any():
            gi = g[i, f]
            dec[i] = float(gi @ np.linalg.solve(cov[i][np.ix_(f, f)], gi))
    return np.sqrt(np.maximum(counts * dec, 0.0))


def truncnorm_mle_sgd(y: np.ndarray, counts: np.ndarray, c: np.ndarray, rng: np.random.Generator, *,
                      batch_size: int = 10, step_scale: float = 0.1, tol: float = 3.0
                      ) -> tuple[np.ndarray, dict[str, Any]]:
    r"""The reference projected SGD for the truncated-normal MLE, d problems advanced in lockstep.

    For problem i the positive standardized samples y[:counts[i], i] are read once in order, in
    mini-batches of ``batch_size``; step t (1-based) moves v by -eta_t g with eta_t = 1/(step_scale t)
    and the negative log-likelihood gradient estimate

    .. math:: g = (\overline{y^2}/2 - \overline{z^2}/2,\ \bar z - \bar y),

    where z are ``batch_size`` draws from the current truncated normal p_v; v is projected onto the box
    after each step and the running average of the iterates is returned. The draws use the inverse CDF,
    z = mu - s * Phi^{-1}(u (1 - Phi(a))), which has exactly the distribution of the reference's
    rejection sampler without its unbounded loop. Cost O(n d) arithmetic but floor(n_i / batch) Python
    steps, about 30 us each: 0.5-2 s per fit at n = 2e5..5e5.

    One pass of SGD stops when the data run out, converged or not. The returned info says how far the
    averaged iterate is from the exact MLE (:func:`sgd_distance_to_mle`, the largest over coordinates,
    in the MLE's standard errors): ``converged`` when that is at most ``tol``.

    Parameters
    ----------
    y : (N, d) standardized positive samples, column i valid in its first counts[i] rows.
    counts : (d,) number of valid rows per column; c : (d,) truncation points.
    rng : numpy generator for the model draws.
    """
    n_steps = counts // batch_size
    v = np.tile([1.0, 0.0], (len(c), 1))
    vbar = v.copy()
    lo, hi = np.array([V1_BOUNDS[0], -V2_BOUND]), np.array([V1_BOUNDS[1], V2_BOUND])
    t_max = int(n_steps.max())
    d = len(c)
    block = 2048
    for t0 in range(0, t_max, block):
        nb = min(block, t_max - t0)
        u = rng.random((nb, batch_size, d))
        for j in range(nb):
            t = t0 + j + 1
            live = n_steps >= t
            xb = y[(t - 1) * batch_size: t * batch_size]
            mu, s = v[:, 1] / v[:, 0], 1.0 / np.sqrt(v[:, 0])
            tail = ndtr(-(c - mu) / s)
            z = mu - s * ndtri(u[j] * tail)
            g = np.stack([0.5 * ((xb * xb).mean(0) - (z * z).mean(0)), z.mean(0) - xb.mean(0)], axis=-1)
            vn = np.clip(v - g / (step_scale * t), lo, hi)
            v = np.where(live[:, None], vn, v)
            vbar = np.where(live[:, None], vbar + (v - vbar) / t, vbar)
    z = sgd_distance_to_mle(vbar, c, counts)
    worst = float(z.max()) if len(z) else 0.0
    info: dict[str, Any] = {
        "sgd_steps": t_max, "converged": bool(worst <= tol), "sgd_distance_to_mle_se": worst,
        "convergence_check": (f"max over coordinates of the averaged iterate's distance to the exact MLE in the "
                              f"MLE's standard errors, sqrt(n_i g^T F^-1 g) at the iterate (g: gradient, F: Fisher "
                              f"information of the average log-likelihood); converged when <= sgd_tol={tol:g}")}
    if worst > tol:
        info["warning"] = (f"the SGD average is {worst:.3g} standard errors from the MLE in coordinate "
                           f"{int(z.argmax())} (> sgd_tol={tol:g}); use solver=newton or more samples")
    return vbar, info


# ----------------------------------------------------------------------------------------------------
# metrics (paper's): need the truth, so they live in extra_metrics
# ----------------------------------------------------------------------------------------------------
def gaussian_kl(m0: np.ndarray, s0: np.ndarray, m1: np.ndarray, s1: np.ndarray, rtol: float = 1e-12) -> float:
    r"""KL(N(m0, S0) || N(m1, S1)) = 1/2 [tr(S1^-1 S0) + (m1-m0)^T S1^-1 (m1-m0) - d + ln det S1 - ln det S0].

    Returns inf when either covariance is singular (smallest eigenvalue <= rtol x largest): then the
    two Gaussians are not mutually absolutely continuous (or have an infinite divergence). O(d^3).
    """
    e0 = np.linalg.eigvalsh(s0)
    e1, u1 = np.linalg.eigh(s1)
    if e0[0] <= rtol * max(e0[-1], 0.0) or e1[0] <= rtol * max(e1[-1], 0.0):
        return math.inf
    a = u1.T @ s0 @ u1
    dm = u1.T @ (m1 - m0)
    return float(0.5 * (np.sum(np.diag(a) / e1) + np.sum(dm * dm / e1) - len(e1)
                        + np.sum(np.log(e1)) - np.sum(np.log(e0))))


def tv_proxy(b: np.ndarray, sigma: np.ndarray, b_hat: np.ndarray, sigma_hat: np.ndarray) -> float:
    r"""min(1, sqrt(min(KL(P||Q), KL(Q||P))/2)) for P = N(b, Sigma), Q = N(b_hat, Sigma_hat).

    The paper's TV proxy. By Pinsker, TV(P, Q) <= sqrt(KL/2) in either direction, and TV <= 1, so the
    capped value is still an upper bound on the TV between the Gaussians; it equals 1 when a covariance
    is singular (for k < d, two different rank-k Gaussians are mutually singular: TV = 1 exactly).
    """
    kl = min(gaussian_kl(b, sigma, b_hat, sigma_hat), gaussian_kl(b_hat, sigma_hat, b, sigma))
    return float(min(1.0, math.sqrt(max(kl, 0.0) / 2.0)))


def relu_paper_metrics(W: np.ndarray, b: np.ndarray, sigma_hat: np.ndarray, b_hat: np.ndarray,
                       sigma_hat_psd: np.ndarray | None = None) -> dict[str, float]:
    r"""The WDS Figure 1 metrics, all relative to ||W||_F:

    sigma_error = ||Sigma_hat - W W^T||_F / ||W||_F^2 (raw Sigma_hat, as in the paper),
    sigma_error_psd = the same for the PSD rank-k projection (the fitted generator's Gram matrix),
    bias_error = ||b_hat - b|| / ||W||_F, tv_proxy (see :func:`tv_proxy`, uses the PSD Sigma_hat).
    W (d, k), b (d,), sigma_hat (d, d), b_hat (d,). Gauge invariant (only W W^T enters). O(d^3).
    """
    sigma = W @ W.T
    wf2 = float(np.trace(sigma))
    if wf2 <= 0:
        raise ConfigError("relu_paper_metrics: the true W is zero; the relative errors are undefined")
    psd = sigma_hat if sigma_hat_psd is None else sigma_hat_psd
    return {
        "sigma_error": float(np.linalg.norm(sigma_hat - sigma) / wf2),
        "sigma_error_psd": float(np.linalg.norm(psd - sigma) / wf2),
        "bias_error": float(np.linalg.norm(b_hat - b) / math.sqrt(wf2)),
        "tv_proxy": tv_proxy(b, sigma, b_hat, psd),
    }


def psd_rank_k(sigma: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """W (d, k) with W W^T the best PSD rank-k approximation of symmetric sigma; and its min eigenvalue.

    Eigenvalues below 0 are clipped (Frobenius projection onto the PSD cone), then the top k are kept
    (Eckart-Young); columns beyond d are zero. O(d^3).
    """
    lam, vec = np.linalg.eigh(0.5 * (sigma + sigma.T))
    order = np.argsort(lam)[::-1][: min(k, len(lam))]
    W = np.zeros((len(lam), k))
    W[:, : len(order)] = vec[:, order] * np.sqrt(np.clip(lam[order], 0.0, None))
    return W, float(lam[0])


# ----------------------------------------------------------------------------------------------------
# the estimator
# ----------------------------------------------------------------------------------------------------
class ReLUMomentEstimator:
    """Wu-Dimakis-Sanghavi estimator of (W W^T, b) for x = ReLU(W z + b), b >= 0.

    Hyperparameters (stored unmodified, checked by :meth:`validate`):

    solver : "newton" (default; deterministic box-constrained MLE) or "sgd" (the reference's projected
        SGD, one pass, averaged iterate).
    batch_size, step_scale : the SGD mini-batch (10) and step 1/(step_scale t) (step_scale = 0.1).
    sgd_tol : the SGD fit counts as converged when its averaged iterate is within this many standard
        errors of the exact MLE in every coordinate (:func:`sgd_distance_to_mle`; default 3).
    newton_max_iter, newton_tol : Newton iteration cap and stopping threshold on the decrement.
    min_positive : fewest positive samples a coordinate needs (fewer raise ConfigError).

    Fitted attributes: ``sigma_`` (d, d) raw estimate, ``sigma_psd_`` (d, d) = W_ W_^T, ``W_`` (d, k),
    ``b_`` (d,), ``row_norms_`` (d,), ``positive_fraction_`` (d,), ``pushforward_``, ``info_``.
    Cost: one pass for the per-coordinate statistics O(n d) and one indicator Gram O(n d^2).
    """

    def __init__(self, *, latent_dim: int, out_dim: int, seed: int = 0, solver: str = "newton",
                 batch_size: int = 10, step_scale: float = 0.1, newton_max_iter: int = 50,
                 newton_tol: float = 1e-12, min_positive: int = 10, sgd_tol: float = 3.0):
        self.latent_dim = latent_dim
        self.out_dim = out_dim
        self.seed = seed
        self.solver = solver
        self.batch_size = batch_size
        self.step_scale = step_scale
        self.newton_max_iter = newton_max_iter
        self.newton_tol = newton_tol
        self.min_positive = min_positive
        self.sgd_tol = sgd_tol

    # -- validation ------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ConfigError unless the sizes and hyperparameters are in range. O(1); the entry point
        calls it before it samples or reads any data, :meth:`fit` calls it first. Checks that need the
        samples (shape, signs, positive counts) stay in :meth:`fit`.
        """
        if self.solver not in {"newton", "sgd"}:
            raise ConfigError(f"relu_moments: solver='{self.solver}' is not one of newton, sgd")
        if not float(self.sgd_tol) > 0:
            raise ConfigError(f"relu_moments: sgd_tol={self.sgd_tol} must be > 0 (standard errors)")
        if int(self.batch_size) < 1 or not float(self.step_scale) > 0:
            raise ConfigError(f"relu_moments: batch_size={self.batch_size} must be >= 1 and "
                              f"step_scale={self.step_scale} > 0")
        if int(self.latent_dim) < 1 or int(self.out_dim) < 1:
            raise ConfigError(f"relu_moments: latent_dim={self.latent_dim} and out_dim={self.out_dim} "
                              "must be >= 1")

    def _check(self, X: Any) -> np.ndarray:
        X = X.detach().cpu().numpy() if torch.is_tensor(X) else np.asarray(X)
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != int(self.out_dim):
            raise ConfigError(f"relu_moments: X has shape {X.shape}, expected (n, {self.out_dim}) (out_dim)")
        if not np.isfinite(X).all():
            raise ConfigError("relu_moments: X has non-finite entries; drop or fix those samples")
        if (X < 0).any():
            raise ConfigError(f"relu_moments: X has negative entries (min {X.min():.3g}); x = ReLU(Wz + b) "
                              "is non-negative, pass the raw (uncentered, unnoised) samples")
        return X

    # -- fit -------------------------------------------------------------------------------------
    def fit(self, X: Any) -> ReLUMomentEstimator:
        """Estimate (W W^T, b) from samples X (n, d) >= 0; returns self."""
        self.validate()
        t0 = time.perf_counter()
        X = self._check(X)
        n, d = X.shape
        k = int(self.latent_dim)
        pos = X > 0
        counts = pos.sum(0)
        frac = counts / n
        few = np.flatnonzero(counts < int(self.min_positive))
        if few.size:
            raise ConfigError(f"relu_moments: coordinates {few.tolist()} have fewer than {self.min_positive} "
                              f"positive samples (counts {counts[few].tolist()}); use more samples")
        # b_i >= 0 implies P[x_i > 0] = P[W_i z > -b_i] >= 1/2; a three-sigma shortfall signals b_i < 0
        neg = np.flatnonzero(frac < 0.5 - 3.0 * math.sqrt(0.25 / n))
        if neg.size:
            warnings.warn(
                f"relu_moments: coordinates {neg.tolist()} are positive in only "
                f"{', '.join(f'{f:.3f}' for f in frac[neg])} of the samples (< 1/2): the data suggest "
                "negative biases there, outside the guarantee (b >= 0); their b_hat is clipped to 0 and "
                "their angles are biased", UserWarning, stacklevel=2)

        # step 1: standardize the positive samples of each coordinate (zeros add nothing to the sums)
        m = X.sum(0) / counts
        sd = np.sqrt(np.where(pos, (X - m) ** 2, 0.0).sum(0) / counts)
        if (sd <= 0).any():
            bad = np.flatnonzero(sd <= 0).tolist()
            raise ConfigError(f"relu_moments: coordinates {bad} have constant positive values; they are not "
                              "ReLU(Wz + b) samples with W_i != 0")
        c = -m / sd
        if self.solver == "newton":
            tbar = np.tile([-0.5, 0.0], (d, 1))  # standardized: mean(y) = 0, mean(y^2) = 1
            v, sinfo = truncnorm_mle_newton(c, tbar, max_iter=int(self.newton_max_iter),
                                            tol=float(self.newton_tol))
        else:
            y = np.zeros((int(counts.max()), d))
            for i in range(d):
                y[: counts[i], i] = (X[pos[:, i], i] - m[i]) / sd[i]
            v, sinfo = truncnorm_mle_sgd(y, counts, c, numpy_generator(int(self.seed), "relu_sgd"),
                                         batch_size=int(self.batch_size), step_scale=float(self.step_scale),
                                         tol=float(self.sgd_tol))
        mu_std, s_std = v[:, 1] / v[:, 0], 1.0 / np.sqrt(v[:, 0])
        b_raw = m + sd * mu_std
        norms = sd * s_std
        b_hat = np.clip(b_raw, 0.0, None)

        # step 2: every pair's angle from one Gram matrix of indicators
        both = np.zeros((d, d))
        for i in range(0, n, _CHUNK):
            ind = (X[i:i + _CHUNK] > b_hat).astype(np.float64)
            both += ind.T @ ind
        theta = np.clip(math.pi - 2.0 * math.pi * both / n, 0.0, math.pi)
        np.fill_diagonal(theta, 0.0)  # P[x_i > b_i] = 1/2 identically: theta_ii = 0
        sigma = np.outer(norms, norms) * np.cos(theta)
        W_hat, min_eig = psd_rank_k(sigma, k)

        self.sigma_, self.b_, self.row_norms_, self.theta_ = sigma, b_hat, norms, theta
        self.W_, self.sigma_psd_, self.positive_fraction_ = W_hat, W_hat @ W_hat.T, frac
        gen = OneLayerReLUPushforward(k, d, dtype=torch.float64)
        gen.set_params({"W": W_hat, "b": b_hat})
        for p in gen.parameters():
            p.requires_grad_(False)
        self.pushforward_ = gen
        lam = np.linalg.eigvalsh(sigma)
        self.info_ = {
            "solver": self.solver,
            "n": int(n),
            "fit_time_s": time.perf_counter() - t0,
            **sinfo,
            "min_positive_count": int(counts.min()),
            "negative_bias_coords": int(neg.size),
            "negative_bias_coord_list": ",".join(map(str, neg.tolist())),
            "bias_clipped_coords": int((b_raw < 0).sum()),
            "sigma_min_eig": min_eig,
            "sigma_psd_projected": bool(min_eig < 0),
            # spectral mass of Sigma_hat outside the fitted rank-k generator (0 when k >= d and PSD)
            "sigma_rank_residual": float(np.linalg.norm(sigma - self.sigma_psd_)
                                         / max(np.linalg.norm(sigma), 1e-300)),
            "sigma_trace": float(lam.sum()),
        }
        return self

    # -- metrics that need the truth ---------------------------------------------------------------
    def extra_metrics(self, truth: Pushforward, X: Any = None) -> dict[str, float]:
        """The paper's metrics against the true instance (a OneLayerReLUPushforward); X is unused."""
        if not hasattr(self, "sigma_"):
            raise ConfigError("relu_moments: call fit(X) before extra_metrics(truth)")
        p = truth.params()
        if set(p) != {"W", "b"}:
            raise ConfigError(f"relu_moments: the truth has parameters {sorted(p)}; expected W and b "
                              "(a OneLayerReLUPushforward)")
        W, b = p["W"].double().numpy(), p["b"].double().numpy()
        if W.shape[0] != self.sigma_.shape[0]:
            raise ConfigError(f"relu_moments: the truth has out_dim {W.shape[0]}, the fit "
                              f"{self.sigma_.shape[0]}; pass the instance that generated X")
        return relu_paper_metrics(W, b, self.sigma_, self.b_, self.sigma_psd_)


__all__ = ["ReLUMomentEstimator", "truncnorm_mle_newton", "truncnorm_mle_sgd", "sgd_distance_to_mle", "truncnorm_stats",
           "truncnorm_log_partition", "relu_paper_metrics", "tv_proxy", "gaussian_kl", "psd_rank_k"]

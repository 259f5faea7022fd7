"""``+model=moments`` on ``data=quadratic``: spectral (Jordan-algebra) initialization + moment matching.

For x_a = g^T Q_a g (MATH section 2): E x_a = Tr Q_a, Cov(x_a, x_b) = 2 Tr(Q_a Q_b), and the third
cumulant is 8 Tr(Q_a Q_b Q_c). The estimator

1. streams the sample moments in two passes (:func:`pfbench.recovery.moments.moment_summary`): mean,
   covariance, and the third cumulant only in the top m = r(r+1)/2 principal directions (never d^3);
2. checks the covariance rank: below m the Q_a do not span Sym(r) and the parameters are not
   identifiable; this is reported in ``info_`` and as a warning, and the fit falls back to
   moment matching from random starts;
3. runs the spectral algorithm of MATH 2b (steps 1-6) from ``restarts`` random elements X, Z of the
   Jordan algebra, each followed by the moment-matching refinement of step 7 (L-BFGS with the
   closed-form gradient), and keeps the fit with the smallest final loss.

``extra_metrics`` adds the oracle: the same refinement started at the true Q, the statistical floor
of this estimator on this sample. Cost: O(n d^2 + n m^3) for the moments, O(m^3 + d m r^2) per
spectral start, O(iterations (k^2 r^3 + k^3 r^2 + d^2 m)) per refinement (k = m).
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import numpy as np
import torch

from pfbench import ConfigError
from pfbench.families.base import Pushforward

# Imported with the module (it pulls in scipy, ~1 s cold), not inside fit(), so fit_time_s is fit work.
from pfbench.families.quadratic import QuadraticPushforward, quadratic_gauge_error
from pfbench.recovery.moments import DEFAULT_CHUNK, MomentSummary, moment_summary
from pfbench.recovery.quadratic_moments import (
    MomentLoss,
    check_identifiable,
    refine,
    spectral_init,
    sym_dim,
    to_coords,
)
from pfbench.seeding import numpy_generator


def _finite_or_none(x: float | None) -> float | None:
    """JSON has no inf/nan: non-finite diagnostics (population n = inf, r = 1 gaps) become null."""
    return float(x) if x is not None and math.isfinite(x) else None


def _gauge_error(Q_ref: np.ndarray, Q_hat: np.ndarray) -> float:
    return float(quadratic_gauge_error(Q_ref, Q_hat))


def covariance_rank(s: MomentSummary, rank_tol: float) -> tuple[int, float]:
    """Numerical rank of Cov (number of eigenvalues > rank_tol * largest) and the largest eigenvalue.

    For this family the centred samples lie exactly in the span of the Q_a's coordinates, so a
    deficient span shows as eigenvalues at rounding level (about 1e-15 relative), far below the
    default tolerance 1e-9. O(d) given the eigenvalues.
    """
    ev = s.cov_eigvals
    top = float(ev[0]) if ev.size else 0.0
    if not top > 0.0:
        return 0, 0.0
    return int(np.sum(ev > rank_tol * top)), top


class QuadraticMomentEstimator:
    """Spectral initialization (MATH 2b) + moment-matching refinement for x_a = g^T Q_a g.

    Parameters
    ----------
    latent_dim, out_dim : int
        r and d; d >= r(r+1)/2 is required (identifiability), checked by :meth:`validate` before any work.
    seed : int
        Drives the random Jordan-algebra elements of the spectral starts (and random starts).
    restarts : int
        Spectral starts, each refined; the smallest final loss wins.
    max_iter : int
        L-BFGS iterations per refinement.
    gtol : float
        Converged when the largest gradient entry of the normalized loss is below this.
    chunk : int
        Rows read per step when streaming the moments (memory O(chunk d)).
    oracle : bool
        ``extra_metrics`` also refines from the true parameters (the oracle error).
    rank_tol : float
        Relative eigenvalue threshold for the covariance rank check.

    Fitted attributes: ``pushforward_`` (float64 :class:`QuadraticPushforward`), ``Q_`` (d, r, r),
    ``init_Q_`` (the spectral start of the winning restart), ``moments_`` (the
    :class:`MomentSummary`), ``restarts_`` (one record per restart), ``info_`` (flat JSON scalars).
    """

    def __init__(self, *, latent_dim: int, out_dim: int, seed: int = 0, restarts: int = 3,
                 max_iter: int = 1000, gtol: float = 1e-10, chunk: int = DEFAULT_CHUNK, oracle: bool = True,
                 rank_tol: float = 1e-9):
        self.latent_dim, self.out_dim, self.seed = latent_dim, out_dim, seed
        self.restarts, self.max_iter, self.gtol, self.chunk = restarts, max_iter, gtol, chunk
        self.oracle, self.rank_tol = oracle, rank_tol

    def validate(self) -> None:
        """Raise ConfigError unless d >= r(r+1)/2 (identifiability) and the hyperparameters are in range.

        O(1); the entry point calls it before it samples or reads any data, :meth:`fit` and
        :meth:`fit_moments` call it first.
        """
        check_identifiable(int(self.latent_dim), int(self.out_dim))
        for name, v, lo in (("restarts", self.restarts, 1), ("max_iter", self.max_iter, 1),
                            ("chunk", self.chunk, 1)):
            if int(v) < lo:
                raise ConfigError(f"model.params.{name}={v} must be an integer >= {lo}")
        if not (float(self.gtol) > 0 and 0 < float(self.rank_tol) < 1):
            raise ConfigError(f"model.params.gtol={self.gtol} must be > 0 and rank_tol={self.rank_tol} in (0, 1)")

    # -----------------------------------------------------------------------------------------
    def fit(self, X: Any) -> QuadraticMomentEstimator:
        """Fit to samples X (n, d): numpy array, np.memmap or torch tensor (streamed, float64)."""
        self.validate()
        t0 = time.perf_counter()
        d = int(X.shape[1]) if len(X.shape) == 2 else -1
        if d != int(self.out_dim):
            raise ConfigError(f"samples have shape {tuple(X.shape)}; expected (n, {self.out_dim}) "
                              f"for out_dim {self.out_dim}")
        s = moment_summary(X, sym_dim(int(self.latent_dim)), chunk=int(self.chunk))
        t_mom = time.perf_counter() - t0
        self.fit_moments(s)
        self.info_["moments_time_s"] = t_mom
        self.info_["fit_time_s"] = time.perf_counter() - t0
        return self

    def fit_moments(self, s: MomentSummary) -> QuadraticMomentEstimator:
        """Fit from a moment summary (sample moments, or exact ones from ``population_summary``)."""
        self.validate()
        t0 = time.perf_counter()
        r, d = int(self.latent_dim), int(self.out_dim)
        m = sym_dim(r)
        if s.dim != d or s.basis.shape[1] < m:
            raise ConfigError(f"moment summary has dimension {s.dim} with {s.basis.shape[1]} principal "
                              f"directions; need {d} and >= {m}")
        rank, top = covariance_rank(s, float(self.rank_tol))
        ratio = float(s.cov_eigvals[m - 1] / top) if top > 0 else 0.0
        deficient = rank < m
        warning = ""
        if deficient:
            warning = (f"covariance rank {rank} < r(r+1)/2 = {m}: the Q_a do not span Sym({r}) in this data, "
                       f"so Q is not identifiable from its moments; the fit only matches moments "
                       f"(random starts)")
            warnings.warn(f"moments/quadratic: {warning}", UserWarning, stacklevel=2)

        loss = MomentLoss(s, r)
        records, best = [], None
        for i in range(int(self.restarts)):
            rng = numpy_generator(int(self.seed), f"quadratic_moments/start{i}")
            if deficient:
                # No Jordan structure to read: a random instance with the data's total variance.
                a = rng.standard_normal((d, r, r))
                q0 = 0.5 * (a + np.swapaxes(a, 1, 2))
                q0 *= math.sqrt(max(np.trace(s.cov) / 2.0, 1e-300) / float(np.sum(q0 * q0)))
                idem, gap = None, None  # JSON null: no spectral step ran
            else:
                init = spectral_init(s, r, rng)
                q0, idem, gap = init.Q, init.idempotent_residual, init.trace_score_gap
            init_loss = float(loss(to_coords(q0).ravel())[0])
            res = refine(loss, q0, max_iter=int(self.max_iter), gtol=float(self.gtol))
            records.append({"init_loss": init_loss, "final_loss": res.loss, "iterations": res.iterations,
                            "converged": res.converged, "idempotent_residual": idem, "trace_gap": gap,
                            "seconds": res.seconds, "message": res.message})
            if best is None or res.loss < best[1].loss:
                best = (q0, res, i)
        q0, res, ib = best
        parts = loss.parts(to_coords(res.Q))
        finals = [rec["final_loss"] for rec in records]

        self.moments_ = s
        self.Q_ = res.Q
        self.init_Q_ = q0
        self.restarts_ = records
        self.pushforward_ = QuadraticPushforward(r, d, dtype=torch.float64)
        self.pushforward_.set_params({"Q": torch.from_numpy(res.Q)})
        for p in self.pushforward_.parameters():
            p.requires_grad_(False)
        self.info_ = {
            "n_samples": _finite_or_none(s.n),
            "restarts": int(self.restarts),
            "best_restart": int(ib),
            "iterations": int(res.iterations),
            "total_iterations": int(sum(rec["iterations"] for rec in records)),
            "final_loss": float(res.loss),
            "loss_mean_term": parts[0],
            "loss_cov_term": parts[1],
            "loss_third_term": parts[2],
            "converged": bool(res.converged),
            "converged_restarts": int(sum(rec["converged"] for rec in records)),
            # Restarts landing on the same minimum have equal losses; a spread flags distinct basins.
            "restart_loss_spread": float((max(finals) - min(finals)) / max(min(finals), 1e-300)),
            "init_loss": float(records[ib]["init_loss"]),
            "spectral_idempotent_residual": records[ib]["idempotent_residual"],
            "spectral_trace_gap": _finite_or_none(records[ib]["trace_gap"]),
            # How far refinement moved the spectral start (gauge-aligned, relative to the fit): a
            # truth-free proxy of the spectral step's own error.
            "init_to_fit_gauge_error": _gauge_error(res.Q, q0),
            "cov_rank": int(rank),
            "cov_eig_ratio": ratio,
            "rank_deficient": bool(deficient),
            "warning": warning,
            "refine_time_s": float(sum(rec["seconds"] for rec in records)),
            "fit_time_s": time.perf_counter() - t0,
        }
        return self

    # -----------------------------------------------------------------------------------------
    def oracle_fit(self, Q_true: np.ndarray):
        """The refinement of :meth:`fit` started at the true Q (d, r, r), on the fitted moments."""
        if not hasattr(self, "moments_"):
            raise ConfigError("call fit(X) before oracle_fit / extra_metrics")
        loss = MomentLoss(self.moments_, int(self.latent_dim))
        q0 = np.asarray(Q_true, dtype=np.float64)
        return refine(loss, q0, max_iter=int(self.max_iter), gtol=float(self.gtol))

    def extra_metrics(self, truth: Pushforward, X: Any = None) -> dict[str, Any]:
        """Numbers that need the true instance: the oracle error (statistical floor) and the spectral
        start's own error, both gauge-aligned (MATH section 8). ``X`` is unused (the fitted moments
        are kept), accepted for the estimator contract.
        """
        q_true = truth.params()["Q"].detach().double().numpy()
        if q_true.shape != self.Q_.shape:
            raise ConfigError(f"truth has Q of shape {q_true.shape}, the fit {self.Q_.shape}")
        out: dict[str, Any] = {"spectral_init_param_error": _gauge_error(q_true, self.init_Q_)}
        if self.oracle:
            orc = self.oracle_fit(q_true)
            err = _gauge_error(q_true, orc.Q)
            fit_err = _gauge_error(q_true, self.Q_)
            out.update({
                "oracle_param_error": err,
                "oracle_final_loss": orc.loss,
                "oracle_iterations": orc.iterations,
                "oracle_converged": orc.converged,
                "fit_to_oracle_error_ratio": fit_err / err if err > 0 else None,
            })
        return out

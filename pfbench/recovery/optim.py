"""Small torch float64 optimizers for the moment-matching refinements.

- :func:`lbfgs` (L-BFGS) refines the quadratic estimator (:func:`pfbench.recovery.quadratic_moments.refine`);
- :func:`levenberg_marquardt` solves the polynomial estimator's least squares
  (:mod:`pfbench.recovery.polynomial`).

Both return an :class:`OptimResult`.

Why not scipy or torch.optim: scipy's L-BFGS-B calls the numpy BLAS, whose threads oversubscribe a
shared machine (8 ms per iteration at load 6 for 3300 variables, against 0.3 ms here), and the first
``torch.optim.LBFGS.step`` in a process imports torch's compiler stack (1.5 s), longer than a whole
fit at r = 5, d = 20, n = 1e5. These run entirely in torch's thread pool.

L-BFGS (Nocedal and Wright, Numerical Optimization, Alg. 7.4 and 7.5): two-loop recursion with
the last ``history`` pairs (s, y), initial Hessian gamma I with gamma = s.y / y.y; backtracking line
search (Armijo constant 1e-4, cubic-free halving with one quadratic-interpolation step); pairs with
y.s <= 1e-12 |y| |s| are skipped so the inverse-Hessian estimate stays positive definite.
Levenberg-Marquardt: see :func:`levenberg_marquardt`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

Objective = Callable[[torch.Tensor], tuple[float, torch.Tensor]]


@dataclass
class OptimResult:
    """Outcome of :func:`lbfgs` or :func:`levenberg_marquardt`.

    ``f`` is the final objective (for Levenberg-Marquardt ||r||^2), ``grad_max`` the largest
    gradient entry at the end, ``reason`` why it stopped, ``converged`` whether that counts as
    converged for the solver.
    """

    x: torch.Tensor
    f: float
    grad_max: float
    iterations: int
    evaluations: int
    converged: bool
    reason: str


def lbfgs(fun: Objective, x0: torch.Tensor, *, max_iter: int = 1000, gtol: float = 1e-10,
          ftol: float = 1e-15, history: int = 20, max_evals: int | None = None) -> OptimResult:
    """Minimize ``fun`` (x -> (value, gradient), both float64 torch) from x0 (flat tensor).

    Converged: max |grad| <= gtol, or the relative decrease |f_k - f_{k+1}| <= ftol max(|f_k|, 1e-300)
    on two successive iterations (the loss reached rounding level). Not converged: ``max_iter`` or
    ``max_evals`` reached, or the line search failed to decrease f (reported in ``reason``).
    Cost per iteration: O(history * len(x)) plus about 1.1 evaluations of ``fun``.
    """
    max_evals = int(max_evals) if max_evals is not None else 2 * int(max_iter) + 20
    x = x0.detach().clone().to(torch.float64).reshape(-1)
    f, g = fun(x)
    evals = 1
    s_hist: list[torch.Tensor] = []
    y_hist: list[torch.Tensor] = []
    rho: list[float] = []
    small = 0
    reason = "max_iter"
    it = 0
    for it in range(int(max_iter)):  # noqa: B007 - the count is returned
        gmax = float(g.abs().max())
        if gmax <= gtol:
            reason = "gtol"
            break
        # Two-loop recursion: d = -H g.
        q = g.clone()
        alpha = []
        for s, y, r in zip(reversed(s_hist), reversed(y_hist), reversed(rho)):
            a = r * float(s @ q)
            alpha.append(a)
            q.add_(y, alpha=-a)
        if s_hist:
            q.mul_(float(s_hist[-1] @ y_hist[-1]) / float(y_hist[-1] @ y_hist[-1]))
        else:
            q.mul_(min(1.0, 1.0 / float(g.abs().sum())))  # first step: a unit-length scaled gradient
        for s, y, r, a in zip(s_hist, y_hist, rho, reversed(alpha)):
            b = r * float(y @ q)
            q.add_(s, alpha=a - b)
        d = -q
        gd = float(g @ d)
        if not gd < 0.0:  # not a descent direction (rounding): restart from steepest descent
            s_hist.clear(), y_hist.clear(), rho.clear()
            d = -g * min(1.0, 1.0 / float(g.abs().sum()))
            gd = float(g @ d)
        t = 1.0
        while True:
            x_new = x + t * d
            f_new, g_new = fun(x_new)
            evals += 1
            if f_new <= f + 1e-4 * t * gd:
                break
            if evals >= max_evals or t < 1e-20:
                reason = "line search failed"
                break
            # Minimizer of the quadratic through f, f'(0) = gd and f(t), kept in [0.1 t, 0.5 t].
            denom = 2.0 * (f_new - f - gd * t)
            t_q = -gd * t * t / denom if denom > 0 else 0.5 * t
            t = min(max(t_q, 0.1 * t), 0.5 * t)
        if reason == "line search failed":
            break
        s_vec, y_vec = x_new - x, g_new - g
        sy = float(s_vec @ y_vec)
        if sy > 1e-12 * float(s_vec.norm() * y_vec.norm()):
            s_hist.append(s_vec), y_hist.append(y_vec), rho.append(1.0 / sy)
            if len(s_hist) > history:
                s_hist.pop(0), y_hist.pop(0), rho.pop(0)
        small = small + 1 if abs(f - f_new) <= ftol * max(abs(f), 1e-300) else 0
        x, f, g = x_new, f_new, g_new
        if small >= 2:
            reason = "ftol"
            it += 1
            break
        if evals >= max_evals:
            reason = "max_evals"
            it += 1
            break
    else:
        it = int(max_iter)
    return OptimResult(x=x, f=float(f), grad_max=float(g.abs().max()), iterations=int(it), evaluations=evals,
                       converged=reason in {"gtol", "ftol"}, reason=reason)


ResidualJacobian = Callable[[torch.Tensor, bool], tuple[torch.Tensor, "torch.Tensor | None"]]


def levenberg_marquardt(res_jac: ResidualJacobian, x0: torch.Tensor, *, max_iter: int = 500,
                        gtol: float = 1e-12, ftol: float = 1e-15, xtol: float = 1e-13) -> OptimResult:
    """Minimize ||r(x)||^2 by Levenberg-Marquardt with Nielsen's damping update, in torch float64.

    ``res_jac(x, need_jacobian)`` returns (r (m,), J (m, p) or None). Step:
    (J^T J + mu diag(J^T J) + mu 1e-12 I) delta = -J^T r, accepted when the cost drops; mu is scaled by
    max(1/3, 1 - (2 rho - 1)^3) on success (rho: actual over predicted decrease) and by 2, 4, 8, ...
    on successive failures (Madsen, Nielsen and Tingleff, "Methods for non-linear least squares
    problems", 2004, section 3.2). Quadratic convergence on zero-residual problems, where L-BFGS
    crawls along the scale and rotation valleys of moment losses.

    Converged: max |2 J^T r| <= gtol, the relative cost decrease <= ftol on two successive accepted
    steps, or no step longer than xtol (|x| + xtol) lowers the cost (rounding level: a stationary
    point whose gradient rounding keeps above gtol). Cost per iteration: one Jacobian plus
    O(m p^2 + p^3).
    Returns an :class:`OptimResult` (f = ||r||^2, grad_max = max |2 J^T r|).
    """
    x = x0.detach().clone().to(torch.float64).reshape(-1)
    r, J = res_jac(x, True)
    f = float(r @ r)
    evals, nu, mu = 1, 2.0, None
    small, reason, it = 0, "max_iter", 0
    for it in range(int(max_iter)):  # noqa: B007 - the count is returned
        A = J.T @ J
        g = J.T @ r
        if float(g.abs().max()) * 2.0 <= gtol:
            reason = "gtol"
            break
        diag = torch.diagonal(A).clone()
        if mu is None:
            mu = 1e-3 * float(diag.max())
        while True:
            step = torch.linalg.solve(A + torch.diag(mu * (diag + 1e-12)), -g)
            x_new = x + step
            r_new, _ = res_jac(x_new, False)
            evals += 1
            f_new = float(r_new @ r_new)
            pred = float(step @ (mu * (diag + 1e-12) * step - g))  # f minus the LM model at the step
            if f_new < f and pred > 0:
                rho = (f - f_new) / pred
                mu *= max(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
                nu = 2.0
                break
            mu *= nu
            nu *= 2.0
            if float(step.norm()) <= xtol * (float(x.norm()) + xtol):
                # Steps at rounding level no longer lower the cost: a stationary point (MINPACK's xtol).
                reason = "xtol"
                break
            if mu > 1e30 or not math.isfinite(mu):
                reason = "damping overflow"
                break
        if reason in ("xtol", "damping overflow"):
            break
        small = small + 1 if (f - f_new) <= ftol * max(f, 1e-300) else 0
        x, f = x_new, f_new
        r, J = res_jac(x, True)
        if small >= 2:
            reason = "ftol"
            it += 1
            break
    else:
        it = int(max_iter)
    g = J.T @ r
    return OptimResult(x=x, f=f, grad_max=2.0 * float(g.abs().max()), iterations=int(it), evaluations=evals,
                       converged=reason in {"gtol", "ftol", "xtol"}, reason=reason)

"""Independent reference computations shared by several tests (never pfbench's own code paths)."""

from __future__ import annotations

import math

import numpy as np
import scipy.optimize


def brute_force_gauge_error_r2(q: np.ndarray, qh: np.ndarray) -> float:
    """min over O(2) of ||U Q U^T - Q_hat||_F / ||Q||_F by an angle grid per reflection, then a 1-D polish."""

    def err(theta: float, refl: bool) -> float:
        c, s = math.cos(theta), math.sin(theta)
        u = np.array([[c, -s], [s, c]]) @ (np.diag([1.0, -1.0]) if refl else np.eye(2))
        return float(np.linalg.norm(u @ q @ u.T - qh) / np.linalg.norm(q))

    best = math.inf
    for refl in (False, True):
        grid = np.linspace(0, 2 * math.pi, 2001)
        t0 = grid[np.argmin([err(t, refl) for t in grid])]
        res = scipy.optimize.minimize_scalar(lambda t, refl=refl: err(t, refl),
                                             bracket=(t0 - 0.01, t0, t0 + 0.01), tol=1e-12)
        best = min(best, float(res.fun))
    return best

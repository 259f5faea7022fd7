"""Numerical helpers shared by the families' gauge alignments (float64 numpy).

Every family owns its symmetry group and its aligned parameter error (MATH.md sections 1 and 8);
these are the small pieces several of them use: a checked float64 copy of a parameter, the
orthogonal polar factor (the Procrustes solution) and the symmetric part of a matrix stack.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pfbench import ConfigError

__all__ = ["as_f64", "polar", "sym_np"]


def as_f64(x: Any, name: str) -> np.ndarray:
    """A float64 numpy copy of a tensor/array, with a clear error for non-finite entries."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.array(x, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise ConfigError(f"parameter '{name}' has non-finite entries; a gauge error is undefined for it")
    return a


def polar(m: np.ndarray) -> np.ndarray:
    """Orthogonal polar factor argmax_{U in O(r)} <U, m> = A B^T for m = A S B^T (Procrustes)."""
    a, _, bt = np.linalg.svd(m)
    return a @ bt


def sym_np(q: np.ndarray) -> np.ndarray:
    """Symmetric part (A + A^T)/2 over the last two axes."""
    return 0.5 * (q + np.swapaxes(q, -1, -2))

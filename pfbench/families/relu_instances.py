"""Instance recipes for the one-layer ReLU family used in the papers' experiments (MATH section 4).

Wu, Dimakis, Sanghavi (2019), Figure 1: W is the left singular factor of a Gaussian matrix with
prescribed singular values, b = max(0, N(0, I_d)) (non-negative, the setting of their guarantee).
"""

from __future__ import annotations

import numpy as np
import torch

from pfbench import ConfigError
from pfbench.families.relu import OneLayerReLUPushforward


def wds_singular_values(k: int, kappa: float) -> np.ndarray:
    r"""Geometric singular values s_1 = 1 >= ... >= s_k = kappa^{-1/2}, shape (k,).

    .. math:: s_i = \kappa^{-(i-1)/(2(k-1))},\quad i = 1..k,

    so the non-zero eigenvalues of W W^T = U diag(s^2) U^T have condition number
    s_1^2 / s_k^2 = kappa (MATH section 4: "condition number kappa of W W^T", geometric spectrum).
    kappa = 1 gives s = 1, the paper's plain U factor. For k = 1 only kappa = 1 is meaningful.
    """
    if int(k) < 1:
        raise ConfigError(f"latent dimension k={k} must be >= 1")
    if not np.isfinite(kappa) or kappa < 1:
        raise ConfigError(f"condition number kappa={kappa} must be a finite number >= 1")
    if k == 1:
        if kappa != 1:
            raise ConfigError(f"kappa={kappa} needs k >= 2 (one singular value has condition number 1)")
        return np.ones(1)
    return kappa ** (-np.arange(k) / (2.0 * (k - 1)))


def wds_instance(d: int, k: int, kappa: float, generator: torch.Generator) -> OneLayerReLUPushforward:
    r"""The Wu-Dimakis-Sanghavi instance x = ReLU(W z + b), float64.

    .. math::
        G = N(0,1)^{d \times k}/\sqrt{k} = U S_0 V^T \ (\text{thin SVD}),\quad
        W = U\, \mathrm{diag}(s)\, V^T,\quad b = \max(0, N(0, I_d)),

    with s from :func:`wds_singular_values` (all ones for kappa = 1, so W = U V^T, a point of the
    same gauge orbit as the paper's W = U; the V^T only rotates the latent and leaves the
    distribution unchanged). Needs d >= k (the paper's panels use d = k). Cost O(d k^2).

    Parameters
    ----------
    d, k : output and latent dimension.
    kappa : condition number of W W^T restricted to its range (1 <= kappa).
    generator : torch generator; all draws (the Gaussian matrix, then b) come from it.
    """
    d, k = int(d), int(k)
    if d < 1 or k < 1:
        raise ConfigError(f"wds_instance: d={d} and k={k} must both be >= 1")
    if k > d:
        raise ConfigError(f"wds_instance: k={k} > d={d}; the recipe takes the U factor of a d x k matrix, "
                          "use k <= d")
    s = torch.as_tensor(wds_singular_values(k, float(kappa)), dtype=torch.float64)
    g = torch.randn(d, k, generator=generator, dtype=torch.float64) / k**0.5
    u, _, vt = torch.linalg.svd(g, full_matrices=False)
    b = torch.randn(d, generator=generator, dtype=torch.float64).clamp_min(0)
    model = OneLayerReLUPushforward(k, d, dtype=torch.float64)
    model.set_params({"W": (u * s) @ vt, "b": b})
    for p in model.parameters():
        p.requires_grad_(False)
    return model


__all__ = ["wds_instance", "wds_singular_values"]

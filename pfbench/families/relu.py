"""One-layer ReLU pushforward x = ReLU(Wz + b) (MATH sections 1, 4): its instance recipes
(random, and the Wu-Dimakis-Sanghavi Figure 1 recipe ``data.instance.kind=wds``) and its
gauge-aligned error modulo W -> W U (section 8).

Wu, Dimakis, Sanghavi (2019), Figure 1: W is the left singular factor of a Gaussian matrix with
prescribed singular values, b = max(0, N(0, I_d)) (non-negative, the setting of their guarantee).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from pfbench import ConfigError
from pfbench.families.alignment import as_f64, polar
from pfbench.families.base import FamilyArgs, Pushforward, random_rotation


class OneLayerPushforward(Pushforward):
    """x = act(W z + b), z ~ N(0, I_k); W (d, k), b (d,), for an elementwise activation ``act``.

    Gauge: W -> W U, U in O(k), whatever the activation; the aligned error is the closed-form
    orthogonal Procrustes of :func:`relu_gauge_error`. Subclasses set ``family``, ``activation`` and
    the random instance (``reset_random_``).
    """

    activation: Callable[[torch.Tensor], torch.Tensor]  # a staticmethod, set by each subclass

    def __init__(self, latent_dim: int, out_dim: int, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.latent_dim, self.out_dim = int(latent_dim), int(out_dim)
        self.W = nn.Parameter(torch.zeros(self.out_dim, self.latent_dim, dtype=dtype))
        self.b = nn.Parameter(torch.zeros(self.out_dim, dtype=dtype))
        self.reset_random_(torch.Generator().manual_seed(0))

    @torch.no_grad()
    def random_symmetry_(self, generator: torch.Generator) -> torch.Tensor:
        """W -> W U: act(W U z + b) = F(U z)."""
        u = random_rotation(self.latent_dim, generator, self.W.dtype)
        self.W.copy_(self.W @ u)
        return u

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.activation(torch.addmm(self.b, z, self.W.T))

    @classmethod
    def aligned_error(cls, true: Mapping[str, Any], est: Mapping[str, Any], *, args: FamilyArgs,
                      restarts: int, seed: int) -> dict[str, Any]:
        """:func:`relu_gauge_error` (closed form: Procrustes over O(k), no search)."""
        cls._require(true, est, ("W", "b"))
        out = relu_gauge_error(true["W"], true["b"], est["W"], est["b"])
        out["param_error_search"] = "exact minimum over O(k): closed-form orthogonal Procrustes"
        return out


class OneLayerReLUPushforward(OneLayerPushforward):
    """x = ReLU(W z + b), z ~ N(0, I_k); W (d, k), b (d,).

    Gauge: W -> W U, U in O(k); only W W^T and b are identifiable (Wu, Dimakis, Sanghavi 2019).

    Random instance: W_ij ~ N(0, 1/k) (rows of norm about 1), b_i = max(0, N(0, 1)) (b >= 0, the
    setting of the estimator's guarantee).
    """

    family = "relu"
    is_relu_net = True
    activation = staticmethod(torch.relu)

    @torch.no_grad()
    def reset_random_(self, generator: torch.Generator) -> OneLayerReLUPushforward:
        self.W.copy_(torch.randn(self.W.shape, generator=generator, dtype=self.W.dtype) / self.latent_dim**0.5)
        self.b.copy_(torch.randn(self.b.shape, generator=generator, dtype=self.b.dtype).clamp_min(0))
        return self


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


def _wds_recipe(latent_dim: int, out_dim: int, *, generator: torch.Generator, kappa: float | None = None,
                **_: Any) -> OneLayerReLUPushforward:
    return wds_instance(out_dim, latent_dim, 1.0 if kappa is None else float(kappa), generator=generator)


OneLayerReLUPushforward.recipes = {"wds": _wds_recipe}


def relu_gauge_error(W_true: Any, b_true: Any, W_hat: Any, b_hat: Any) -> dict[str, float]:
    """Errors of x = ReLU(W z + b) modulo W -> W U, U in O(k) (MATH.md sections 4 and 8).

    - ``param_error_gram`` = ||W_hat W_hat^T - W W^T||_F / ||W||_F^2 (Wu, Dimakis, Sanghavi 2019);
    - ``param_error_procrustes`` = min_U ||W U - W_hat||_F / ||W||_F, closed form U = polar(W^T W_hat);
    - ``param_error_bias`` = ||b_hat - b|| / ||W||_F;
    - ``param_error`` (headline, same convention as the other families: all parameters, aligned,
      relative) = (min_U ||W U - W_hat||_F^2 + ||b_hat - b||^2)^(1/2) / (||W||_F^2 + ||b||^2)^(1/2).

    W (d, k), b (d,). Cost O(d k^2 + d^2 k).
    """
    W, b, Wh, bh = as_f64(W_true, "W"), as_f64(b_true, "b"), as_f64(W_hat, "W_hat"), as_f64(b_hat, "b_hat")
    if W.ndim != 2 or W.shape != Wh.shape or b.shape != (W.shape[0],) or bh.shape != b.shape:
        raise ConfigError(
            f"relu gauge error needs W (d, k) and b (d,) of equal shapes; got W {W.shape} vs {Wh.shape}, "
            f"b {b.shape} vs {bh.shape}"
        )
    nw2 = float(np.sum(W * W))
    if nw2 == 0.0:
        raise ConfigError("relu gauge error: the true W is zero, so errors relative to ||W||_F are undefined")
    u = polar(W.T @ Wh)
    proc2 = float(np.sum((W @ u - Wh) ** 2))
    bias2 = float(np.sum((bh - b) ** 2))
    return {
        "param_error": math.sqrt((proc2 + bias2) / (nw2 + float(np.sum(b * b)))),
        "param_error_gram": float(np.linalg.norm(Wh @ Wh.T - W @ W.T)) / nw2,
        "param_error_procrustes": math.sqrt(proc2 / nw2),
        "param_error_bias": math.sqrt(bias2 / nw2),
    }

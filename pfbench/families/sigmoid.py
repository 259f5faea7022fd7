"""One-layer sigmoid pushforward x = sigmoid(W z + b) and its gauge-aligned error modulo W -> W U.

Added as the worked example of "a new family = its module + its yaml + its tests + one registry
line" (docs/ARCHITECTURE.md). The sigmoid is invertible, so logit(x) = W z + b ~ N(b, W W^T): the
distribution determines b and W W^T exactly, and W only up to a right orthogonal factor, the
same symmetry as the one-layer ReLU net, and the same closed-form alignment (Procrustes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from pfbench.families.base import FamilyArgs, Pushforward, random_rotation
from pfbench.families.relu import relu_gauge_error


class SigmoidPushforward(Pushforward):
    """x = sigmoid(W z + b), z ~ N(0, I_k); W (d, k), b (d,); outputs in (0, 1).

    Gauge: W -> W U, U in O(k). Random instance: W_ij ~ N(0, 1/k) (pre-activations of unit scale,
    so the sigmoid is neither linear nor saturated), b_i ~ N(0, 1/4).
    """

    family = "sigmoid"

    def __init__(self, latent_dim: int, out_dim: int, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.latent_dim, self.out_dim = int(latent_dim), int(out_dim)
        self.W = nn.Parameter(torch.zeros(self.out_dim, self.latent_dim, dtype=dtype))
        self.b = nn.Parameter(torch.zeros(self.out_dim, dtype=dtype))
        self.reset_random_(torch.Generator().manual_seed(0))

    @torch.no_grad()
    def reset_random_(self, generator: torch.Generator) -> SigmoidPushforward:
        self.W.copy_(torch.randn(self.W.shape, generator=generator, dtype=self.W.dtype) / self.latent_dim**0.5)
        self.b.copy_(0.5 * torch.randn(self.b.shape, generator=generator, dtype=self.b.dtype))
        return self

    @torch.no_grad()
    def random_symmetry_(self, generator: torch.Generator) -> torch.Tensor:
        """W -> W U: sigmoid(W U z + b) = F(U z)."""
        u = random_rotation(self.latent_dim, generator, self.W.dtype)
        self.W.copy_(self.W @ u)
        return u

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(torch.addmm(self.b, z, self.W.T))

    @classmethod
    def aligned_error(cls, true: Mapping[str, Any], est: Mapping[str, Any], *, args: FamilyArgs,
                      restarts: int, seed: int) -> dict[str, Any]:
        """Procrustes over O(k) in closed form (the one-layer ReLU's alignment: same parameters, same group)."""
        cls._require(true, est, ("W", "b"))
        out = relu_gauge_error(true["W"], true["b"], est["W"], est["b"])
        out["param_error_search"] = "exact minimum over O(k): closed-form orthogonal Procrustes"
        return out

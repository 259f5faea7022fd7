"""Low-rank degree-w polynomial pushforward x_a = sum_l lam_{a,l} <v_{a,l}, g>^w (MATH section 3)."""

from __future__ import annotations

import torch
from torch import nn

from pfbench.families.base import Pushforward


class LowRankPolynomialPushforward(Pushforward):
    """x_a = sum_{l < L} lam[a, l] * <v[a, l], g>^w, g ~ N(0, I_r); lam (d, L), v (d, L, r).

    Gauge: v -> U v for U in O(r) (all a, l at once), plus relabelling the L terms of one output.

    Random instance: v[a, l] ~ N(0, I_r / r) (so <v, g> is about N(0, 1)), lam[a, l] ~ N(0, 1/L).
    """

    family = "polynomial"

    def __init__(self, latent_dim: int, out_dim: int, degree: int = 3, rank: int = 2,
                 dtype: torch.dtype = torch.float32):
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

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        d, L, r = self.v.shape
        proj = (z @ self.v.reshape(d * L, r).T).reshape(-1, d, L)  # <v_{a,l}, g>
        return (proj.pow(self.degree) * self.lam).sum(-1)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", degree={self.degree}, rank={self.rank}"

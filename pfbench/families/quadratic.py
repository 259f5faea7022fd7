"""Quadratic pushforward x_a = g^T Q_a g (MATH section 1-2)."""

from __future__ import annotations

import torch
from torch import nn

from pfbench.families.base import Pushforward


def sym(a: torch.Tensor) -> torch.Tensor:
    """Symmetric part (A + A^T)/2 over the last two axes."""
    return 0.5 * (a + a.transpose(-1, -2))


class QuadraticPushforward(Pushforward):
    """x_a = g^T Q_a g for a = 1..d, g ~ N(0, I_r); Q has shape (d, r, r).

    Gauge: Q_a -> U Q_a U^T, U in O(r). Moments: E x_a = Tr Q_a, Cov(x_a, x_b) = 2 Tr(Q_a Q_b),
    third cumulant 8 Tr(Q_a Q_b Q_c).

    Random instance: Q_a = sym(N(0,1)^{r x r}) / sqrt(r) with sym(A) = (A + A^T)/2, i.i.d. over a;
    then Var(x_a) = O(1) whatever r.
    """

    family = "quadratic"

    def __init__(self, latent_dim: int, out_dim: int, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.latent_dim, self.out_dim = int(latent_dim), int(out_dim)
        r, d = self.latent_dim, self.out_dim
        # Parameter stored unconstrained; only its symmetric part enters forward().
        self.Q = nn.Parameter(torch.zeros(d, r, r, dtype=dtype))
        self.reset_random_(torch.Generator().manual_seed(0))

    @property
    def Q_sym(self) -> torch.Tensor:
        return sym(self.Q)

    @torch.no_grad()
    def reset_random_(self, generator: torch.Generator) -> QuadraticPushforward:
        r = self.latent_dim
        a = torch.randn(self.Q.shape, generator=generator, dtype=self.Q.dtype)
        self.Q.copy_(sym(a) / r**0.5)
        return self

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        q = self.Q_sym  # (d, r, r)
        d, r, _ = q.shape
        # (n, r) @ (r, d*r) -> (n, d, r); then contract with z again: one GEMM, no (n, d, r, r).
        zq = (z @ q.permute(1, 0, 2).reshape(r, d * r)).reshape(-1, d, r)
        return (zq * z.unsqueeze(1)).sum(-1)

    def params(self) -> dict[str, torch.Tensor]:
        return {"Q": self.Q_sym.detach().clone()}

"""One-layer sigmoid pushforward x = sigmoid(W z + b) and its gauge-aligned error modulo W -> W U.

Added as the worked example of "a new family = its module + its yaml + its tests + one registry
line" (docs/ARCHITECTURE.md). The sigmoid is invertible, so logit(x) = W z + b ~ N(b, W W^T): the
distribution determines b and W W^T exactly, and W only up to a right orthogonal factor, the
same symmetry as the one-layer ReLU net, and the same closed-form alignment (Procrustes).
"""

from __future__ import annotations

import torch

from pfbench.families.relu import OneLayerPushforward


class SigmoidPushforward(OneLayerPushforward):
    """x = sigmoid(W z + b), z ~ N(0, I_k); W (d, k), b (d,); outputs in (0, 1).

    Gauge: W -> W U, U in O(k) (the one-layer net's, with its Procrustes alignment). Random instance:
    W_ij ~ N(0, 1/k) (pre-activations of unit scale, so the sigmoid is neither linear nor saturated),
    b_i ~ N(0, 1/4).
    """

    family = "sigmoid"
    activation = staticmethod(torch.sigmoid)

    @torch.no_grad()
    def reset_random_(self, generator: torch.Generator) -> SigmoidPushforward:
        self.W.copy_(torch.randn(self.W.shape, generator=generator, dtype=self.W.dtype) / self.latent_dim**0.5)
        self.b.copy_(0.5 * torch.randn(self.b.shape, generator=generator, dtype=self.b.dtype))
        return self

"""One-layer ReLU(Wz + b) and deep expanding ReLU pushforwards (MATH sections 1, 4, 5)."""

from __future__ import annotations

import torch
from torch import nn

from pfbench.families.base import Pushforward


class OneLayerReLUPushforward(Pushforward):
    """x = ReLU(W z + b), z ~ N(0, I_k); W (d, k), b (d,).

    Gauge: W -> W U, U in O(k); only W W^T and b are identifiable (Wu, Dimakis, Sanghavi 2019).

    Random instance: W_ij ~ N(0, 1/k) (rows of norm about 1), b_i = max(0, N(0, 1)) (b >= 0, the
    setting of the estimator's guarantee).
    """

    family = "relu"

    def __init__(self, latent_dim: int, out_dim: int, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.latent_dim, self.out_dim = int(latent_dim), int(out_dim)
        self.W = nn.Parameter(torch.zeros(self.out_dim, self.latent_dim, dtype=dtype))
        self.b = nn.Parameter(torch.zeros(self.out_dim, dtype=dtype))
        self.reset_random_(torch.Generator().manual_seed(0))

    @torch.no_grad()
    def reset_random_(self, generator: torch.Generator) -> OneLayerReLUPushforward:
        self.W.copy_(torch.randn(self.W.shape, generator=generator, dtype=self.W.dtype) / self.latent_dim**0.5)
        self.b.copy_(torch.randn(self.b.shape, generator=generator, dtype=self.b.dtype).clamp_min(0))
        return self

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.relu(torch.addmm(self.b, z, self.W.T))


class DeepReLUPushforward(Pushforward):
    """x = act(W_L ReLU(... ReLU(W_1 z + b_1) ...) + b_L), widths [k, h_1, ..., d].

    ``output_relu=True`` (default) puts a ReLU on the output layer too, the expanding random net
    of Lei, Jalal, Dhillon, Dimakis (2019), e.g. 20-100-500. Gauge: latent rotation W_1 -> W_1 U,
    permutation and positive rescaling of hidden units.

    Random instance: W_l entries N(0, 2/fan_in) (He scaling: activations keep their scale through
    depth), biases (if enabled) N(0, 0.1^2).
    """

    family = "relu_deep"

    def __init__(self, latent_dim: int, out_dim: int, hidden: list[int] | tuple[int, ...] = (100,),
                 bias: bool = False, output_relu: bool = True, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.latent_dim, self.out_dim = int(latent_dim), int(out_dim)
        self.widths = [self.latent_dim, *[int(h) for h in hidden], self.out_dim]
        self.output_relu = bool(output_relu)
        self.layers = nn.ModuleList(
            nn.Linear(a, b, bias=bias, dtype=dtype) for a, b in zip(self.widths[:-1], self.widths[1:])
        )
        self.reset_random_(torch.Generator().manual_seed(0))

    @torch.no_grad()
    def reset_random_(self, generator: torch.Generator) -> DeepReLUPushforward:
        for lin in self.layers:
            w = lin.weight
            w.copy_(torch.randn(w.shape, generator=generator, dtype=w.dtype) * (2.0 / w.shape[1]) ** 0.5)
            if lin.bias is not None:
                lin.bias.copy_(0.1 * torch.randn(lin.bias.shape, generator=generator, dtype=w.dtype))
        return self

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = z
        for i, lin in enumerate(self.layers):
            h = lin(h)
            if i < len(self.layers) - 1 or self.output_relu:
                h = torch.relu(h)
        return h

    def extra_repr(self) -> str:
        return f"widths={self.widths}, output_relu={self.output_relu}"

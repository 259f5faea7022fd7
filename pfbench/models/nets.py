"""Plain MLPs: critics, encoders and the generic (mis-specified) generator."""

from __future__ import annotations

import torch
from torch import nn

from pfbench.families.base import Pushforward

ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.2), "tanh": nn.Tanh, "elu": nn.ELU}


def mlp(in_dim: int, out_dim: int, width: int, depth: int, activation: str = "relu") -> nn.Sequential:
    """``depth`` hidden layers of ``width`` units, then a linear output layer."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation '{activation}'; choose one of {sorted(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    d = in_dim
    for _ in range(depth):
        layers += [nn.Linear(d, width), ACTIVATIONS[activation]()]
        d = width
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class MLPGenerator(Pushforward):
    """Generic generator x = MLP(z): no structure shared with the truth, so no parameter error."""

    family = "mlp"

    def __init__(self, latent_dim: int, out_dim: int, width: int = 128, depth: int = 2,
                 activation: str = "relu"):
        super().__init__()
        self.latent_dim, self.out_dim = int(latent_dim), int(out_dim)
        self.net = mlp(self.latent_dim, self.out_dim, width, depth, activation)

    def reset_random_(self, generator: torch.Generator) -> MLPGenerator:
        init_linear_(self.net, generator)
        return self

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


@torch.no_grad()
def init_linear_(module: nn.Module, generator: torch.Generator) -> None:
    """PyTorch's default Linear init (U(-1/sqrt(fan_in), 1/sqrt(fan_in))), drawn from ``generator``."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            bound = 1.0 / m.in_features**0.5
            m.weight.copy_((torch.rand(m.weight.shape, generator=generator) * 2 - 1) * bound)
            if m.bias is not None:
                m.bias.copy_((torch.rand(m.bias.shape, generator=generator) * 2 - 1) * bound)

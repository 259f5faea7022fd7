"""VAE with a Gaussian decoder: the decoder mean is a pushforward G(z), trained by the ELBO."""

from __future__ import annotations

import torch
from torch import nn

from pfbench.families.base import Pushforward
from pfbench.models import losses


class VAETrainer:
    """Maximize ELBO = E_q[log N(x; G(z), diag sigma^2)] - KL(q(z|x) || N(0, I)).

    q(z|x) = N(mu(x), diag exp(logvar(x))) from an MLP encoder; sigma is a learned per-coordinate
    scale. The evaluated distribution is the pushforward G(z), z ~ N(0, I) (the decoder mean), which
    is what a well-specified decoder shares with the truth.
    """

    def __init__(self, generator: Pushforward, encoder: nn.Module, *, batch_size: int,
                 optimizer: torch.optim.Optimizer, log_sigma: nn.Parameter):
        self.generator, self.encoder, self.log_sigma = generator, encoder, log_sigma
        self.batch_size = int(batch_size)
        self.opt = optimizer

    def modules(self) -> dict[str, nn.Module]:
        holder = nn.ParameterDict({"log_sigma": self.log_sigma})
        return {"generator": self.generator, "encoder": self.encoder, "decoder_scale": holder}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"vae": self.opt}

    def step(self, x_train: torch.Tensor, rng: torch.Generator) -> dict[str, torch.Tensor]:
        x = x_train[torch.randint(x_train.shape[0], (self.batch_size,), generator=rng, device=x_train.device)]
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        z = mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=rng, device=mu.device)
        nll = losses.gaussian_nll(x, self.generator(z), self.log_sigma)
        kl = losses.gaussian_kl(mu, logvar)
        loss = (nll + kl).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"loss": loss.detach(), "nll": nll.mean().detach(), "kl": kl.mean().detach()}

"""One adversarial loop for every GAN objective: WGAN (clipping), WGAN-GP, JS minimax, JS non-saturating."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from pfbench.families.base import Pushforward
from pfbench.models import losses

#: objective -> (critic loss, generator loss); WGAN-GP adds the penalty in step().
OBJECTIVES: dict[str, tuple[Callable, Callable]] = {
    "wgan_clip": (losses.wgan_critic_loss, losses.wgan_generator_loss),
    "wgan_gp": (losses.wgan_critic_loss, losses.wgan_generator_loss),
    "minimax": (losses.js_discriminator_loss, losses.js_generator_loss_minimax),
    "non_saturating": (losses.js_discriminator_loss, losses.js_generator_loss_non_saturating),
}


def make_optimizer(name: str, params, lr: float, betas: tuple[float, float] | None = None):
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(betas) if betas else (0.9, 0.999))
    raise ValueError(f"unknown optimizer '{name}'; choose rmsprop or adam")


class AdversarialTrainer:
    """Holds generator, critic and their optimizers; ``step`` is one generator update.

    Each step draws, from the explicit ``rng``, ``n_critic`` minibatches of real data (indices
    with replacement) and latents for the critic updates, then one latent batch for the generator.
    """

    def __init__(self, generator: Pushforward, critic: nn.Module, *, objective: str, n_critic: int,
                 batch_size: int, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
                 clip: float | None = None, gp_weight: float = 10.0):
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown GAN objective '{objective}'; choose one of {sorted(OBJECTIVES)}")
        self.generator, self.critic = generator, critic
        self.objective = objective
        self.critic_loss, self.generator_loss = OBJECTIVES[objective]
        self.n_critic, self.batch_size = int(n_critic), int(batch_size)
        self.opt_g, self.opt_d = opt_g, opt_d
        self.clip = clip if objective == "wgan_clip" else None
        self.gp_weight = float(gp_weight)
        self._clip_params = list(critic.parameters())

    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "critic": self.critic}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.opt_g, "critic": self.opt_d}

    def step(self, x_train: torch.Tensor, rng: torch.Generator) -> dict[str, torch.Tensor]:
        G, D, B = self.generator, self.critic, self.batch_size
        n, k = x_train.shape[0], G.latent_dim
        for _ in range(self.n_critic):
            real = x_train[torch.randint(n, (B,), generator=rng, device=x_train.device)]
            with torch.no_grad():
                fake = G(torch.randn(B, k, generator=rng, device=x_train.device))
            d_loss = self.critic_loss(D(real), D(fake))
            if self.objective == "wgan_gp":
                d_loss = d_loss + self.gp_weight * losses.gradient_penalty(D, real, fake, rng)
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
            if self.clip is not None:
                with torch.no_grad():
                    for p in self._clip_params:
                        p.clamp_(-self.clip, self.clip)
        g_loss = self.generator_loss(D(G(torch.randn(B, k, generator=rng, device=x_train.device))))
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        return {"loss_d": d_loss.detach(), "loss_g": g_loss.detach()}

"""GAN losses as small pure functions of critic outputs (MATH section 7).

Conventions: the critic/discriminator returns a real score. For JS-GANs it is the logit ``l`` with
D(x) = sigmoid(l); every function here returns a quantity to *minimize*.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def wgan_critic_loss(score_real: torch.Tensor, score_fake: torch.Tensor) -> torch.Tensor:
    """-(E_real f - E_fake f): the critic maximizes the Kantorovich-Rubinstein gap (Arjovsky et al.)."""
    return score_fake.mean() - score_real.mean()


def wgan_generator_loss(score_fake: torch.Tensor) -> torch.Tensor:
    """-E_fake f: the generator lowers the estimated W1 by raising the critic on its samples."""
    return -score_fake.mean()


def gradient_penalty(critic: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """E[(||grad f(x_hat)||_2 - 1)^2] at x_hat = eps real + (1 - eps) fake, eps ~ U(0, 1) (Gulrajani et al.)."""
    eps = torch.rand(real.shape[0], 1, generator=generator, dtype=real.dtype, device=real.device)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return (grad.norm(dim=1) - 1).pow(2).mean()


def js_discriminator_loss(logit_real: torch.Tensor, logit_fake: torch.Tensor) -> torch.Tensor:
    """-(E_real log D + E_fake log(1 - D)) with D = sigmoid(logit) (Goodfellow et al.).

    log D = -softplus(-l) and log(1 - D) = -softplus(l), computed stably.
    """
    return F.softplus(-logit_real).mean() + F.softplus(logit_fake).mean()


def js_generator_loss_minimax(logit_fake: torch.Tensor) -> torch.Tensor:
    """E_fake log(1 - D(G(z))): the saturating generator loss of the original minimax game."""
    return -F.softplus(logit_fake).mean()


def js_generator_loss_non_saturating(logit_fake: torch.Tensor) -> torch.Tensor:
    """-E_fake log D(G(z)): the non-saturating heuristic (often called 'vanilla' GAN loss)."""
    return F.softplus(-logit_fake).mean()


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) per sample: 0.5 sum(exp(logvar) + mu^2 - 1 - logvar)."""
    return 0.5 * (logvar.exp() + mu.pow(2) - 1 - logvar).sum(-1)


def gaussian_nll(x: torch.Tensor, mean: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """-log N(x; mean, sigma^2 I) per sample, log_sigma a scalar or per-coordinate tensor."""
    d = x.shape[-1]
    log_sigma = log_sigma.expand(d) if log_sigma.dim() <= 1 else log_sigma
    return (0.5 * ((x - mean) / log_sigma.exp()).pow(2) + log_sigma).sum(-1) + 0.5 * d * torch.log(
        torch.tensor(2 * torch.pi, dtype=x.dtype)
    )

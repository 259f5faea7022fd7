"""GAN/VAE losses against hand-computed values (MATH section 7)."""

import math

import pytest
import torch

from pfbench.models import losses


def t(*v):
    return torch.tensor(v, dtype=torch.float64)


def test_wgan_losses():
    assert losses.wgan_critic_loss(t(1.0, 3.0), t(0.0, 2.0)).item() == pytest.approx(-1.0, abs=1e-12)
    assert losses.wgan_generator_loss(t(0.5, 1.5)).item() == pytest.approx(-1.0, abs=1e-12)


def test_js_losses_at_half():
    # D = sigmoid(0) = 1/2: -(log 1/2 + log 1/2) = 2 log 2; minimax log(1 - 1/2) = -log 2; NS -log 1/2 = log 2.
    z = t(0.0, 0.0)
    assert losses.js_discriminator_loss(z, z).item() == pytest.approx(2 * math.log(2), abs=1e-12)
    assert losses.js_generator_loss_minimax(z).item() == pytest.approx(-math.log(2), abs=1e-12)
    assert losses.js_generator_loss_non_saturating(z).item() == pytest.approx(math.log(2), abs=1e-12)


def test_js_losses_general_logit():
    l_real, l_fake = 1.3, -0.7
    d_real, d_fake = 1 / (1 + math.exp(-l_real)), 1 / (1 + math.exp(-l_fake))
    ref = -(math.log(d_real) + math.log(1 - d_fake))
    assert losses.js_discriminator_loss(t(l_real), t(l_fake)).item() == pytest.approx(ref, abs=1e-12)
    assert losses.js_generator_loss_minimax(t(l_fake)).item() == pytest.approx(math.log(1 - d_fake), abs=1e-12)
    assert losses.js_generator_loss_non_saturating(t(l_fake)).item() == pytest.approx(-math.log(d_fake), abs=1e-12)


def test_minimax_saturates_and_non_saturating_does_not():
    # When D confidently rejects fakes (logit -10), d/dl log(1 - D) = -D ~ -4.5e-5; d/dl -log D = -(1 - D) ~ -1.
    l1 = t(-10.0).requires_grad_(True)
    losses.js_generator_loss_minimax(l1).backward()
    l2 = t(-10.0).requires_grad_(True)
    losses.js_generator_loss_non_saturating(l2).backward()
    s = 1 / (1 + math.exp(10.0))
    assert l1.grad.item() == pytest.approx(-s, rel=1e-9)
    assert l2.grad.item() == pytest.approx(-(1 - s), rel=1e-9)


def test_gradient_penalty_of_linear_critic():
    w = t(3.0, 4.0)  # ||grad|| = 5 everywhere: penalty (5 - 1)^2 = 16
    critic = torch.nn.Linear(2, 1, bias=False, dtype=torch.float64)
    with torch.no_grad():
        critic.weight.copy_(w[None])
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(8, 2, dtype=torch.float64, generator=g), torch.randn(8, 2, dtype=torch.float64)
    assert losses.gradient_penalty(critic, real, fake, g).item() == pytest.approx(16.0, abs=1e-10)


def test_gaussian_kl_and_nll():
    assert losses.gaussian_kl(t(0.0, 0.0)[None], t(0.0, 0.0)[None]).item() == pytest.approx(0.0, abs=1e-15)
    # KL(N(1, e^1) || N(0, 1)) = 0.5 (e + 1 - 1 - 1) per coordinate
    assert losses.gaussian_kl(t(1.0)[None], t(1.0)[None]).item() == pytest.approx(0.5 * (math.e - 1), abs=1e-12)
    x, mean, ls = t(0.3, -1.2)[None], t(0.1, 0.4)[None], t(0.2, -0.5)
    ref = -torch.distributions.Normal(mean, ls.exp()).log_prob(x).sum()
    assert losses.gaussian_nll(x, mean, ls).item() == pytest.approx(ref.item(), abs=1e-12)

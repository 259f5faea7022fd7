"""GAN/VAE losses against hand-computed values (MATH section 7)."""

import math

import numpy as np
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


class _QuadraticCritic(torch.nn.Module):
    """f(x) = x^T A x / 2 + c^T x, recording its inputs: grad f(x) = S x + c (S = (A + A^T)/2) varies with x."""

    def __init__(self, a: torch.Tensor, c: torch.Tensor):
        super().__init__()
        self.a, self.c = torch.nn.Parameter(a.clone()), torch.nn.Parameter(c.clone())
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return (0.5 * ((x @ self.a) * x).sum(-1) + x @ self.c)[:, None]


def _gp_problem(n: int = 4000):
    a = t(1.5, 0.4, 0.0, 0.4, -0.7, 0.3, 0.0, 0.3, 0.9).reshape(3, 3)
    c = t(0.3, -0.2, 0.1)
    g = torch.Generator().manual_seed(11)
    real = torch.randn(n, 3, dtype=torch.float64, generator=g) * 0.5 + t(2.0, 1.0, -1.0)
    fake = torch.randn(n, 3, dtype=torch.float64, generator=g) * 0.5 - t(1.0, 0.5, 0.0)
    return _QuadraticCritic(a, c), real, fake


def _penalty_at(points: torch.Tensor, a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """mean (||grad f(p)|| - 1)^2 from the closed-form gradient S p + c: an independent reference."""
    s = 0.5 * (a + a.T)
    return ((points @ s + c).pow(2).sum(-1).sqrt() - 1).pow(2).mean()


def test_gradient_penalty_is_taken_at_uniform_interpolates():
    # A quadratic critic: ||grad f|| differs at the real points, the fake points and in between, so
    # only the penalty at x_hat = eps real + (1 - eps) fake, one eps ~ U(0, 1) per sample, matches.
    n = 4000
    critic, real, fake = _gp_problem(n)
    gp = losses.gradient_penalty(critic, real, fake, torch.Generator().manual_seed(0))
    assert len(critic.seen) == 1 and critic.seen[0].shape == (n, 3)
    p = critic.seen[0]
    # every evaluation point lies on its own segment [fake_i, real_i] ...
    seg = real - fake
    eps = ((p - fake) * seg).sum(-1) / seg.pow(2).sum(-1)
    off = p - (eps[:, None] * real + (1 - eps[:, None]) * fake)
    assert off.abs().max().item() <= 1e-12
    assert eps.min().item() >= 0.0 and eps.max().item() <= 1.0
    # ... at a position eps that is U(0, 1): Kolmogorov-Smirnov distance below its 0.1 % critical value
    e = torch.sort(eps).values.numpy()
    ks = max(np.max(np.arange(1, n + 1) / n - e), np.max(e - np.arange(n) / n))
    assert ks <= 1.95 / math.sqrt(n)
    # the value is the mean penalty there, computed from the closed-form gradient
    with torch.no_grad():
        ref = _penalty_at(p, critic.a, critic.c).item()
        at_real = _penalty_at(real, critic.a, critic.c).item()
        at_fake = _penalty_at(fake, critic.a, critic.c).item()
        at_mid = _penalty_at(0.5 * (real + fake), critic.a, critic.c).item()
    assert abs(gp.item() - ref) <= 1e-12 * ref
    # the wrong variants (penalty at the real points, the fake points, eps = 1/2) are far from it
    for wrong in (at_real, at_fake, at_mid):
        assert abs(wrong - ref) >= 0.1 * ref


def test_gradient_penalty_is_differentiable_in_the_critic_and_uses_the_given_generator():
    critic, real, fake = _gp_problem(500)
    state = torch.get_rng_state()
    gp = losses.gradient_penalty(critic, real, fake, torch.Generator().manual_seed(5))
    assert torch.equal(torch.get_rng_state(), state)  # eps came from the generator passed in
    gp.backward()  # needs create_graph: the penalty trains the critic through its input gradient
    got_a, got_c = critic.a.grad.clone(), critic.c.grad.clone()
    # independent: autograd through the closed-form penalty at the same (recorded) points
    a, c = critic.a.detach().clone().requires_grad_(True), critic.c.detach().clone().requires_grad_(True)
    _penalty_at(critic.seen[0], a, c).backward()
    assert torch.allclose(got_a, a.grad, rtol=1e-10, atol=1e-12)
    assert torch.allclose(got_c, c.grad, rtol=1e-10, atol=1e-12)
    assert got_a.abs().max().item() >= 1e-3  # a non-trivial gradient
    # the same generator state gives the same points; another seed other points
    losses.gradient_penalty(critic, real, fake, torch.Generator().manual_seed(5))
    losses.gradient_penalty(critic, real, fake, torch.Generator().manual_seed(6))
    assert torch.equal(critic.seen[1], critic.seen[0])
    assert (critic.seen[2] - critic.seen[0]).abs().max().item() >= 0.1


def test_gaussian_kl_and_nll():
    assert losses.gaussian_kl(t(0.0, 0.0)[None], t(0.0, 0.0)[None]).item() == pytest.approx(0.0, abs=1e-15)
    # KL(N(1, e^1) || N(0, 1)) = 0.5 (e + 1 - 1 - 1) per coordinate
    assert losses.gaussian_kl(t(1.0)[None], t(1.0)[None]).item() == pytest.approx(0.5 * (math.e - 1), abs=1e-12)
    x, mean, ls = t(0.3, -1.2)[None], t(0.1, 0.4)[None], t(0.2, -0.5)
    ref = -torch.distributions.Normal(mean, ls.exp()).log_prob(x).sum()
    assert losses.gaussian_nll(x, mean, ls).item() == pytest.approx(ref.item(), abs=1e-12)

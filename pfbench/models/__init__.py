"""Learned generators: build the trainer (GAN or VAE) a model config asks for."""

from __future__ import annotations

from typing import Any

import torch

from pfbench import ConfigError
from pfbench.families import build_family
from pfbench.families.base import Pushforward
from pfbench.models.gan import AdversarialTrainer, make_optimizer
from pfbench.models.nets import MLPGenerator, init_linear_, mlp
from pfbench.models.vae import VAETrainer
from pfbench.seeding import torch_generator

#: model name -> objectives it accepts (the first is the default)
GAN_OBJECTIVES = {"wgan": ("wgan_clip",), "wgan_gp": ("wgan_gp",), "jsgan": ("non_saturating", "minimax")}


def build_generator(m: Any, family: str, latent_dim: int, out_dim: int, family_kwargs: dict,
                    seed: int) -> Pushforward:
    """A freshly initialized generator: the truth's own class (``family``) or a generic MLP."""
    if m.generator == "family":
        g = build_family(family, latent_dim, out_dim, dtype=torch.float32, **family_kwargs)
    elif m.generator == "mlp":
        g = MLPGenerator(latent_dim, out_dim, **dict(m.generator_mlp))
    else:
        raise ConfigError(f"model.generator='{m.generator}' is not one of family, mlp")
    g.reset_random_(torch_generator(seed, "init_generator"))
    for p in g.parameters():
        p.requires_grad_(True)
    return g


def build_trainer(m: Any, *, family: str, latent_dim: int, out_dim: int, family_kwargs: dict, seed: int):
    """The trainer for model config ``m`` (conf/model/*.yaml) on data of the given family and sizes."""
    gen = build_generator(m, family, latent_dim, out_dim, family_kwargs, seed)
    t = m.train
    if m.kind == "gan":
        allowed = GAN_OBJECTIVES.get(m.name)
        if allowed is None or m.loss not in allowed:
            raise ConfigError(f"model.loss='{m.loss}' is not valid for +model={m.name}; use one of {allowed}")
        critic = mlp(out_dim, 1, m.critic.width, m.critic.depth, m.critic.activation)
        init_linear_(critic, torch_generator(seed, "init_critic"))
        return AdversarialTrainer(
            gen, critic, objective=m.loss, n_critic=t.n_critic, batch_size=t.batch_size,
            opt_g=make_optimizer(t.optimizer, gen.parameters(), t.lr_g, t.betas),
            opt_d=make_optimizer(t.optimizer, critic.parameters(), t.lr_d, t.betas),
            clip=t.clip, gp_weight=t.gp_weight,
        )
    if m.kind == "vae":
        encoder = mlp(out_dim, 2 * latent_dim, m.encoder.width, m.encoder.depth, m.encoder.activation)
        init_linear_(encoder, torch_generator(seed, "init_encoder"))
        log_sigma = torch.nn.Parameter(torch.zeros(out_dim))
        params = [*gen.parameters(), *encoder.parameters(), log_sigma]
        return VAETrainer(gen, encoder, batch_size=t.batch_size, log_sigma=log_sigma,
                          optimizer=make_optimizer(t.optimizer, params, t.lr_g, t.betas))
    raise ConfigError(f"model.kind='{m.kind}' is not one of gan, vae, estimator")

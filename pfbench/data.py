"""The data of a run: the true pushforward of a config and its three disjoint sample splits.

Used by the entry point (:mod:`pfbench.train`) and by tools that rebuild a finished run
(:mod:`pfbench.runs`), so neither imports the other.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from omegaconf import DictConfig

from pfbench.families import FAMILIES, Pushforward, make_instance
from pfbench.seeding import numpy_generator, torch_generator


def family_of(d: DictConfig) -> str | None:
    """The family a generator or estimator should take: the data's, or data.family for data=file."""
    return d.family if d.name == "file" else d.name


def family_kwargs(d: DictConfig) -> dict[str, Any]:
    """The family's own arguments (its ``Args`` fields) that ``data.*`` sets, as plain values."""
    cls = FAMILIES.get(family_of(d) or "")
    if cls is None:
        return {}
    out = {}
    for k in cls.Args.names():
        v = d.get(k)
        if v is not None:
            out[k] = list(v) if not isinstance(v, str | int | float | bool) else v
    return out


def make_truth(cfg: DictConfig) -> Pushforward:
    """The true pushforward of a (validated or saved) config: the seed's ``instance`` stream."""
    d, inst = cfg.data, cfg.data.instance
    return make_instance(d.name, d.latent_dim, d.out_dim, kind=inst.kind, sigma=inst.sigma, base=inst.base,
                         path=inst.path, kappa=inst.get("kappa"), generator=torch_generator(cfg.seed, "instance"),
                         **family_kwargs(d))


class Data(NamedTuple):
    """The true pushforward (None for the user's samples) and the three disjoint splits (float64)."""

    truth: Any
    x_train: torch.Tensor
    x_val: torch.Tensor | None  # None when data.n_val = 0
    x_test: torch.Tensor


def make_data(cfg: DictConfig) -> Data:
    """Train / validation / test samples, each from its own seeded stream (or carved from data=file).

    Only the test split's final evaluation reads ``x_test``; every selection (checkpoint,
    hyperparameters, early stop) reads ``x_val``.
    """
    d = cfg.data
    if d.name == "file":
        from pfbench.userdata import load_samples, split_samples

        x = load_samples(d.path, d.key)
        x_train, x_test, x_val = split_samples(
            x, n_test=d.n_test, n_train=d.n_train, min_train=max(2, cfg.model.train.batch_size // 8),
            generator=numpy_generator(cfg.seed, "file_split"), path=d.path, out_dim=d.out_dim, n_val=d.n_val)
        d.out_dim = int(x.shape[1])
        return Data(None, x_train, x_val, x_test)
    truth = make_truth(cfg)
    x_train = truth.sample_batched(d.n_train, torch_generator(cfg.seed, "train"))
    x_test = truth.sample_batched(d.n_test, torch_generator(cfg.seed, "test"))
    x_val = truth.sample_batched(d.n_val, torch_generator(cfg.seed, "val")) if d.n_val else None
    return Data(truth, x_train, x_val, x_test)

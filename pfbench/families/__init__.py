"""Ground-truth pushforward families; each class is also a trainable (well-specified) generator.

A family is one module, ``pfbench/families/<name>.py``: its :class:`Pushforward` subclass, its
arguments (a :class:`FamilyArgs` dataclass, validated as ``data.<field>``), its aligned parameter
error (its symmetry group), its architecture check and its instance recipes. :data:`FAMILIES` is
the one line a new family adds (see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from pfbench import ConfigError
from pfbench.families.base import FamilyArgs, Pushforward, load_param_file
from pfbench.families.polynomial import LowRankPolynomialPushforward
from pfbench.families.quadratic import QuadraticPushforward, sym
from pfbench.families.relu import OneLayerReLUPushforward
from pfbench.families.relu_deep import DeepReLUPushforward
from pfbench.families.sigmoid import SigmoidPushforward

#: family name (the ``data=`` option) -> class. One line per family.
FAMILIES: dict[str, type[Pushforward]] = {
    "quadratic": QuadraticPushforward,
    "polynomial": LowRankPolynomialPushforward,
    "relu": OneLayerReLUPushforward,
    "relu_deep": DeepReLUPushforward,
    "sigmoid": SigmoidPushforward,
}


def family_class(name: str) -> type[Pushforward]:
    if name not in FAMILIES:
        raise ConfigError(f"unknown family '{name}'; choose one of {sorted(FAMILIES)}")
    return FAMILIES[name]


def build_family(name: str, latent_dim: int, out_dim: int, dtype: torch.dtype = torch.float32,
                 **kwargs: Any) -> Pushforward:
    """A fresh instance of family ``name`` (parameters from a fixed default draw; call reset_random_).

    ``kwargs`` may hold any keys: the family's own arguments (``family_class(name).Args``) that are
    set are checked and used, the rest ignored.
    """
    cls = family_class(name)
    if int(latent_dim) < 1 or int(out_dim) < 1:
        raise ConfigError(f"data.latent_dim={latent_dim} and data.out_dim={out_dim} must both be >= 1")
    args = cls.Args.from_kwargs(kwargs)
    given = {k: v for k, v in args.given().items() if kwargs.get(k) is not None}
    return cls(latent_dim, out_dim, dtype=dtype, **given)


def make_instance(name: str, latent_dim: int, out_dim: int, *, kind: str = "random", sigma: float = 0.0,
                  base: str = "random", path: str | None = None, generator: torch.Generator,
                  kappa: float | None = None, dtype: torch.dtype = torch.float64, **kwargs: Any) -> Pushforward:
    """The true distribution F*: ``random``, ``smoothed`` (base + N(0, sigma^2) per entry), ``file``,
    or a recipe of the family's own (its ``recipes``, e.g. ``wds`` for the one-layer ReLU).

    ``base`` (for smoothed) is ``random`` (a random instance), ``zero`` (all parameters 0, so the
    instance is pure Gaussian noise of scale sigma) or ``file`` (parameters from ``path``).
    """
    cls = family_class(name)
    if kind in cls.recipes:
        model = cls.recipes[kind](latent_dim, out_dim, generator=generator, kappa=kappa, dtype=dtype, **kwargs)
        for p in model.parameters():
            p.requires_grad_(False)
        return model
    owners = [n for n, c in FAMILIES.items() if kind in c.recipes]
    if owners:
        raise ConfigError(f"data.instance.kind={kind} is the recipe of data={'|'.join(owners)}; it does not "
                          f"apply to {name}")
    model = build_family(name, latent_dim, out_dim, dtype=dtype, **kwargs)
    if kind not in {"random", "smoothed", "file"}:
        extra = sorted({k for c in FAMILIES.values() for k in c.recipes})
        kinds = ", ".join(["random", "smoothed", "file", *extra])
        raise ConfigError(f"data.instance.kind='{kind}' is not one of {kinds}")
    if sigma is None or float(sigma) < 0:
        raise ConfigError(f"data.instance.sigma={sigma} must be >= 0 (it is a noise level)")
    src = base if kind == "smoothed" else kind
    if src == "random":
        model.reset_random_(generator)
    elif src == "file":
        if not path:
            raise ConfigError("data.instance.path is required for instance kind/base 'file'")
        model.set_params(load_param_file(path))
    elif src == "zero":
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
    else:
        raise ConfigError(f"data.instance.base='{base}' is not one of random, zero, file")
    if kind == "smoothed":
        model.perturb_(float(sigma), generator)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def parameter_error(family: str, true: Mapping[str, Any], est: Mapping[str, Any], *, restarts: int = 5,
                    seed: int = 0, **args: Any) -> dict[str, Any]:
    """Gauge-aligned parameter error of ``est`` against ``true`` (both as ``params()`` returns them).

    ``param_error`` is always the headline: the relative Frobenius distance of all parameters after
    alignment over the family's symmetry group (MATH.md section 8); family-specific keys (prefixed
    ``param_error_``) come beside it. ``args`` are the family's arguments (``degree=`` for the
    polynomial family; defaults otherwise). Raises :class:`pfbench.ConfigError` for an unknown
    family, missing keys, mismatched shapes or non-finite parameters.
    """
    cls = family_class(family)
    missing = [k for k in cls.aligned_error_needs if args.get(k) is None]
    if missing:
        raise ConfigError(f"{family} parameter error needs {', '.join(f'{k}=<value>' for k in missing)} "
                          f"(the family's {'/'.join(missing)} attribute: the parameters alone do not say)")
    return cls.aligned_error(true, est, args=cls.Args.from_kwargs(args), restarts=restarts, seed=seed)


__all__ = [
    "FAMILIES", "FamilyArgs", "Pushforward", "QuadraticPushforward", "LowRankPolynomialPushforward",
    "OneLayerReLUPushforward", "DeepReLUPushforward", "build_family", "family_class", "make_instance",
    "parameter_error", "sym",
]

"""Ground-truth pushforward families; each class is also a trainable (well-specified) generator."""

from __future__ import annotations

from typing import Any

import torch

from pfbench import ConfigError
from pfbench.families.base import Pushforward, load_param_file
from pfbench.families.polynomial import LowRankPolynomialPushforward
from pfbench.families.quadratic import QuadraticPushforward, sym
from pfbench.families.relu import DeepReLUPushforward, OneLayerReLUPushforward

#: family name (the ``data=`` option) -> class. One line per family.
FAMILIES: dict[str, type[Pushforward]] = {
    "quadratic": QuadraticPushforward,
    "polynomial": LowRankPolynomialPushforward,
    "relu": OneLayerReLUPushforward,
    "relu_deep": DeepReLUPushforward,
}

#: constructor arguments each family takes beyond latent_dim and out_dim
FAMILY_KWARGS: dict[str, tuple[str, ...]] = {
    "quadratic": (),
    "polynomial": ("degree", "rank"),
    "relu": (),
    "relu_deep": ("hidden", "bias", "output_relu"),
}


def build_family(name: str, latent_dim: int, out_dim: int, dtype: torch.dtype = torch.float32,
                 **kwargs: Any) -> Pushforward:
    """A fresh instance of family ``name`` (parameters from a fixed default draw; call reset_random_)."""
    if name not in FAMILIES:
        raise ConfigError(f"unknown family '{name}'; choose one of {sorted(FAMILIES)}")
    if int(latent_dim) < 1 or int(out_dim) < 1:
        raise ConfigError(f"data.latent_dim={latent_dim} and data.out_dim={out_dim} must both be >= 1")
    extra = {k: kwargs[k] for k in FAMILY_KWARGS[name] if k in kwargs and kwargs[k] is not None}
    if "hidden" in extra:
        extra["hidden"] = [int(h) for h in extra["hidden"]]
        if any(h < 1 for h in extra["hidden"]):
            raise ConfigError(f"data.hidden={extra['hidden']}: every hidden width must be >= 1")
    for key in ("degree", "rank"):
        if key in extra and int(extra[key]) < 1:
            raise ConfigError(f"data.{key}={extra[key]} must be >= 1")
    return FAMILIES[name](latent_dim, out_dim, dtype=dtype, **extra)


def make_instance(name: str, latent_dim: int, out_dim: int, *, kind: str = "random", sigma: float = 0.0,
                  base: str = "random", path: str | None = None, generator: torch.Generator,
                  kappa: float | None = None, dtype: torch.dtype = torch.float64, **kwargs: Any) -> Pushforward:
    """The true distribution F*: ``random``, ``smoothed`` (base + N(0, sigma^2) per entry) or ``file``.

    ``base`` (for smoothed) is ``random`` (a random instance), ``zero`` (all parameters 0, so the
    instance is pure Gaussian noise of scale sigma) or ``file`` (parameters from ``path``).
    """
    if kind == "wds":  # Wu-Dimakis-Sanghavi Figure 1 recipe: W with condition number kappa of W W^T
        if name != "relu":
            raise ConfigError(f"data.instance.kind=wds is the one-layer ReLU recipe; it does not apply to {name}")
        from pfbench.families.relu_instances import wds_instance

        model = wds_instance(out_dim, latent_dim, 1.0 if kappa is None else float(kappa), generator=generator)
        for p in model.parameters():
            p.requires_grad_(False)
        return model
    model = build_family(name, latent_dim, out_dim, dtype=dtype, **kwargs)
    if kind not in {"random", "smoothed", "file"}:
        raise ConfigError(f"data.instance.kind='{kind}' is not one of random, smoothed, file, wds")
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


__all__ = [
    "FAMILIES", "Pushforward", "QuadraticPushforward", "LowRankPolynomialPushforward",
    "OneLayerReLUPushforward", "DeepReLUPushforward", "build_family", "make_instance", "sym",
]

"""The pushforward interface shared by true distributions, learned generators and estimators."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from pfbench import ConfigError


@dataclass
class FamilyArgs:
    """A family's constructor arguments beyond latent_dim and out_dim (``data.<field>`` in the config).

    Each family subclasses it with its own fields and defaults (``degree``, ``rank``, ``hidden``, ...);
    the config validates ``data.*`` against it (unknown keys and wrong types are refused by
    OmegaConf, ranges by :meth:`check`). This base has no fields.
    """

    def check(self) -> None:
        """Raise a one-line :class:`pfbench.ConfigError` naming ``data.<field>`` for a value out of range."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> FamilyArgs:
        """The checked arguments from a mapping: this family's keys that are set (not None); others are ignored."""
        args = cls(**{k: kwargs[k] for k in cls.names() if kwargs.get(k) is not None})
        args.check()
        return args

    def given(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.names()}


class Pushforward(nn.Module):
    """A distribution x = F(z), z ~ N(0, I_latent_dim), with F a torch module.

    Subclasses define ``forward(z)`` (shape ``(n, latent_dim) -> (n, out_dim)``) and
    ``params()`` (the named parameters that the gauge-aligned error compares). The same
    class serves as the frozen ground truth and as a well-specified trainable generator.

    A family (a registered subclass, :data:`pfbench.families.FAMILIES`) also owns what is known
    about it: ``Args`` (its constructor arguments as a :class:`FamilyArgs` dataclass),
    :meth:`aligned_error` (its parameter error modulo its symmetry group), :meth:`architecture_mismatch`
    (whether another generator has its form and shape), ``recipes`` (instance kinds beyond
    random / smoothed / file) and ``is_relu_net`` (downstream tasks that need ReLU layers ask it).
    """

    family: str = "pushforward"
    latent_dim: int
    out_dim: int
    Args: ClassVar[type[FamilyArgs]] = FamilyArgs
    #: extra ``data.instance.kind`` recipes: kind -> function(latent_dim, out_dim, *, generator, kappa, dtype)
    recipes: ClassVar[dict[str, Callable[..., Pushforward]]] = {}
    #: a ReLU network whose layers the inversion task can read (``layers`` or ``W``/``b``)
    is_relu_net: ClassVar[bool] = False
    #: arguments the aligned error reads that ``params()`` does not carry (e.g. the degree)
    aligned_error_needs: ClassVar[tuple[str, ...]] = ()

    def family_args(self) -> FamilyArgs:
        """This instance's constructor arguments (beyond its dimensions)."""
        return self.Args(**{k: getattr(self, k) for k in self.Args.names()})

    @classmethod
    def aligned_error(cls, true: Mapping[str, Any], est: Mapping[str, Any], *, args: FamilyArgs,
                      restarts: int, seed: int) -> dict[str, Any]:
        """Parameter error of ``est`` against ``true`` (both as :meth:`params` returns them) modulo the
        family's symmetry group: ``param_error`` (relative, all parameters) and family-specific
        ``param_error_*`` keys. ``restarts`` and ``seed`` drive non-convex searches over the group."""
        raise ConfigError(f"no aligned parameter error is defined for family '{cls.family}'")

    def architecture_mismatch(self, other: Pushforward) -> str | None:
        """Why ``other`` cannot be compared parameter by parameter with this instance, or None."""
        if type(other) is not type(self):
            return f"the generator ({type(other).__name__}) is not in the true family ({type(self).__name__})"
        why = self._args_mismatch(other)
        if why is not None:
            return why
        if other.latent_dim != self.latent_dim or other.out_dim != self.out_dim:
            return (f"(latent_dim, out_dim) differ: ({other.latent_dim}, {other.out_dim}) vs "
                    f"({self.latent_dim}, {self.out_dim})")
        return None

    @classmethod
    def _require(cls, true: Mapping[str, Any], est: Mapping[str, Any], keys: tuple[str, ...]) -> None:
        """ConfigError unless both parameter mappings hold ``keys``."""
        for tag, p in (("true", true), ("estimated", est)):
            missing = [k for k in keys if k not in p]
            if missing:
                raise ConfigError(f"{cls.family}: {tag} parameters lack {missing}; expected keys {list(keys)}")

    def _args_mismatch(self, other: Pushforward) -> str | None:
        """A family-specific architecture difference (degree, widths, ...) of a same-class ``other``."""
        return None

    def param_error(self, est: Pushforward, *, restarts: int = 5, seed: int = 0) -> dict[str, Any]:
        """:meth:`aligned_error` of a generator of this family against this instance as the truth."""
        return type(self).aligned_error(self.params(), est.params(), args=self.family_args(),
                                        restarts=restarts, seed=seed)

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        p = next(self.parameters())
        return torch.randn(n, self.latent_dim, generator=generator, dtype=p.dtype, device=p.device)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw n samples; all randomness comes from ``generator``."""
        return self(self.sample_latent(n, generator))

    @torch.no_grad()
    def sample_batched(self, n: int, generator: torch.Generator | None = None, batch: int = 65536):
        """Like :meth:`sample` without gradients, in chunks so memory stays bounded."""
        out = [self.sample(min(batch, n - i), generator) for i in range(0, n, batch)]
        return torch.cat(out) if out else torch.empty(0, self.out_dim)

    def params(self) -> dict[str, torch.Tensor]:
        """Named parameters in their canonical (gauge-carrying) form, detached."""
        return {k: v.detach().clone() for k, v in self.named_parameters()}

    @torch.no_grad()
    def set_params(self, values: dict[str, torch.Tensor | np.ndarray]) -> Pushforward:
        own = dict(self.named_parameters())
        missing = sorted(set(own) - set(values))
        if missing:
            raise ConfigError(f"{self.family}: parameters {missing} missing; expected keys {sorted(own)}")
        for k, p in own.items():
            v = torch.as_tensor(np.asarray(values[k]), dtype=p.dtype)
            if v.shape != p.shape:
                raise ConfigError(
                    f"{self.family}: parameter '{k}' has shape {tuple(v.shape)}, expected {tuple(p.shape)}"
                )
            if not torch.isfinite(v).all():
                raise ConfigError(f"{self.family}: parameter '{k}' has non-finite entries")
            p.copy_(v)
        return self

    @torch.no_grad()
    def perturb_(self, sigma: float, generator: torch.Generator) -> Pushforward:
        """Smoothed instance: add i.i.d. N(0, sigma^2) to every parameter entry (MATH section 1)."""
        for p in self.parameters():
            p.add_(sigma * torch.randn(p.shape, generator=generator, dtype=p.dtype))
        return self

    def reset_random_(self, generator: torch.Generator) -> Pushforward:  # pragma: no cover - abstract
        raise NotImplementedError

    def random_symmetry_(self, generator: torch.Generator) -> torch.Tensor:  # pragma: no cover - abstract
        """Apply a random element of the family's symmetry group to the parameters, in place.

        Returns the latent rotation R (latent_dim x latent_dim, orthogonal) with F_new(z) = F_old(R z)
        for every z: the distribution of x is unchanged, and the aligned error between the two is 0.
        """
        raise NotImplementedError


def random_rotation(k: int, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """A Haar-random element of O(k) (QR of a Gaussian matrix with the sign fix)."""
    q, r = torch.linalg.qr(torch.randn(k, k, generator=generator, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).to(dtype)

    def extra_repr(self) -> str:
        return f"latent_dim={self.latent_dim}, out_dim={self.out_dim}"


def load_param_file(path: str | Path) -> dict[str, np.ndarray]:
    """Read named parameters from ``.npz`` or ``.pt`` (a dict of tensors), never executing code.

    Every problem (missing, a directory, unreadable, pickled objects, not a dict of numeric arrays) is
    a one-line :class:`pfbench.ConfigError` naming the file: a bad input, not a failed run.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"data.instance.path={path} is a directory; point it at the .npz/.pt parameter file")
    if not path.is_file():
        raise ConfigError(f"instance parameter file {path} does not exist; set data.instance.path")
    if path.suffix not in {".npz", ".pt", ".pth"}:
        raise ConfigError(f"{path}: unsupported parameter file type '{path.suffix}'; use .npz or .pt")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                out = {k: f[k] for k in f.files}
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(obj, dict):
                raise ConfigError(f"{path}: expected a dict of named tensors, got {type(obj).__name__}")
            out = {str(k): (v.numpy() if torch.is_tensor(v) else np.asarray(v)) for k, v in obj.items()}
    except ConfigError:
        raise
    except Exception as e:  # truncated, foreign, or a pickle that would run code (weights_only refuses it)
        raise ConfigError(f"instance parameter file {path} is unreadable as {path.suffix} ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:100] if str(e) else ''}); save the parameters with "
                          f"numpy.savez or torch.save of a dict of tensors") from None
    for k, v in out.items():
        if not (np.issubdtype(v.dtype, np.number) or v.dtype == bool) or np.issubdtype(v.dtype, np.complexfloating):
            raise ConfigError(f"{path}: parameter '{k}' holds {v.dtype} values, not real numbers")
    return out

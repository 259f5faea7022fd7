"""The pushforward interface shared by true distributions, learned generators and estimators."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from pfbench import ConfigError


class Pushforward(nn.Module):
    """A distribution x = F(z), z ~ N(0, I_latent_dim), with F a torch module.

    Subclasses define ``forward(z)`` (shape ``(n, latent_dim) -> (n, out_dim)``) and
    ``params()`` (the named parameters that the gauge-aligned error compares). The same
    class serves as the frozen ground truth and as a well-specified trainable generator.
    """

    family: str = "pushforward"
    latent_dim: int
    out_dim: int

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

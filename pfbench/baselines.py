"""Reference methods that calibrate every metric: ``+model=memorize``, ``+model=gaussian``, ``+model=truth``.

They follow the estimator contract (:mod:`pfbench.recovery`: ``__init__`` stores arguments,
``validate()``, ``fit(X)`` sets ``pushforward_`` and ``info_``) and run through the same evaluation
as every method, so each metric can be read against them:

- ``memorize``: the training set replayed, F(z) = x_train[floor(n Phi(z))] with z ~ N(0, 1) (a
  pushforward of a Gaussian, like every generator). Its W1 sits at the finite-sample floor (it *is*
  a sample of the truth); only a memorization check can tell it from a good generator;
- ``gaussian``: N(mean, covariance) of the training set, F(z) = mean + C^{1/2} z: what first and
  second moments alone buy;
- ``truth``: the true pushforward itself (fresh samples): the floor, as a sanity row; its parameter
  error is 0 and every verdict should say "indistinguishable" at the nominal rate.

None of them is tuned or trained; their ``fit_time_s`` is the cost of reading the training set.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from pfbench import ConfigError
from pfbench.families.base import Pushforward

__all__ = ["MemorizedSample", "GaussianFit", "Memorizer", "GaussianBaseline", "TruthBaseline", "PUSHFORWARDS"]


class MemorizedSample(Pushforward):
    """x = rows[floor(n Phi(z))], z ~ N(0, 1): uniform resampling of stored rows (a replayed training set)."""

    family = "memorize"

    def __init__(self, latent_dim: int = 1, out_dim: int = 1, n_rows: int = 1, dtype: torch.dtype = torch.float64):
        super().__init__()
        self.latent_dim, self.out_dim = 1, int(out_dim)
        # a (frozen) parameter, not a buffer: everything that asks a generator for its dtype and device
        # through next(parameters()) works unchanged
        self.rows = nn.Parameter(torch.zeros(int(n_rows), self.out_dim, dtype=dtype), requires_grad=False)

    @classmethod
    def of(cls, x: torch.Tensor) -> MemorizedSample:
        m = cls(1, x.shape[1], x.shape[0], dtype=x.dtype)
        with torch.no_grad():
            m.rows.copy_(x)
        return m

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, 1, generator=generator, dtype=self.rows.dtype, device=self.rows.device)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        n = self.rows.shape[0]
        u = 0.5 * torch.special.erfc(-z[:, 0].to(self.rows.dtype) / math.sqrt(2.0))  # Phi(z), uniform on (0, 1)
        idx = torch.clamp((u * n).long(), 0, n - 1)
        return self.rows[idx]

    def reset_random_(self, generator: torch.Generator) -> MemorizedSample:
        return self

    def constructor_kwargs(self) -> dict[str, Any]:
        return {"n_rows": int(self.rows.shape[0])}

    def extra_repr(self) -> str:
        return f"rows={self.rows.shape[0]}, out_dim={self.out_dim}"


class GaussianFit(Pushforward):
    """x = mean + C^{1/2} z, z ~ N(0, I_d): the Gaussian with a given mean and covariance (C^{1/2} symmetric PSD)."""

    family = "gaussian"

    def __init__(self, latent_dim: int, out_dim: int, dtype: torch.dtype = torch.float64):
        super().__init__()
        self.latent_dim, self.out_dim = int(latent_dim), int(out_dim)
        self.mean = nn.Parameter(torch.zeros(self.out_dim, dtype=dtype))
        self.root = nn.Parameter(torch.eye(self.out_dim, self.latent_dim, dtype=dtype))

    @classmethod
    def of(cls, x: torch.Tensor) -> GaussianFit:
        x = x.to(torch.float64)
        d = x.shape[1]
        mean = x.mean(0)
        cov = torch.cov(x.T).reshape(d, d)
        w, v = torch.linalg.eigh(cov)
        root = (v * w.clamp_min(0).sqrt()) @ v.T
        g = cls(d, d)
        with torch.no_grad():
            g.mean.copy_(mean)
            g.root.copy_(root)
        return g

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.mean, z, self.root.T)

    def reset_random_(self, generator: torch.Generator) -> GaussianFit:
        return self

    def constructor_kwargs(self) -> dict[str, Any]:
        return {}


#: family name in generator.pt -> class, for pfbench.runs.load_generator
PUSHFORWARDS: dict[str, type[Pushforward]] = {"memorize": MemorizedSample, "gaussian": GaussianFit}


class _Baseline:
    """Shared estimator-contract plumbing: arguments stored, nothing to refuse, fit times recorded."""

    needs_truth = False

    def __init__(self, *, latent_dim: int, out_dim: int, seed: int = 0, **family_args: Any):
        self.latent_dim, self.out_dim, self.seed = latent_dim, out_dim, seed
        self.family_args = family_args  # accepted for every family, unused

    def validate(self) -> None:
        return None

    def _fit(self, x: torch.Tensor) -> Pushforward:  # pragma: no cover - abstract
        raise NotImplementedError

    def fit(self, X: Any) -> _Baseline:
        self.validate()
        t0 = time.perf_counter()
        x = torch.as_tensor(np.asarray(X, dtype=np.float64))
        if x.ndim != 2 or x.shape[0] < 2 or not torch.isfinite(x).all():
            raise ConfigError(f"{type(self).__name__}: the training sample must be a finite (n >= 2, d) matrix, "
                              f"got shape {tuple(x.shape)}")
        self.pushforward_ = self._fit(x)
        for p in self.pushforward_.parameters():
            p.requires_grad_(False)
        self.info_ = {"converged": True, "baseline": type(self).__doc__.splitlines()[0],
                      "fit_time_s": time.perf_counter() - t0}
        return self


class Memorizer(_Baseline):
    """Replays the training set (uniform resampling of its rows)."""

    def _fit(self, x: torch.Tensor) -> Pushforward:
        return MemorizedSample.of(x)


class GaussianBaseline(_Baseline):
    """The Gaussian with the training set's mean and covariance."""

    def _fit(self, x: torch.Tensor) -> Pushforward:
        return GaussianFit.of(x)


class TruthBaseline(_Baseline):
    """The true pushforward itself (the entry point hands it over as ``truth_``)."""

    needs_truth = True
    truth_: Pushforward | None = None

    def _fit(self, x: torch.Tensor) -> Pushforward:
        if self.truth_ is None:  # the registry refuses data=file before this; a direct user may not
            raise ConfigError("+model=truth needs the true distribution (set truth_ before fit); on your own "
                              "samples use +model=memorize or +model=gaussian as references")
        return copy.deepcopy(self.truth_)

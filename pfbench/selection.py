"""Model selection for learned generators from validation data only.

A training run with ``model.train.eval_every`` set evaluates its generator every ``eval_every``
steps (:class:`Monitor`): the selection statistics of :class:`ValidationStatistics` (computed from
the validation split and the generator, never from the test split or the true parameters), and,
for the record only, the parameter error against the truth. The best checkpoint by
``model.train.select_by`` is kept beside the final one; optional early stopping (patience counted
in evaluations) and a Polyak/EMA average of the generator (``model.train.ema``), which is
evaluated and selectable like the raw generator.

Statistics (both on validation-standardized coordinates z = (x - mean_val) / std_val, generated
points from latents fixed once per run so two checkpoints differ only by the generator):

- ``val_moments``: sqrt(|d1|^2 / d + |D2|_F^2 / d^2 + mean_k d3_k^2), with d1 the generated mean of
  z, D2_ij = (E_gen[z_i z_j] - E_val[z_i z_j]) / sd_val(z_i z_j) and
  d3_k = (E_gen[(u_k.z)^3] - E_val[(u_k.z)^3]) / sd_val((u_k.z)^3) over K fixed unit directions u_k:
  a discrepancy of the first three moments (those that identify the quadratic family, MATH.md
  section 2), each in units of its summand's standard deviation on the validation sample, so
  sampling noise is about sqrt(1/n_val + 1/n_generated) for every term, heavy tails or not;
- ``val_sw``: sliced Wasserstein-1 between generated and validation points in z coordinates.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from pfbench import ConfigError
from pfbench.metrics import distances as D
from pfbench.seeding import numpy_generator, torch_generator

#: selection statistics, lower is better; ``model.train.select_by`` is one of these
STATISTICS = ("val_moments", "val_sw")


class ValidationStatistics:
    """The selection statistics of a generator against the validation sample ``x_val`` (n_val x d)."""

    def __init__(self, x_val: np.ndarray | torch.Tensor, seed: int, *, n_generated: int | None = None,
                 n_projections: int = 200, n_third: int = 200):
        x = x_val.detach().cpu().double().numpy() if isinstance(x_val, torch.Tensor) else np.asarray(x_val, float)
        if x.ndim != 2 or x.shape[0] < 2:
            raise ConfigError(f"the validation sample has shape {x.shape}; set data.n_val >= 2")
        self.n, self.d = x.shape
        self.n_generated = int(n_generated or self.n)
        self.seed = int(seed)
        self.mean = x.mean(0)
        std = x.std(0)
        self.std = np.maximum(std, 1e-12 * max(float(std.max()), 1e-300))
        z = self._standardize(x)
        self.z_val = z
        self.u = D.random_directions(self.d, n_third, numpy_generator(seed, "select_third"))
        self.dirs = D.random_directions(self.d, n_projections, numpy_generator(seed, "select_sw"))
        self.m2_val = z.T @ z / self.n
        p3 = (z @ self.u.T) ** 3
        self.m3_val = p3.mean(0)
        # per-sample standard deviations of each moment's summand: differences are in those units
        zz_sq = (z * z).T @ (z * z) / self.n  # E[z_i^2 z_j^2]
        self.s2_val = np.sqrt(np.maximum(zz_sq - self.m2_val**2, 1e-12))
        self.s3_val = np.maximum(p3.std(0), 1e-12)
        self._latent: dict[tuple, torch.Tensor] = {}

    def _standardize(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std

    def latents(self, model) -> torch.Tensor:
        """The run's fixed latents (stream ``select_latent``), on the model's device and dtype."""
        p = next(model.parameters())
        key = (model.latent_dim, str(p.device), p.dtype)
        if key not in self._latent:
            g = torch_generator(self.seed, "select_latent")
            self._latent[key] = torch.randn(self.n_generated, model.latent_dim, generator=g,
                                            dtype=torch.float64).to(device=p.device, dtype=p.dtype)
        return self._latent[key]

    @torch.no_grad()
    def generated(self, model) -> np.ndarray:
        was = model.training
        model.eval()
        try:
            out = model(self.latents(model))
        finally:
            model.train(was)
        return out.detach().cpu().double().numpy()

    def __call__(self, model) -> dict[str, float]:
        """{"val_moments": ..., "val_sw": ...}; inf when the generator's samples are not finite."""
        x = self.generated(model)
        if not np.isfinite(x).all():
            return {k: math.inf for k in STATISTICS}
        z = self._standardize(x)
        with np.errstate(over="ignore", invalid="ignore"):
            d1 = z.mean(0)
            d2 = (z.T @ z / z.shape[0] - self.m2_val) / self.s2_val
            d3 = (((z @ self.u.T) ** 3).mean(0) - self.m3_val) / self.s3_val
            mom = float(np.sqrt(d1 @ d1 / self.d + (d2 * d2).sum() / self.d**2 + (d3 @ d3) / d3.size))
        sw = D.sliced_wasserstein(z, self.z_val, p=1, directions=self.dirs) if math.isfinite(mom) else math.inf
        return {"val_moments": mom if math.isfinite(mom) else math.inf,
                "val_sw": float(sw) if math.isfinite(sw) else math.inf}


def spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman rank correlation of paired finite values (None with fewer than 3 pairs or a constant)."""
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None
             and math.isfinite(x) and math.isfinite(y)]
    if len(pairs) < 3:
        return None
    from scipy.stats import spearmanr

    x, y = zip(*pairs)
    if len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return float(spearmanr(x, y).statistic)


class Monitor:
    """Periodic evaluation, EMA, best-checkpoint selection and early stopping of one generator.

    ``stats`` reads validation data only; ``record`` (optional) adds numbers for the record, such as
    the parameter error against the truth, and is never consulted by the selection.
    """

    def __init__(self, generator: torch.nn.Module, *, stats: ValidationStatistics | None, eval_every: int | None,
                 select_by: str = "val_moments", patience: int | None = None, ema: float | None = None,
                 record: Callable[[torch.nn.Module], dict[str, Any]] | None = None):
        if select_by not in STATISTICS:
            raise ConfigError(f"model.train.select_by='{select_by}' must be one of {list(STATISTICS)}")
        if eval_every is not None and stats is None:
            raise ConfigError("model.train.eval_every needs a validation split; set data.n_val > 0")
        self.generator, self.stats, self.eval_every = generator, stats, eval_every
        self.select_by, self.patience, self.record = select_by, patience, record
        self.ema = None
        if ema:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(generator, multi_avg_fn=get_ema_multi_avg_fn(float(ema)))
            for p in self.ema.parameters():
                p.requires_grad_(False)
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None  # step, variant, value, state
        self.since_best = 0
        self.stopped_early: int | None = None
        self.eval_time_s = 0.0

    @property
    def ema_generator(self) -> torch.nn.Module | None:
        return None if self.ema is None else self.ema.module

    def after_step(self, step: int) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.generator)

    def due(self, step: int, last: int) -> bool:
        return self.eval_every is not None and (step % self.eval_every == 0 or step == last)

    def evaluate(self, step: int, elapsed_s: float) -> tuple[dict[str, Any], bool]:
        """Evaluate at ``step``; returns the history record and whether to stop early."""
        t0 = time.perf_counter()
        rec: dict[str, Any] = {"step": step, "elapsed_s": elapsed_s}
        variants = [("", self.generator)] + ([("ema_", self.ema_generator)] if self.ema is not None else [])
        improved = False
        for prefix, model in variants:
            vals = self.stats(model)
            rec.update({f"{prefix}{k}": v for k, v in vals.items()})
            if self.record is not None:
                rec.update({f"{prefix}{k}": v for k, v in self.record(model).items()})
            v = vals[self.select_by]
            if math.isfinite(v) and (self.best is None or v < self.best["value"]):
                self.best = {"step": step, "variant": "ema" if prefix else "raw", "value": v,
                             "state": copy.deepcopy({k: t.detach().cpu() for k, t in model.state_dict().items()})}
                improved = True
        self.history.append(rec)
        self.since_best = 0 if improved else self.since_best + 1
        stop = self.patience is not None and self.since_best >= self.patience
        if stop:
            self.stopped_early = step
        self.eval_time_s += time.perf_counter() - t0
        return rec, stop

    def selected_generator(self) -> torch.nn.Module | None:
        """A copy of the generator holding the selected checkpoint's parameters (None if none)."""
        if self.best is None:
            return None
        g = copy.deepcopy(self.generator).cpu()
        g.load_state_dict(self.best["state"])
        return g

    def summary(self) -> dict[str, Any]:
        """What metrics.json reports under ``selection`` (rank correlations over the raw evaluations)."""
        raw_pe = [r.get("param_error") for r in self.history]
        out: dict[str, Any] = {
            "statistic": self.select_by, "eval_every": self.eval_every, "n_evals": len(self.history),
            "step": None if self.best is None else self.best["step"],
            "variant": None if self.best is None else self.best["variant"],
            "value": None if self.best is None else self.best["value"],
            "early_stopped_step": self.stopped_early, "patience": self.patience,
            "rank_corr_with_param_error": {k: spearman([r.get(k) for r in self.history], raw_pe)
                                           for k in STATISTICS},
        }
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "best": self.best, "since_best": self.since_best,
                "stopped_early": self.stopped_early,
                "ema": None if self.ema is None else self.ema.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state.get("history") or [])
        self.best = state.get("best")
        self.since_best = int(state.get("since_best") or 0)
        self.stopped_early = state.get("stopped_early")
        if self.ema is not None:
            if state.get("ema") is None:
                raise ConfigError("the checkpoint has no EMA state but model.train.ema is set")
            self.ema.load_state_dict(state["ema"])

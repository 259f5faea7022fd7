"""The shared evaluation: every method, learned or provable, is judged by :func:`evaluate`.

For a fitted generator G (a :class:`~pfbench.families.Pushforward`) and a held-out true sample,
it reports each distance beside its noise floor (MATH.md section 7): ``<metric>`` is the distance
between G's samples and the true sample, ``<metric>_floor`` the same distance, at the same sample
sizes, between an independent true sample and the same true sample. A generator is
distinguishable from the truth at this sample size only where ``<metric>`` clearly exceeds
``<metric>_floor``. When G is in the true family, the gauge-aligned parameter error is added
(each family's ``aligned_error``, :mod:`pfbench.families`).

A single floor is one draw of that noise; the calibrated verdicts (issue 12) make it a distribution:
B = ``eval.<name>.null_draws`` values of each statistic under "the generator is the truth" (fresh
true samples when the truth is known, the floor sample being the first; permutations of pooled
samples otherwise or where cheaper), recorded as ``<metric>_floor_mean``, ``<metric>_floor_std``, a
one-sided ``<metric>_pvalue``, ``<metric>_z`` and a plain ``<metric>_verdict`` at level
``eval.alpha`` (:func:`calibrate`). The moment discrepancy (``moments``) and the memorization checks
(the data-copying test ``copying`` against the training sample, the birthday test ``support``) come
with verdicts too.

Every distance is one entry of :data:`REGISTRY` (:class:`Distance`: its function, its settings
dataclass, its record key). Settings come from the ``eval=`` config group
(conf/eval/{fast,default,full}.yaml), whose schema :data:`EvalConfig` has one block per registered
distance; missing keys take the schema's defaults (conf/eval/default.yaml's values), unknown keys,
wrong types and out-of-range values are one-line errors (:func:`resolve_eval_config`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import time
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from pfbench import ConfigError
from pfbench.families.base import Pushforward
from pfbench.metrics import distances as D
from pfbench.seeding import numpy_generator, torch_generator

__all__ = [
    "REGISTRY",
    "Distance",
    "EvalConfig",
    "CopyingConfig",
    "EvalContext",
    "MMDConfig",
    "MomentsConfig",
    "NNConfig",
    "ParamErrorConfig",
    "SWConfig",
    "SupportConfig",
    "W1Config",
    "W2Config",
    "calibrate",
    "eval_schema",
    "evaluate",
    "is_validated",
    "resolve_eval_config",
    "verdict",
]


# ---------------------------------------------------------------------------------------------
# Each distance's settings: one dataclass per eval.<name> block; defaults = conf/eval/default.yaml
# ---------------------------------------------------------------------------------------------


def _need_int(key: str, v: Any, lo: int, allow_none: bool = False) -> None:
    if v is None and allow_none:
        return
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ConfigError(f"{key}={v!r} must be an integer >= {lo}")


@dataclass
class W1Config:
    """eval.w1: exact W1 between empirical measures (POT network simplex, certified optimal)."""

    enabled: bool = True
    n: int = 2000  # points per side
    max_iter: int | None = None  # simplex iteration cap; null = max(1e6, 5000 (n + m))
    max_memory_gb: float | None = None  # refuse larger solves; null = half the available memory
    null_draws: int = 39  # B: null values (the floor and B - 1 more draws); 0 = no null, p or verdict
    null_n: int | None = 250  # points per side of the null and of the tested value; null = n

    def check(self, key: str) -> None:
        _need_int(f"{key}.n", self.n, 2)
        _need_int(f"{key}.max_iter", self.max_iter, 1, allow_none=True)
        if self.max_memory_gb is not None and self.max_memory_gb <= 0:
            raise ConfigError(f"{key}.max_memory_gb={self.max_memory_gb!r} must be a positive number or null")
        _need_int(f"{key}.null_draws", self.null_draws, 0)
        _need_int(f"{key}.null_n", self.null_n, 2, allow_none=True)


@dataclass
class W2Config(W1Config):
    """eval.w2: exact W2, the same solver."""

    n: int = 1000
    null_draws: int = 19
    null_n: int | None = 200


@dataclass
class SWConfig:
    """eval.sw: sliced Wasserstein, directions from the eval_sw stream."""

    enabled: bool = True
    n: int = 2000
    n_projections: int = 200
    p: int = 1
    null_draws: int = 99  # B: the floor and B - 1 fresh true (or permuted) samples, same directions

    def check(self, key: str) -> None:
        _need_int(f"{key}.n", self.n, 2)
        _need_int(f"{key}.n_projections", self.n_projections, 1)
        _need_int(f"{key}.null_draws", self.null_draws, 0)
        if self.p not in (1, 2):
            raise ConfigError(f"{key}.p={self.p!r} must be 1 or 2")


@dataclass
class MMDConfig:
    """eval.mmd: unbiased MMD^2, Gaussian kernel, median-heuristic bandwidth on the true sample."""

    enabled: bool = True
    n: int = 2000
    null_draws: int = 199  # B: the floor and B - 1 permutations of the pooled generated and floor samples

    def check(self, key: str) -> None:
        _need_int(f"{key}.n", self.n, 2)
        _need_int(f"{key}.null_draws", self.null_draws, 0)


@dataclass
class NNConfig:
    """eval.nn: neural-net distance, 1-Lipschitz critic trained on train_fraction of n points per side."""

    enabled: bool = True
    n: int = 2000
    width: int = 64
    depth: int = 2
    steps: int = 300
    lr: float = 0.002
    batch_size: int = 256
    train_fraction: float = 0.5
    null_draws: int = 999  # B: permutations of the trained critic's held-out values

    def check(self, key: str) -> None:
        _need_int(f"{key}.n", self.n, 4)
        _need_int(f"{key}.null_draws", self.null_draws, 0)
        _need_int(f"{key}.width", self.width, 1)
        _need_int(f"{key}.depth", self.depth, 0)
        _need_int(f"{key}.steps", self.steps, 0)
        _need_int(f"{key}.batch_size", self.batch_size, 1)
        if not self.lr > 0:
            raise ConfigError(f"{key}.lr={self.lr!r} must be a positive number")
        if not 0 < self.train_fraction < 1:
            raise ConfigError(f"{key}.train_fraction={self.train_fraction!r} must be a number in (0, 1)")


@dataclass
class SupportConfig:
    """eval.support: birthday-paradox support size, threshold calibrated on the true sample."""

    enabled: bool = True
    n_batches: int = 20
    max_batch: int | None = None  # null = a quarter of the smallest sample

    def check(self, key: str) -> None:
        _need_int(f"{key}.n_batches", self.n_batches, 1)
        _need_int(f"{key}.max_batch", self.max_batch, 2, allow_none=True)


@dataclass
class MomentsConfig:
    """eval.moments: unbiased squared relative errors of the mean, covariance and third cumulant."""

    null_tests: ClassVar[int] = 3  # its p-value is Bonferroni over 3 parts: (null_draws + 1) alpha >= 3

    enabled: bool = True
    n: int = 2000
    folds: int = 10  # J blocks per sample for the unbiased cross-fold estimates
    sketch_dim: int = 64  # compare on a random projection to this many coordinates when d is larger
    n_directions: int = 64  # K random unit directions sketching the third cumulant
    null_draws: int = 199  # B: the floor and B - 1 fresh true (or permuted) samples

    def check(self, key: str) -> None:
        _need_int(f"{key}.n", self.n, 6)
        _need_int(f"{key}.folds", self.folds, 2)
        if self.folds * 3 > self.n:
            raise ConfigError(f"{key}.folds={self.folds!r} needs {key}.n >= 3 folds = {3 * self.folds}, got {self.n}")
        _need_int(f"{key}.sketch_dim", self.sketch_dim, 1)
        _need_int(f"{key}.n_directions", self.n_directions, 1)
        _need_int(f"{key}.null_draws", self.null_draws, 0)


@dataclass
class CopyingConfig:
    """eval.copying: Meehan et al.'s data-copying test C_T against the training sample."""

    enabled: bool = True
    n: int = 2000  # generated and held-out points
    cells: int = 10  # k-means cells on the training sample
    min_cell: int = 20  # a cell counts when it holds this many generated points (the paper's tau)
    kmeans_iters: int = 20
    max_train: int | None = None  # training points used (the first ones); null = all

    def check(self, key: str) -> None:
        _need_int(f"{key}.n", self.n, 2)
        _need_int(f"{key}.cells", self.cells, 1)
        _need_int(f"{key}.min_cell", self.min_cell, 1)
        _need_int(f"{key}.kmeans_iters", self.kmeans_iters, 1)
        _need_int(f"{key}.max_train", self.max_train, 1, allow_none=True)


@dataclass
class ParamErrorConfig:
    """eval.param_error: gauge-aligned parameter error when the generator is in the true family."""

    enabled: bool = True
    restarts: int = 5

    def check(self, key: str) -> None:
        _need_int(f"{key}.restarts", self.restarts, 0)


# ---------------------------------------------------------------------------------------------
# The distances: a function of (settings, generated, reference, floor sample, seed) each
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Distance:
    """One distance of the shared evaluation, reported beside its noise floor.

    A new distance is its function, one entry in :data:`REGISTRY` and its block in conf/eval/*.yaml;
    the config schema (:func:`eval_schema`), the evaluation, its non-finite record and the report's
    table follow from the entry.
    """

    name: str  # its settings are eval.<name>, a ``config`` block
    config: type  # dataclass of its settings: ``enabled``, and ``check(self, key)`` for the ranges
    key: str  # record keys <key> and <key>_floor; its stage (timing <key>_time_s)
    #: ``run(settings, x_gen, x_ref, x_floor, seed) -> record``: the metric on x_gen and its floor on
    #: x_floor, both against x_ref, from the seed's own named streams
    run: Callable[..., dict[str, Any]]
    compare_in_report: bool = True  # a column, beside its floor, of the report's per-family table
    nonfinite_keys: tuple[str, ...] | None = None  # null for non-finite samples; None: (key, key_floor)
    #: ``preflight(settings, "eval.<name>", n)``: checks before training against the largest sample
    #: it will see, n = min(eval.n_samples, data.n_test) (the exact solves' memory)
    preflight: Callable[[Any, str, int], None] | None = None
    #: ``run`` also takes ``ctx=`` (:class:`EvalContext`: the level alpha, fresh true draws for its
    #: null distribution, the training sample) and calibrates its value (:func:`calibrate`)
    context: bool = False

    @property
    def null_keys(self) -> tuple[str, ...]:
        return self.nonfinite_keys if self.nonfinite_keys is not None else (self.key, f"{self.key}_floor")


@dataclass(frozen=True)
class EvalContext:
    """What a calibrated distance (``Distance.context``) needs beyond its samples.

    ``fresh(b)``, b >= 1: the b-th extra true sample (``n_samples`` points from the truth, stream
    ``eval_null_<b>``, the same for every distance, like the floor sample), or None without a true
    generator (user data), where null distributions permute the pooled generated and floor samples.
    """

    alpha: float = 0.05  # level of the verdicts
    fresh: Callable[[int], np.ndarray] | None = None
    x_train: np.ndarray | None = None  # the training sample (the data-copying test), or None
    #: results that do not read the generated sample (floors, references, fresh-draw nulls), kept across
    #: :func:`evaluate` calls on the same data, seed and settings (its ``memo=``); None: computed each time
    memo: dict[str, Any] | None = None

    def once(self, name: str, fn: Callable[[], Any]) -> Any:
        """``fn()``, or its result under ``name`` from an earlier call sharing ``memo``. Only for work
        that never reads x_gen: the value is the same whichever generator is evaluated."""
        if self.memo is None:
            return fn()
        if name not in self.memo:
            self.memo[name] = fn()
        return self.memo[name]


def _null_samples(ctx: EvalContext, key: str, seed: int, x_gen: np.ndarray, x_floor: np.ndarray, n: int,
                  draws: int) -> Iterator[np.ndarray]:
    """The samples of null draws 1 .. draws - 1, n points each (draw 0 is the floor sample x_floor[:n]):
    fresh true samples, or n of the 2n pooled x_gen[:n], x_floor[:n] (stream ``eval_null_<key>``)."""
    if ctx.fresh is not None:
        for b in range(1, draws):
            yield ctx.fresh(b)[:n]
        return
    pool = np.concatenate([x_gen[:n], x_floor[:n]])
    rng = numpy_generator(seed, f"eval_null_{key}")
    for _ in range(1, draws):
        yield pool[rng.permutation(2 * n)[:n]]


def _null_values(ctx: EvalContext, key: str, seed: int, x_gen: np.ndarray, x_floor: np.ndarray, n: int,
                 draws: int, stat: Callable[[np.ndarray], Any]) -> list[Any]:
    """``stat`` of null draws 1 .. draws - 1 (:func:`_null_samples`); fresh true draws do not involve the
    generator, so they are computed once per ``ctx.memo``, while permutations pool x_gen and are not."""
    def run() -> list[Any]:
        return [stat(xs) for xs in _null_samples(ctx, key, seed, x_gen, x_floor, n, draws)]

    return ctx.once(f"{key}_null@{n}", run) if ctx.fresh is not None else run()


def _permutation_text(n: int, draws: int) -> str:
    return (f"permutation of pooled samples: B = {draws}, the floor sample and {draws - 1} random n-subsets of "
            f"the generated and floor samples pooled (n = {n}), against the fixed reference")


def _null_text(ctx: EvalContext, n: int, draws: int) -> str:
    if ctx.fresh is not None:
        return (f"fresh true draws: B = {draws}, the floor sample and {draws - 1} more true samples "
                f"(streams eval_null_<b>), n = {n} points each, against the same reference")
    return _permutation_text(n, draws)


def _pvalue(observed: float, null: np.ndarray) -> float:
    """One-sided: (1 + #{null >= observed}) / (1 + B)."""
    return float((1 + np.count_nonzero(null >= observed)) / (1 + null.size))


def verdict(p: float | None, alpha: float, n: int, draws: int | None = None, why: str | None = None) -> str:
    """The plain-words verdict of a one-sided p-value at level alpha and sample size n."""
    if p is None:
        return f"undetermined: {why or 'no p-value'}"
    floor = draws is not None and p <= 1.0 / (1 + draws) + 1e-12
    tail = f", the smallest with B = {draws}" if floor else ""
    if p <= alpha:
        return f"different from the truth at n = {n} (p = {p:.2g}{tail})"
    return f"indistinguishable from the truth at n = {n} (p = {p:.2g})"


def calibrate(key: str, observed: float | None, null: list[float | None], *, alpha: float, n: int,
              how: str, why: str | None = None) -> dict[str, Any]:
    """``<key>_null`` (how it was drawn), ``<key>_null_draws`` (B), ``<key>_floor_mean``,
    ``<key>_floor_std``, ``<key>_pvalue`` = (1 + #{null >= observed}) / (1 + B), ``<key>_z`` = (observed -
    mean) / std and ``<key>_verdict`` at level alpha; null values that are None (a solve not certified
    optimal) are left out of B."""
    vals = np.array([v for v in null if v is not None and math.isfinite(v)], dtype=np.float64)
    out: dict[str, Any] = {f"{key}_null": how, f"{key}_null_draws": int(vals.size),
                           f"{key}_floor_mean": float(vals.mean()) if vals.size else None,
                           f"{key}_floor_std": float(vals.std(ddof=1)) if vals.size >= 2 else None}
    if observed is None or not vals.size:
        out.update({f"{key}_pvalue": None, f"{key}_z": None,
                    f"{key}_verdict": verdict(None, alpha, n, why=why or "no null draw")})
        return out
    p = _pvalue(observed, vals)
    sd = out[f"{key}_floor_std"]
    out[f"{key}_pvalue"] = p
    out[f"{key}_z"] = float((observed - out[f"{key}_floor_mean"]) / sd) if sd else None
    out[f"{key}_verdict"] = verdict(p, alpha, n, int(vals.size))
    return out


def _size(n: int, *xs: np.ndarray) -> int:
    """The points per side a metric uses: its n, at most the smallest sample."""
    return int(min(n, *(x.shape[0] for x in xs)))


def _exact(p: int, key: str, s: Any, x_gen: np.ndarray, x_ref: np.ndarray, x_floor: np.ndarray, seed: int,
           ctx: EvalContext) -> dict[str, Any]:
    n = _size(s.n, x_gen, x_ref, x_floor)
    gb = D.memory_limit_bytes(s.max_memory_gb) / 2**30  # the memory limit read once, not at each solve

    def solve(xs: np.ndarray, k: int) -> D.WassersteinResult:
        return D.wasserstein_result(xs[:k], x_ref[:k], p, max_iter=s.max_iter, max_memory_gb=gb)

    out: dict[str, Any] = {f"{key}_n": n}
    for tag, r in (("", solve(x_gen, n)), ("_floor", ctx.once(f"{key}_floor@{n}", lambda: solve(x_floor, n)))):
        out[f"{key}{tag}"] = r.value
        out[f"{key}{tag}_converged"] = r.converged
        if r.reason:
            out[f"{key}{tag}_reason"] = r.reason
    if s.null_draws == 0:
        return out
    # The null at null_n <= n points per side: an exact solve costs about n^2.5 (n = 2000: ~1 s), so B of
    # them at n would dominate the evaluation; the tested value is the generated sample's W_p at null_n.
    m = n if s.null_n is None else min(s.null_n, n)
    draws = s.null_draws
    if m == n:
        (obs, why), first = (out[key], out.get(f"{key}_reason")), out[f"{key}_floor"]
    else:
        r = solve(x_gen, m)
        (obs, why), first = (r.value, r.reason), ctx.once(f"{key}_floor@{m}", lambda: solve(x_floor, m)).value
    out[f"{key}_null_n"] = m
    out[f"{key}_null_observed"] = obs
    how = _null_text(ctx, m, draws)
    if m < n:
        how += (f"; at n = {m}, not {n}, since an exact solve costs about n^2.5: {key}_pvalue, {key}_z and "
                f"{key}_verdict test {key}_null_observed, the generated sample's W{p} at n = {m}")
    null = [first] + ([] if obs is None else
                      _null_values(ctx, key, seed, x_gen, x_floor, m, draws, lambda xs: solve(xs, m).value))
    out.update(calibrate(key, obs, null, alpha=ctx.alpha, n=m, how=how,
                         why=f"W{p} at n = {m} not certified optimal ({why})"))
    return out


def w1_distance(s: W1Config, x_gen: np.ndarray, x_ref: np.ndarray, x_floor: np.ndarray, seed: int, *,
                ctx: EvalContext) -> dict[str, Any]:
    """Exact W1 (:func:`~pfbench.metrics.distances.wasserstein_result`); not certified optimal: null, with why.
    Its null (``null_draws`` > 0) at ``null_n`` points per side (fresh true draws or permutations)."""
    return _exact(1, "w1", s, x_gen, x_ref, x_floor, seed, ctx)


def w2_distance(s: W2Config, x_gen: np.ndarray, x_ref: np.ndarray, x_floor: np.ndarray, seed: int, *,
                ctx: EvalContext) -> dict[str, Any]:
    """Exact W2, as :func:`w1_distance`."""
    return _exact(2, "w2", s, x_gen, x_ref, x_floor, seed, ctx)


def exact_memory_check(s: W1Config, key: str, n_max: int) -> None:
    """Refuse at start-up an exact solve whose cost matrix would not fit (rather than after training)."""
    n = min(s.n, n_max)
    need = D.ot_memory_bytes(n, n)
    limit = D.memory_limit_bytes(s.max_memory_gb)
    if need > limit:
        raise ConfigError(
            f"{key}.n={s.n}: the exact solve at n={n} needs about {need / 2**30:.1f} GB (> {limit / 2**30:.1f} GB); "
            f"lower {key}.n or set {key}.enabled=false and rely on eval.sw"
        )


def sliced_distance(s: SWConfig, x_gen: np.ndarray, x_ref: np.ndarray, x_floor: np.ndarray,
                    seed: int, *, ctx: EvalContext) -> dict[str, Any]:
    """Sliced W_p, the same directions for metric, floor and null draws (the reference's sorted
    projections computed once: :func:`~pfbench.metrics.distances.sliced_wasserstein_to`)."""
    n = _size(s.n, x_gen, x_ref, x_floor)

    def reference() -> Callable[[np.ndarray], float]:
        dirs = D.random_directions(x_ref.shape[1], s.n_projections, numpy_generator(seed, "eval_sw"))
        return D.sliced_wasserstein_to(x_ref[:n], dirs, p=s.p)

    to_ref = ctx.once(f"sw_reference@{n}", reference)
    out = {"sw": to_ref(x_gen[:n]), "sw_floor": ctx.once(f"sw_floor@{n}", lambda: to_ref(x_floor[:n])),
           "sw_n": n, "sw_p": s.p, "sw_n_projections": s.n_projections}
    if s.null_draws > 0:
        null = [out["sw_floor"]] + _null_values(ctx, "sw", seed, x_gen, x_floor, n, s.null_draws, to_ref)
        out.update(calibrate("sw", out["sw"], null, alpha=ctx.alpha, n=n, how=_null_text(ctx, n, s.null_draws)))
    return out


def mmd_distance(s: MMDConfig, x_gen: np.ndarray, x_ref: np.ndarray, x_floor: np.ndarray,
                 seed: int, *, ctx: EvalContext) -> dict[str, Any]:
    """Unbiased MMD^2, Gaussian kernel, bandwidth = median heuristic on the reference. Its null:
    a permutation null from the same kernel blocks (fresh true draws would cost the kernels again
    for each draw; the permutations cost one more n x n block and a product)."""
    n = _size(s.n, x_gen, x_ref, x_floor)
    try:
        h = D.median_bandwidth(x_ref[:n])
    except ConfigError as e:
        return {"mmd": None, "mmd_floor": None, "mmd_reason": str(e)}
    rec: dict[str, Any] = {}
    if s.null_draws > 0 and n >= 2:
        rng = numpy_generator(seed, "eval_null_mmd")
        subsets = np.zeros((s.null_draws - 1, 2 * n), dtype=bool)
        for row in subsets:
            row[rng.permutation(2 * n)[:n]] = True
        val, floor, perm = D.mmd2_permutation_null(x_gen[:n], x_floor[:n], x_ref[:n], h, subsets)
        how = _permutation_text(n, s.null_draws) + ", the same bandwidth"
        rec = calibrate("mmd", val, [floor, *perm.tolist()], alpha=ctx.alpha, n=n, how=how)
    else:
        val, floor = D.mmd2_unbiased_many([x_gen[:n], x_floor[:n]], x_ref[:n], h)
    return {"mmd": val, "mmd_floor": floor, "mmd_n": n, "mmd_bandwidth": h,
            "mmd_estimator": "unbiased MMD^2, Gaussian kernel exp(-|x-y|^2/(2h^2)), h = median "
                             "pairwise distance of the true sample", **rec}


def nn_distance(s: NNConfig, x_gen: np.ndarray, x_ref: np.ndarray, x_floor: np.ndarray,
                seed: int, *, ctx: EvalContext) -> dict[str, Any]:
    """Neural-net distance; the critic class is recorded in ``nn_dist_class``. Its null: a
    permutation null of the trained critic's held-out values (exact: the critic never saw them)."""
    n = _size(s.n, x_gen, x_ref, x_floor)
    kw = dict(width=s.width, depth=s.depth, steps=s.steps, lr=s.lr, batch_size=s.batch_size,
              train_fraction=s.train_fraction)
    # the same stream for both: identical critic initialization, splits and batches, so metric and
    # floor differ only by the sample being judged
    r = D.neural_net_distance(x_gen[:n], x_ref[:n], generator=torch_generator(seed, "eval_nn"), **kw)
    f = ctx.once(f"nn_floor@{n}", lambda: D.neural_net_distance(x_floor[:n], x_ref[:n],
                                                                 generator=torch_generator(seed, "eval_nn"), **kw))
    out = {"nn_dist": r.value, "nn_dist_floor": f.value, "nn_dist_train_gap": r.train_gap,
           "nn_dist_floor_train_gap": f.train_gap, "nn_dist_class": r.critic_class,
           "nn_dist_n": n, "nn_dist_steps": r.steps}
    if s.null_draws > 0:
        pool = np.concatenate([r.scores_x, r.scores_y]).astype(np.float64)
        k, tot = r.scores_x.size, float(pool.sum())
        rng = numpy_generator(seed, "eval_null_nn")
        null = []
        for _ in range(s.null_draws):
            part = float(pool[rng.permutation(pool.size)[:k]].sum())
            null.append(part / k - (tot - part) / (pool.size - k))
        how = (f"permutation of the trained critic's held-out values: B = {s.null_draws} random relabellings "
               f"of its {k} generated and {pool.size - k} true held-out values (the critic, trained once, "
               f"is fixed; nn_dist_floor is a separate critic's gap, not a draw of this null)")
        out.update(calibrate("nn_dist", r.value, null, alpha=ctx.alpha, n=n, how=how))
    return out


def support_estimate(s: SupportConfig, x_gen: np.ndarray, x_ref: np.ndarray, x_floor: np.ndarray,
                     seed: int, *, ctx: EvalContext) -> dict[str, Any]:
    """Birthday-paradox support estimate, threshold calibrated on the reference; ``support_*_floor``
    on the floor sample; ``support_verdict`` in words."""
    tau, atoms = ctx.once("support_reference", lambda: (D.collision_threshold(x_ref), D.true_atoms(x_ref)))
    cap = min(x_ref.shape[0], x_gen.shape[0], x_floor.shape[0]) // 4
    mb = max(2, min(s.max_batch or cap, cap))

    def birthday(x: np.ndarray) -> dict[str, Any]:
        return D.birthday_support(x, tau, max_batch=mb, n_batches=s.n_batches, atoms=atoms,
                                  generator=numpy_generator(seed, "eval_support"))

    out = birthday(x_gen)
    fl = ctx.once(f"support_floor@{mb}", lambda: birthday(x_floor))
    out.update({f"{k}_floor": v for k, v in fl.items() if k != "support_threshold"})
    out["support_true_atoms"] = int(len(atoms))
    out["support_max_batch"] = mb
    out["support_verdict"] = _support_verdict(out, s.n_batches, x_gen.shape[0])
    return out


def _support_verdict(r: dict[str, Any], n_batches: int, n: int) -> str:
    """Small support when at least half of the batches of some size s collide (Arora-Zhang's rule).
    A true sample collides in a batch of s <= N/4 with probability about s^2 / (s^2 + N^2) <= 1/17
    (:func:`~pfbench.metrics.distances.collision_threshold`), so the rule fires on it in fewer than
    1e-5 of the cases for 20 batches (binomial tail); the floor sample's outcome is said beside."""
    if r["support_size"] is not None:
        words = (f"different from the truth at n = {n}: small support suspected, about {r['support_size']} distinct "
                 f"points ({r['support_collision_rate']:.0%} of {n_batches} batches of {r['support_batch']} points "
                 f"hold a pair closer than any two distinct true points)")
    elif r["support_lower_bound"] is not None:
        words = (f"no sign of a small support at n = {n}: fewer than half of the batches of up to "
                 f"{r['support_max_batch']} points hold a near-duplicate (support > {r['support_lower_bound']})")
    else:
        return f"undetermined: {r['support_status']}"
    if r.get("support_size_floor") is not None:
        words += (f"; the floor sample also collides (support ~ {r['support_size_floor']}): the threshold is "
                  "uninformative")
    return words


def moments_distance(s: MomentsConfig, x_gen: np.ndarray, x_ref: np.ndarray, x_floor: np.ndarray,
                     seed: int, *, ctx: EvalContext) -> dict[str, Any]:
    """The moment discrepancy (:func:`~pfbench.metrics.distances.moment_discrepancy`): ``moments`` =
    ``moments_mean`` + ``moments_cov`` + ``moments_third``, each beside its floor; with ``ctx`` a null of
    fresh true draws (or permutations) and a p-value per part (``moments_<part>_pvalue``); ``moments_pvalue``
    and the verdict combine the parts by Bonferroni: 3 x the smallest part p-value, at most 1 (the
    parts' null spreads differ a lot, the third cumulant's most, so their sum would hide the others)."""
    n = _size(s.n, x_gen, x_ref, x_floor)
    d = x_ref.shape[1]
    sketch = D.MomentSketch.draw(d, s.sketch_dim, s.n_directions, numpy_generator(seed, "eval_moments"))
    folds = s.folds
    try:
        scales, ref = ctx.once(f"moments_reference@{n}", lambda: (D.moment_scales(x_ref[:n], sketch),
                                                                  D.moment_folds(x_ref[:n], sketch, folds)))

        def parts(xs: np.ndarray) -> dict[str, float]:
            return D.moment_discrepancy_folds(D.moment_folds(xs[:n], sketch, folds), ref, scales)

        g, f = parts(x_gen), ctx.once(f"moments_floor@{n}", lambda: parts(x_floor))
    except ConfigError as e:
        return {"moments": None, "moments_floor": None, "moments_reason": str(e)}
    k = d if sketch.projection is None else s.sketch_dim
    out: dict[str, Any] = {"moments": g["total"], "moments_floor": f["total"]}
    for part in ("mean", "cov", "third"):
        out[f"moments_{part}"] = g[part]
        out[f"moments_{part}_floor"] = f[part]
    where = (f"all {d} coordinates" if sketch.projection is None else
             f"a random {k}-dimensional orthogonal projection of the {d} coordinates")
    out.update(moments_n=n, moments_folds=folds,
               moments_sketch=f"{where}, third cumulant along {s.n_directions} random unit directions",
               moments_estimator="squared relative errors, unbiased (cross-fold): mean ||m_g - m_t||^2 / tr C_t, "
                                 "cov ||C_g - C_t||_F^2 / ||C_t||_F^2, third sum_u (k3_g(u) - k3_t(u))^2 / sum_u "
                                 "(u'C_t u)^3; moments = their sum; 0 in expectation for the true distribution")
    draws = s.null_draws
    if draws > 0:
        null = [f] + _null_values(ctx, "moments", seed, x_gen, x_floor, n, draws, parts)
        how = (_null_text(ctx, n, draws) + "; moments_floor_mean, _std and _z describe the sum, "
               "moments_pvalue = min(1, 3 x the smallest of moments_mean_pvalue, _cov_pvalue, _third_pvalue) "
               "(Bonferroni)")
        out.update(calibrate("moments", g["total"], [v["total"] for v in null], alpha=ctx.alpha, n=n, how=how))
        ps = {part: _pvalue(g[part], np.array([v[part] for v in null])) for part in ("mean", "cov", "third")}
        out.update({f"moments_{part}_pvalue": p for part, p in ps.items()})
        p = min(1.0, 3.0 * min(ps.values()))
        out["moments_pvalue"] = p
        out["moments_verdict"] = (verdict(p, ctx.alpha, n) + "; by part: "
                                  + ", ".join(f"{part} p = {q:.2g}" for part, q in ps.items()))
    return out


def copying_test(s: CopyingConfig, x_gen: np.ndarray, x_ref: np.ndarray, x_floor: np.ndarray,
                 seed: int, *, ctx: EvalContext) -> dict[str, Any]:
    """Meehan et al.'s data-copying test (:class:`~pfbench.metrics.distances.DataCopyingTest`), cell
    version: ``copying`` = C_T of the generated sample against the held-out reference, ``copying_floor``
    the same for the floor sample; ``copying_pvalue`` = Phi(z) one-sided (copying pulls C_T below 0),
    ``copying_verdict`` "copying suspected" when p <= alpha. Needs the training sample (``ctx.x_train``)."""
    alpha, x_train = ctx.alpha, ctx.x_train
    if x_train is None:
        return {"copying": None, "copying_floor": None,
                "copying_status": "skipped: no training sample (evaluate(..., x_train=None))",
                "copying_verdict": "undetermined: no training sample"}
    n = _size(s.n, x_gen, x_ref, x_floor)
    train = x_train if s.max_train is None else x_train[:s.max_train]
    try:
        test = ctx.once(f"copying_test@{n}", lambda: D.DataCopyingTest(
            train, x_ref[:n], cells=min(s.cells, train.shape[0]), min_cell=s.min_cell, iters=s.kmeans_iters,
            generator=numpy_generator(seed, "eval_copying")))
    except ConfigError as e:
        return {"copying": None, "copying_floor": None, "copying_status": f"failed: {e}",
                "copying_verdict": f"undetermined: {e}"}
    g, f = test(x_gen[:n]), ctx.once(f"copying_floor@{n}", lambda: test(x_floor[:n]))
    out: dict[str, Any] = {
        "copying": g["ct"], "copying_floor": f["ct"], "copying_z": g["z"], "copying_pvalue": g["p"],
        "copying_floor_z": f["z"], "copying_floor_mean": 0.0 if g["ct"] is not None else None,
        "copying_floor_std": g["null_sd"], "copying_n": n, "copying_n_train": int(train.shape[0]),
        "copying_cells": test.cells, "copying_cells_used": g["cells_used"],
        "copying_gen_nn_median": g["gen_nn_median"], "copying_test_nn_median": g["test_nn_median"],
        "copying_null": ("normal approximation: without copying the in-cell Mann-Whitney z-scores are independent "
                         "N(0, 1), so C_T is N(0, copying_floor_std^2); copying_z = C_T / copying_floor_std"),
        "copying_status": "ok" if g["ct"] is not None else f"no cell holds {s.min_cell} generated points",
    }
    if g["p"] is None:
        out["copying_verdict"] = f"undetermined: {out['copying_status']}"
    elif g["p"] <= alpha:
        out["copying_verdict"] = (f"copying suspected at n = {n}: generated points lie closer to their nearest "
                                  f"training points than held-out true points do (C_T = {g['ct']:.3g}, "
                                  f"p = {g['p']:.2g})")
    else:
        out["copying_verdict"] = f"no data copying detected at n = {n} (C_T = {g['ct']:.3g}, p = {g['p']:.2g})"
    return out


#: Every distance the evaluation reports, in the order it runs them (each from its own seed stream).
REGISTRY: tuple[Distance, ...] = (
    Distance("w1", W1Config, "w1", w1_distance, preflight=exact_memory_check, context=True),
    Distance("w2", W2Config, "w2", w2_distance, compare_in_report=False, preflight=exact_memory_check, context=True),
    Distance("sw", SWConfig, "sw", sliced_distance, context=True),
    Distance("mmd", MMDConfig, "mmd", mmd_distance, context=True),
    Distance("nn", NNConfig, "nn_dist", nn_distance, context=True),
    Distance("support", SupportConfig, "support", support_estimate, compare_in_report=False,
             nonfinite_keys=("support_size",), context=True),
    Distance("moments", MomentsConfig, "moments", moments_distance, compare_in_report=False, context=True),
    Distance("copying", CopyingConfig, "copying", copying_test, compare_in_report=False, context=True),
)


# ---------------------------------------------------------------------------------------------
# The eval group's schema and its validation
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _schema_of(registry: tuple[Distance, ...]) -> type:
    names = ["name", "n_samples", "alpha", *(d.name for d in registry), "param_error"]
    if len(set(names)) != len(names):
        raise ValueError(f"distance names must be distinct and not name, n_samples, alpha or param_error: {names}")
    cls = dataclasses.make_dataclass("EvalConfig", [
        ("name", str, field(default="default")),
        ("n_samples", int, field(default=2000)),  # generated samples, and fresh true samples for the floors
        ("alpha", float, field(default=0.05)),  # level of every verdict (one-sided p <= alpha: different)
        *((d.name, d.config, field(default_factory=d.config)) for d in registry),
        ("param_error", ParamErrorConfig, field(default_factory=ParamErrorConfig)),
    ])
    cls.__module__ = __name__  # picklable where it is the module's EvalConfig
    cls.__doc__ = "The eval= group: name, n_samples, alpha, one block per registered distance, param_error."
    return cls


def eval_schema() -> type:
    """The eval group's dataclass schema for the distances in :data:`REGISTRY` now."""
    return _schema_of(REGISTRY)


#: The eval group's schema for the distances above; its defaults are conf/eval/default.yaml.
EvalConfig = eval_schema()


def is_validated(cfg: Any) -> bool:
    """Whether ``cfg`` is a result of :func:`resolve_eval_config` (an OmegaConf config of the schema's
    type, e.g. ``cfg.eval`` after :func:`pfbench.config.validate`), which is used as it is."""
    return isinstance(cfg, DictConfig) and OmegaConf.get_type(cfg) is eval_schema()


def _tree(v: Any) -> Any:
    return {k: _tree(x) for k, x in v.items()} if isinstance(v, Mapping) else v


def _plain(cfg: Any) -> dict[str, Any]:
    if cfg is None:
        return {}
    if isinstance(cfg, DictConfig):  # Hydra's eval group
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):  # an EvalConfig(...) instance
        return OmegaConf.to_container(OmegaConf.structured(cfg))  # type: ignore[return-value]
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"eval config must be a mapping (eval=fast|default|full), got {type(cfg).__name__}")
    return _tree(cfg)


_TYPES: dict[type, tuple[Callable[[Any], bool], str]] = {
    bool: (lambda v: isinstance(v, bool), "true or false"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    float: (lambda v: isinstance(v, int | float) and not isinstance(v, bool), "a number"),
    str: (lambda v: isinstance(v, str), "a string"),
}


def _check_types(schema: type, raw: Mapping, path: str) -> None:
    """Values of exactly the schema's types (OmegaConf would turn 'yes' into true and '5' into 5)."""
    hints = typing.get_type_hints(schema)
    for k, v in raw.items():
        if k not in hints:
            continue  # an unknown key: the structured merge names it
        t, key = hints[k], f"{path}.{k}"
        if dataclasses.is_dataclass(t):
            if not isinstance(v, Mapping):
                raise ConfigError(f"{key} must be a mapping with keys {sorted(typing.get_type_hints(t))}, got {v!r}")
            _check_types(t, v, key)
            continue
        args = typing.get_args(t)
        optional = type(None) in args
        if v is None and optional:
            continue
        ok, what = _TYPES[next(a for a in args if a is not type(None)) if args else t]
        if not ok(v):
            raise ConfigError(f"{key}={v!r} must be {what}{' or null' if optional else ''}")


def _merge(schema: type, raw: dict[str, Any]) -> DictConfig:
    try:
        return OmegaConf.merge(OmegaConf.structured(schema), raw)  # type: ignore[return-value]
    except ConfigKeyError as e:
        full = str(e.full_key or e.key)
        node: Any = schema
        for part in full.split(".")[:-1]:
            node = typing.get_type_hints(node)[part]
        raise ConfigError(f"unknown key eval.{full}; valid keys: {sorted(typing.get_type_hints(node))}") from None
    except OmegaConfBaseException as e:  # not reached after _check_types; one line all the same
        raise ConfigError(f"bad value for eval.{e.full_key}: {str(e).splitlines()[0]}") from None


def resolve_eval_config(cfg: Any, *, n_test: int | None = None) -> DictConfig:
    """The complete, checked evaluation settings: ``cfg`` over the :data:`EvalConfig` defaults.

    ``cfg``: a mapping or OmegaConf config (e.g. Hydra's ``cfg.eval``; missing keys take the schema's
    defaults, which are conf/eval/default.yaml's), or an already-validated result (an OmegaConf config
    of the schema's type, :func:`is_validated`), returned as it is, unchecked. Returns an OmegaConf
    config typed by the schema: ``c.nn.steps`` or ``c["nn"]["steps"]``.

    Raises :class:`pfbench.ConfigError` (one line, naming the key) for unknown keys, wrong types,
    out-of-range values and, given the data's ``n_test``, an exact W1/W2 size whose cost matrix would
    not fit in memory (so a run fails at start-up rather than after training). A run validates its
    ``eval`` group once, in :func:`pfbench.config.validate`.
    """
    if is_validated(cfg):
        c = cfg
    else:
        schema = eval_schema()
        raw = _plain(cfg)
        _check_types(schema, raw, "eval")
        c = _merge(schema, raw)
        _need_int("eval.n_samples", c.n_samples, 4)
        if not 0 < c.alpha < 1:
            raise ConfigError(f"eval.alpha={c.alpha!r} must be a number in (0, 1)")
        for name in (*(d.name for d in REGISTRY), "param_error"):
            block = OmegaConf.to_object(c[name])
            check = getattr(block, "check", None)
            if check is not None:
                check(f"eval.{name}")
            b, k = getattr(block, "null_draws", 0), getattr(block, "null_tests", 1)
            if isinstance(b, int) and 0 < b and (b + 1) * c.alpha < k - 1e-9:
                raise ConfigError(f"eval.{name}.null_draws={b} is too few for eval.alpha={c.alpha}: the smallest "
                                  f"p-value is {k}/(1 + {b}); use 0 (no null) or at least "
                                  f"{math.ceil(k / c.alpha - 1 - 1e-9)}")
    if n_test is not None:
        n_max = min(c.n_samples, int(n_test))
        for d in REGISTRY:
            if d.preflight is not None and c[d.name].enabled:
                d.preflight(c[d.name], f"eval.{d.name}", n_max)
    return c


def _to_f64(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _sample(model: Pushforward, n: int, seed: int, stream: str) -> np.ndarray:
    """n samples of ``model`` without gradients, in eval mode, from the named seed stream."""
    try:
        dev = next(model.parameters()).device
    except StopIteration:
        dev = torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model.sample_batched(n, torch_generator(seed, stream, device=dev))
    finally:
        model.train(was_training)
    return _to_f64(out)


def _param_error_block(model: Pushforward, truth: Pushforward | None, cfg: dict, seed: int) -> dict[str, Any]:
    """Gauge-aligned parameter error when the fitted model is in the truth's family, else why not."""
    if not cfg["enabled"]:
        return {"param_error": None, "param_error_status": "disabled (eval.param_error.enabled=false)"}
    if truth is None:
        return {"param_error": None, "param_error_status": "skipped: no true parameters (user data)"}
    why = truth.architecture_mismatch(model)
    if why is not None:
        return {"param_error": None, "param_error_status": f"skipped: {why}"}
    try:
        out: dict[str, Any] = truth.param_error(model, restarts=cfg["restarts"], seed=seed)
    except ConfigError as e:  # e.g. non-finite fitted parameters: recorded, never a number
        return {"param_error": None, "param_error_status": f"failed: {e}"}
    out["param_error_status"] = "ok"
    return out


class _FreshDraws:
    """``b -> `` the b-th extra true sample (n points, stream ``eval_null_<b>``), kept while they fit in
    ``max_bytes`` so that the distances share them; ``seconds`` spent sampling."""

    def __init__(self, truth: Pushforward, n: int, seed: int, max_bytes: int = 2**28):
        self.truth, self.n, self.seed, self.max_bytes = truth, n, seed, max_bytes
        self.cache: dict[int, np.ndarray] = {}
        self.seconds = 0.0

    def __call__(self, b: int) -> np.ndarray:
        if b in self.cache:
            return self.cache[b]
        t0 = time.perf_counter()
        x = _sample(self.truth, self.n, self.seed, f"eval_null_{b}")
        self.seconds += time.perf_counter() - t0
        if (len(self.cache) + 1) * x.nbytes <= self.max_bytes:
            self.cache[b] = x
        return x


def evaluate(model: Pushforward, x_test: torch.Tensor | np.ndarray, *, truth: Pushforward | None, cfg: Any,
             seed: int, progress: bool = False, x_train: torch.Tensor | np.ndarray | None = None,
             memo: dict[str, Any] | None = None) -> dict[str, Any]:
    """Distances between a generator and the truth, each beside its noise floor, and parameter error.

    Samples: ``n_samples`` points from ``model`` (stream ``"eval_model"``) and, when ``truth`` is
    given, ``n_samples`` fresh true points for the floors (stream ``"eval_floor"``). The reference
    is ``x_test`` (held-out true sample, (n_test, d)). Without ``truth`` (user data) the reference
    is the first half of ``x_test`` and the floor sample its second half. A metric configured for
    n points uses the first n of each sample (i.i.d., so a random subset), the same n for the
    metric and its floor:

    - ``w1``/``w2``: exact W_p (:func:`~pfbench.metrics.distances.wasserstein_result`); a solve
      that is not certified optimal gives ``null`` with ``w1_converged: false`` and ``w1_reason``;
    - ``sw``: sliced W_p, the same directions for metric and floor;
    - ``mmd``: unbiased MMD^2, Gaussian kernel, bandwidth = median heuristic on the reference;
    - ``nn_dist``: neural-net distance, critic class in ``nn_dist_class``, the same critic
      initialization and splits for metric and floor;
    - ``support_*``: birthday-paradox support estimate, threshold calibrated on the reference,
      with ``support_*_floor`` on the floor sample, and ``support_verdict``;
    - ``moments``: unbiased squared relative errors of the mean, covariance and third cumulant
      (``moments_mean``, ``moments_cov``, ``moments_third``; their sum is ``moments``);
    - ``copying``: Meehan et al.'s data-copying statistic C_T of the generated sample against
      ``x_train`` (the training sample; None: skipped, with ``copying_status``), ``copying_pvalue``,
      ``copying_verdict``;
    - ``param_error*``: when ``type(model) is type(truth)`` (and architecture/degree match).

    Calibrated verdicts (``eval.<name>.null_draws`` = B > 0): each of w1, w2, sw, mmd, nn_dist and
    moments gets a null distribution of B values of its statistic under "the generator is the
    truth": ``<key>_null`` says how it was drawn (fresh true samples, streams ``eval_null_<b>``, when
    ``truth`` is given, the floor sample being the first; otherwise permutations of the pooled
    generated and floor samples; mmd always, nn_dist always on its trained critic's held-out
    values), ``<key>_null_draws`` (B), ``<key>_floor_mean``, ``<key>_floor_std``, ``<key>_pvalue`` =
    (1 + #{null >= value}) / (1 + B) (one-sided), ``<key>_z`` and ``<key>_verdict`` ("different
    from the truth at n = 2000 (p = 0.005)" when p <= ``eval.alpha``, else "indistinguishable ...").
    The exact W1/W2 nulls are drawn at ``null_n`` points per side (``w1_null_n``) and test the
    generated sample's value at that size (``w1_null_observed``), since a solve costs about n^2.5.

    ``memo``: a dict shared by several calls that judge different generators against the same data
    (a run's final, selected and EMA generators; several perturbations of one truth): what does not
    read the generated sample (the floors, the references' preprocessing, the fresh-draw nulls, the
    data-copying cells) is computed by the first call and reused, the same numbers without the
    work; the later calls' stage timings leave it out. Its entries belong to one (x_test, floor sample,
    x_train, seed, settings): a call with other ones empties it first.

    ``cfg``: the eval settings, checked by :func:`resolve_eval_config` unless already validated (a run
    passes ``cfg.eval`` from :func:`pfbench.config.validate`, checked once there). The distances are
    those of :data:`REGISTRY`, run in its order, each from its own seed streams.

    Returns a flat JSON-serialisable dict (floats, ints, strings, bools, None), including
    ``eval_status`` ("ok" or "non-finite samples"), ``eval_name``, ``alpha`` and timings
    (``*_time_s``; ``null_sample_time_s`` is the part of the stages spent drawing the fresh true
    samples). Non-finite generated samples are reported (``eval_status``, ``nonfinite_fraction``),
    every distance is ``null`` and every verdict "undetermined". Cost: dominated by the exact W1
    (about n^2.5), its null and the critic training; at the default settings for d = 20 (quadratic,
    n_test = 2000, n_train = 10000) 8.5 s, 1.5x the 5.7 s of the evaluation without the nulls, moments
    and copying test (load average 5-6 on 2 cores; scripts/bench_metrics.py measures both in one run).
    """
    t_start = time.perf_counter()
    x_ref_all = _to_f64(x_test)
    if x_ref_all.ndim != 2 or x_ref_all.shape[0] < 4:
        raise ConfigError(f"x_test must be an (n_test, d) sample, n_test >= 4; got shape {x_ref_all.shape}")
    if not np.all(np.isfinite(x_ref_all)):
        raise ConfigError("x_test has non-finite entries; the held-out true sample must be finite")
    c = resolve_eval_config(cfg)  # as it is when already validated
    if x_ref_all.shape[1] != model.out_dim:
        raise ConfigError(f"x_test has dimension {x_ref_all.shape[1]}; the generator outputs {model.out_dim}")
    x_tr = None
    if x_train is not None:
        x_tr = _to_f64(x_train)
        if x_tr.ndim != 2 or x_tr.shape[1] != model.out_dim or x_tr.shape[0] < 1:
            raise ConfigError(f"x_train must be an (n_train, {model.out_dim}) sample; got shape {x_tr.shape}")
        if not np.all(np.isfinite(x_tr)):
            raise ConfigError("x_train has non-finite entries")
    n_gen = int(c["n_samples"])
    rec: dict[str, Any] = {"eval_name": c["name"], "eval_status": "ok", "alpha": float(c["alpha"])}
    timings: dict[str, float] = {}

    fresh = None
    if truth is not None:
        x_ref = x_ref_all
        x_floor = _sample(truth, n_gen, seed, "eval_floor")
        rec["floor_source"] = "fresh true sample (eval_floor stream)"
        fresh = _FreshDraws(truth, n_gen, seed)
    else:
        half = x_ref_all.shape[0] // 2
        x_ref, x_floor = x_ref_all[:half], x_ref_all[half:2 * half]
        rec["floor_source"] = "second half of x_test (no true generator)"
    t0 = time.perf_counter()
    x_gen = _sample(model, n_gen, seed, "eval_model")
    timings["sample_time_s"] = time.perf_counter() - t0
    rec.update(n_generated=n_gen, n_reference=int(x_ref.shape[0]))

    finite = np.isfinite(x_gen).all(axis=1)
    stages: list[tuple[str, Callable[[], dict[str, Any]]]] = []
    if not finite.all():
        rec["eval_status"] = "non-finite samples"
        rec["nonfinite_fraction"] = float(1.0 - finite.mean())
        for d in REGISTRY:
            if c[d.name].enabled:
                rec.update(dict.fromkeys(d.null_keys))
                rec[f"{d.key}_verdict"] = "undetermined: non-finite generated samples"
    else:
        if memo is not None:
            _claim(memo, x_ref_all, x_floor, x_tr, seed, c)
        ctx = EvalContext(alpha=float(c["alpha"]), fresh=fresh, x_train=x_tr, memo=memo)
        stages += _distance_stages(c, x_gen, x_ref, x_floor, seed, ctx)
    stages.append(("param_error", lambda: _param_error_block(model, truth, c["param_error"], seed)))

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(stages), desc="evaluate", leave=False)
    for name, fn in stages:
        if bar is not None:
            bar.set_postfix_str(name)
        t0 = time.perf_counter()
        rec.update(fn())
        timings[f"{name}_time_s"] = time.perf_counter() - t0
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if fresh is not None and fresh.seconds:
        timings["null_sample_time_s"] = fresh.seconds
    rec.update(timings)
    rec["eval_time_s"] = time.perf_counter() - t_start
    return rec


def _claim(memo: dict[str, Any], x_test: np.ndarray, x_floor: np.ndarray, x_train: np.ndarray | None, seed: int,
           c: DictConfig) -> None:
    """Empty ``memo`` unless its entries were computed from these samples, seed and settings (the floor
    sample stands for the truth: it is drawn from it, stream ``eval_floor``)."""
    h = hashlib.sha256()
    for x in (x_test, x_floor, x_train if x_train is not None else np.empty(0)):
        h.update(str(x.shape).encode())
        h.update(np.ascontiguousarray(x).tobytes())
    h.update(f"{seed}\n{OmegaConf.to_yaml(c)}".encode())
    key = h.hexdigest()
    if memo.get("__data__") != key:
        memo.clear()
        memo["__data__"] = key


def _distance_stages(c: DictConfig, x_gen: np.ndarray, x_ref: np.ndarray, x_floor: np.ndarray,
                     seed: int, ctx: EvalContext) -> list[tuple[str, Callable[[], dict[str, Any]]]]:
    """One stage per enabled distance, in :data:`REGISTRY`'s order; each returns the metric, its floor
    and their records (and, for a ``context`` distance, its null and verdict)."""
    return [(d.key, functools.partial(d.run, c[d.name], x_gen, x_ref, x_floor, seed,
                                      **({"ctx": ctx} if d.context else {})))
            for d in REGISTRY if c[d.name].enabled]

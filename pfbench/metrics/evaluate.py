"""The shared evaluation: every method, learned or provable, is judged by :func:`evaluate`.

For a fitted generator G (a :class:`~pfbench.families.Pushforward`) and a held-out true sample,
it reports each distance beside its noise floor (MATH.md section 7): ``<metric>`` is the distance
between G's samples and the true sample, ``<metric>_floor`` the same distance, at the same sample
sizes, between an independent true sample and the same true sample. A generator is
distinguishable from the truth at this sample size only where ``<metric>`` clearly exceeds
``<metric>_floor``. When G is in the true family, the gauge-aligned parameter error is added
(each family's ``aligned_error``, :mod:`pfbench.families`).

Every distance is one entry of :data:`REGISTRY` (:class:`Distance`: its function, its settings
dataclass, its record key). Settings come from the ``eval=`` config group
(conf/eval/{fast,default,full}.yaml), whose schema :data:`EvalConfig` has one block per registered
distance; missing keys take the schema's defaults (conf/eval/default.yaml's values), unknown keys,
wrong types and out-of-range values are one-line errors (:func:`resolve_eval_config`).
"""

from __future__ import annotations

import dataclasses
import functools
import time
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from pfbench import ConfigError
from pfbench.families.base import Pushforward
from pfbench.metrics import distances as D
from pfbench.seeding import numpy_generator, torch_generator
from pfbench.system import available_memory_bytes

__all__ = [
    "REGISTRY",
    "Distance",
    "EvalConfig",
    "MMDConfig",
    "NNConfig",
    "ParamErrorConfig",
    "SWConfig",
    "SupportConfig",
    "W1Config",
    "W2Config",
    "eval_schema",
    "evaluate",
    "is_validated",
    "resolve_eval_config",
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

    def check(self, key: str) -> None:
        _need_int(f"{key}.n", self.n, 2)
        _need_int(f"{key}.max_iter", self.max_iter, 1, allow_none=True)
        if self.max_memory_gb is not None and self.max_memory_gb <= 0:
            raise ConfigError(f"{key}.max_memory_gb={self.max_memory_gb!r} must be a positive number or null")


@dataclass
class W2Config(W1Config):
    """eval.w2: exact W2, the same solver."""

    n: int = 1000


@dataclass
class SWConfig:
    """eval.sw: sliced Wasserstein, directions from the eval_sw stream."""

    enabled: bool = True
    n: int = 2000
    n_projections: int = 200
    p: int = 1

    def check(self, key: str) -> None:
        _need_int(f"{key}.n", self.n, 2)
        _need_int(f"{key}.n_projections", self.n_projections, 1)
        if self.p not in (1, 2):
            raise ConfigError(f"{key}.p={self.p!r} must be 1 or 2")


@dataclass
class MMDConfig:
    """eval.mmd: unbiased MMD^2, Gaussian kernel, median-heuristic bandwidth on the true sample."""

    enabled: bool = True
    n: int = 2000

    def check(self, key: str) -> None:
        _need_int(f"{key}.n", self.n, 2)


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

    def check(self, key: str) -> None:
        _need_int(f"{key}.n", self.n, 4)
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
    run: Callable[[Any, np.ndarray, np.ndarray, np.ndarray, int], dict[str, Any]]
    compare_in_report: bool = True  # a column, beside its floor, of the report's per-family table
    nonfinite_keys: tuple[str, ...] | None = None  # null for non-finite samples; None: (key, key_floor)
    #: ``preflight(settings, "eval.<name>", n)``: checks before training against the largest sample
    #: it will see, n = min(eval.n_samples, data.n_test) (the exact solves' memory)
    preflight: Callable[[Any, str, int], None] | None = None

    @property
    def null_keys(self) -> tuple[str, ...]:
        return self.nonfinite_keys if self.nonfinite_keys is not None else (self.key, f"{self.key}_floor")


def _size(n: int, *xs: np.ndarray) -> int:
    """The points per side a metric uses: its n, at most the smallest sample."""
    return int(min(n, *(x.shape[0] for x in xs)))


def _exact(p: int, key: str, s: Any, x_gen: np.ndarray, x_ref: np.ndarray, x_floor: np.ndarray) -> dict[str, Any]:
    n = _size(s.n, x_gen, x_ref, x_floor)
    out: dict[str, Any] = {f"{key}_n": n}
    for tag, xs in (("", x_gen), ("_floor", x_floor)):
        r = D.wasserstein_result(xs[:n], x_ref[:n], p, max_iter=s.max_iter, max_memory_gb=s.max_memory_gb)
        out[f"{key}{tag}"] = r.value
        out[f"{key}{tag}_converged"] = r.converged
        if r.reason:
            out[f"{key}{tag}_reason"] = r.reason
    return out


def w1_distance(s: W1Config, x_gen: np.ndarray, x_ref: np.ndarray, x_floor: np.ndarray, seed: int) -> dict[str, Any]:
    """Exact W1 (:func:`~pfbench.metrics.distances.wasserstein_result`); not certified optimal: null, with why."""
    return _exact(1, "w1", s, x_gen, x_ref, x_floor)


def w2_distance(s: W2Config, x_gen: np.ndarray, x_ref: np.ndarray, x_floor: np.ndarray, seed: int) -> dict[str, Any]:
    """Exact W2, as :func:`w1_distance`."""
    return _exact(2, "w2", s, x_gen, x_ref, x_floor)


def exact_memory_check(s: W1Config, key: str, n_max: int) -> None:
    """Refuse at start-up an exact solve whose cost matrix would not fit (rather than after training)."""
    n = min(s.n, n_max)
    need = D.ot_memory_bytes(n, n)
    avail = available_memory_bytes()
    limit = s.max_memory_gb * 2**30 if s.max_memory_gb is not None else (avail // 2 if avail else 8 * 2**30)
    if need > limit:
        raise ConfigError(
            f"{key}.n={s.n}: the exact solve at n={n} needs about {need / 2**30:.1f} GB (> {limit / 2**30:.1f} GB); "
            f"lower {key}.n or set {key}.enabled=false and rely on eval.sw"
        )


def sliced_distance(s: SWConfig, x_gen: np.ndarray, x_ref: np.ndarray, x_floor: np.ndarray,
                    seed: int) -> dict[str, Any]:
    """Sliced W_p, the same directions for metric and floor."""
    n = _size(s.n, x_gen, x_ref, x_floor)
    dirs = D.random_directions(x_ref.shape[1], s.n_projections, numpy_generator(seed, "eval_sw"))
    return {"sw": D.sliced_wasserstein(x_gen[:n], x_ref[:n], p=s.p, directions=dirs),
            "sw_floor": D.sliced_wasserstein(x_floor[:n], x_ref[:n], p=s.p, directions=dirs),
            "sw_n": n, "sw_p": s.p, "sw_n_projections": s.n_projections}


def mmd_distance(s: MMDConfig, x_gen: np.ndarray, x_ref: np.ndarray, x_floor: np.ndarray,
                 seed: int) -> dict[str, Any]:
    """Unbiased MMD^2, Gaussian kernel, bandwidth = median heuristic on the reference."""
    n = _size(s.n, x_gen, x_ref, x_floor)
    try:
        h = D.median_bandwidth(x_ref[:n])
    except ConfigError as e:
        return {"mmd": None, "mmd_floor": None, "mmd_reason": str(e)}
    val, floor = D.mmd2_unbiased_many([x_gen[:n], x_floor[:n]], x_ref[:n], h)
    return {"mmd": val, "mmd_floor": floor, "mmd_n": n, "mmd_bandwidth": h,
            "mmd_estimator": "unbiased MMD^2, Gaussian kernel exp(-|x-y|^2/(2h^2)), h = median "
                             "pairwise distance of the true sample"}


def nn_distance(s: NNConfig, x_gen: np.ndarray, x_ref: np.ndarray, x_floor: np.ndarray,
                seed: int) -> dict[str, Any]:
    """Neural-net distance; the critic class is recorded in ``nn_dist_class``."""
    n = _size(s.n, x_gen, x_ref, x_floor)
    kw = dict(width=s.width, depth=s.depth, steps=s.steps, lr=s.lr, batch_size=s.batch_size,
              train_fraction=s.train_fraction)
    # the same stream for both: identical critic initialization, splits and batches, so metric and
    # floor differ only by the sample being judged
    r = D.neural_net_distance(x_gen[:n], x_ref[:n], generator=torch_generator(seed, "eval_nn"), **kw)
    f = D.neural_net_distance(x_floor[:n], x_ref[:n], generator=torch_generator(seed, "eval_nn"), **kw)
    return {"nn_dist": r.value, "nn_dist_floor": f.value, "nn_dist_train_gap": r.train_gap,
            "nn_dist_floor_train_gap": f.train_gap, "nn_dist_class": r.critic_class,
            "nn_dist_n": n, "nn_dist_steps": r.steps}


def support_estimate(s: SupportConfig, x_gen: np.ndarray, x_ref: np.ndarray, x_floor: np.ndarray,
                     seed: int) -> dict[str, Any]:
    """Birthday-paradox support estimate, threshold calibrated on the reference; ``support_*_floor``
    on the floor sample."""
    tau = D.collision_threshold(x_ref)
    atoms = D.true_atoms(x_ref)
    cap = min(x_ref.shape[0], x_gen.shape[0], x_floor.shape[0]) // 4
    mb = max(2, min(s.max_batch or cap, cap))
    out = D.birthday_support(x_gen, tau, max_batch=mb, n_batches=s.n_batches, atoms=atoms,
                             generator=numpy_generator(seed, "eval_support"))
    fl = D.birthday_support(x_floor, tau, max_batch=mb, n_batches=s.n_batches, atoms=atoms,
                            generator=numpy_generator(seed, "eval_support"))
    out.update({f"{k}_floor": v for k, v in fl.items() if k != "support_threshold"})
    out["support_true_atoms"] = int(len(atoms))
    out["support_max_batch"] = mb
    return out


#: Every distance the evaluation reports, in the order it runs them (each from its own seed stream).
REGISTRY: tuple[Distance, ...] = (
    Distance("w1", W1Config, "w1", w1_distance, preflight=exact_memory_check),
    Distance("w2", W2Config, "w2", w2_distance, compare_in_report=False, preflight=exact_memory_check),
    Distance("sw", SWConfig, "sw", sliced_distance),
    Distance("mmd", MMDConfig, "mmd", mmd_distance),
    Distance("nn", NNConfig, "nn_dist", nn_distance),
    Distance("support", SupportConfig, "support", support_estimate, compare_in_report=False,
             nonfinite_keys=("support_size",)),
)


# ---------------------------------------------------------------------------------------------
# The eval group's schema and its validation
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _schema_of(registry: tuple[Distance, ...]) -> type:
    names = ["name", "n_samples", *(d.name for d in registry), "param_error"]
    if len(set(names)) != len(names):
        raise ValueError(f"distance names must be distinct and not name, n_samples or param_error: {names}")
    cls = dataclasses.make_dataclass("EvalConfig", [
        ("name", str, field(default="default")),
        ("n_samples", int, field(default=2000)),  # generated samples, and fresh true samples for the floors
        *((d.name, d.config, field(default_factory=d.config)) for d in registry),
        ("param_error", ParamErrorConfig, field(default_factory=ParamErrorConfig)),
    ])
    cls.__module__ = __name__  # picklable where it is the module's EvalConfig
    cls.__doc__ = "The eval= group: name, n_samples, one block per registered distance, param_error."
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
        for name in (*(d.name for d in REGISTRY), "param_error"):
            check = getattr(OmegaConf.to_object(c[name]), "check", None)
            if check is not None:
                check(f"eval.{name}")
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


def evaluate(model: Pushforward, x_test: torch.Tensor | np.ndarray, *, truth: Pushforward | None, cfg: Any,
             seed: int, progress: bool = False) -> dict[str, Any]:
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
      with ``support_*_floor`` on the floor sample;
    - ``param_error*``: when ``type(model) is type(truth)`` (and architecture/degree match).

    ``cfg``: the eval settings, checked by :func:`resolve_eval_config` unless already validated (a run
    passes ``cfg.eval`` from :func:`pfbench.config.validate`, checked once there). The distances are
    those of :data:`REGISTRY`, run in its order, each from its own seed streams.

    Returns a flat JSON-serialisable dict (floats, ints, strings, bools, None), including
    ``eval_status`` ("ok" or "non-finite samples"), ``eval_name`` and timings (``*_time_s``).
    Non-finite generated samples are reported (``eval_status``, ``nonfinite_fraction``) and every
    distance is ``null``. Cost: dominated by the exact W1 (about n^2.5) and the critic training;
    4.8 s at the default settings for d = 20 (quadratic, n_test = 2000; measured at load average
    5-8 on 2 cores, scripts/bench_metrics.py), about 9 s for d = 500.
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
    n_gen = int(c["n_samples"])
    rec: dict[str, Any] = {"eval_name": c["name"], "eval_status": "ok"}
    timings: dict[str, float] = {}

    if truth is not None:
        x_ref = x_ref_all
        x_floor = _sample(truth, n_gen, seed, "eval_floor")
        rec["floor_source"] = "fresh true sample (eval_floor stream)"
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
    else:
        stages += _distance_stages(c, x_gen, x_ref, x_floor, seed)
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
    rec.update(timings)
    rec["eval_time_s"] = time.perf_counter() - t_start
    return rec


def _distance_stages(c: DictConfig, x_gen: np.ndarray, x_ref: np.ndarray, x_floor: np.ndarray,
                     seed: int) -> list[tuple[str, Callable[[], dict[str, Any]]]]:
    """One stage per enabled distance, in :data:`REGISTRY`'s order; each returns the metric, its floor
    and their records."""
    return [(d.key, functools.partial(d.run, c[d.name], x_gen, x_ref, x_floor, seed))
            for d in REGISTRY if c[d.name].enabled]

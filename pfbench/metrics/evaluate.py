"""The shared evaluation: every method, learned or provable, is judged by :func:`evaluate`.

For a fitted generator G (a :class:`~pfbench.families.Pushforward`) and a held-out true sample,
it reports each distance beside its noise floor (MATH.md section 7): ``<metric>`` is the distance
between G's samples and the true sample, ``<metric>_floor`` the same distance, at the same sample
sizes, between an independent true sample and the same true sample. A generator is
distinguishable from the truth at this sample size only where ``<metric>`` clearly exceeds
``<metric>_floor``. When G is in the true family, the gauge-aligned parameter error is added
(:mod:`pfbench.metrics.gauge`).

Settings come from the ``eval=`` config group (conf/eval/{fast,default,full}.yaml); missing keys
take the defaults in :data:`EVAL_DEFAULTS` (which mirror conf/eval/default.yaml), unknown keys
are an error.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from pfbench import ConfigError
from pfbench.families.base import Pushforward
from pfbench.metrics import distances as D
from pfbench.metrics.gauge import GAUGE_FAMILIES, parameter_error
from pfbench.seeding import numpy_generator, torch_generator

__all__ = ["EVAL_DEFAULTS", "evaluate", "resolve_eval_config"]

#: The ``default`` evaluation (conf/eval/default.yaml holds the same values; a test keeps them equal).
EVAL_DEFAULTS: dict[str, Any] = {
    "name": "default",
    "n_samples": 2000,  # generated samples, and fresh true samples for the floors
    "w1": {"enabled": True, "n": 2000, "max_iter": None, "max_memory_gb": None},
    "w2": {"enabled": True, "n": 1000, "max_iter": None, "max_memory_gb": None},
    "sw": {"enabled": True, "n": 2000, "n_projections": 200, "p": 1},
    "mmd": {"enabled": True, "n": 2000},
    "nn": {"enabled": True, "n": 2000, "width": 64, "depth": 2, "steps": 300, "lr": 0.002,
           "batch_size": 256, "train_fraction": 0.5},
    "support": {"enabled": True, "n_batches": 20, "max_batch": None},
    "param_error": {"enabled": True, "restarts": 5},
}


def _plain(cfg: Any) -> dict[str, Any]:
    if cfg is None:
        return {}
    try:  # an OmegaConf DictConfig (Hydra's eval group)
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"eval config must be a mapping (eval=fast|default|full), got {type(cfg).__name__}")
    return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in cfg.items()}


def resolve_eval_config(cfg: Any, *, n_test: int | None = None) -> dict[str, Any]:
    """The complete evaluation settings: ``cfg`` over :data:`EVAL_DEFAULTS`, checked.

    Raises :class:`pfbench.ConfigError` (one line, naming the key) for unknown keys, wrong types,
    out-of-range values, and an exact W1/W2 size whose cost matrix would not fit in memory (so a
    run can fail at start-up rather than after training). Call it before training with the data's
    ``n_test`` to get that early check.
    """
    user = _plain(cfg)
    out = copy.deepcopy(EVAL_DEFAULTS)
    for key, val in user.items():
        if key not in out:
            raise ConfigError(f"unknown key eval.{key}; valid keys: {sorted(out)}")
        if isinstance(out[key], dict):
            if not isinstance(val, Mapping):
                raise ConfigError(f"eval.{key} must be a mapping with keys {sorted(out[key])}, got {val!r}")
            for k2, v2 in val.items():
                if k2 not in out[key]:
                    raise ConfigError(f"unknown key eval.{key}.{k2}; valid keys: {sorted(out[key])}")
                out[key][k2] = v2
        else:
            out[key] = val

    def need_int(path: str, v: Any, lo: int, allow_none: bool = False) -> None:
        if v is None and allow_none:
            return
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ConfigError(f"eval.{path}={v!r} must be an integer >= {lo}")

    need_int("n_samples", out["n_samples"], 4)
    for name in ("w1", "w2", "sw", "mmd", "nn", "support", "param_error"):
        if not isinstance(out[name]["enabled"], bool):
            raise ConfigError(f"eval.{name}.enabled={out[name]['enabled']!r} must be true or false")
    for name in ("w1", "w2"):
        need_int(f"{name}.n", out[name]["n"], 2)
        need_int(f"{name}.max_iter", out[name]["max_iter"], 1, allow_none=True)
        mem = out[name]["max_memory_gb"]
        if mem is not None and (isinstance(mem, bool) or not isinstance(mem, int | float) or mem <= 0):
            raise ConfigError(f"eval.{name}.max_memory_gb={mem!r} must be a positive number or null")
    need_int("sw.n", out["sw"]["n"], 2)
    need_int("sw.n_projections", out["sw"]["n_projections"], 1)
    if out["sw"]["p"] not in (1, 2):
        raise ConfigError(f"eval.sw.p={out['sw']['p']!r} must be 1 or 2")
    need_int("mmd.n", out["mmd"]["n"], 2)
    nn = out["nn"]
    need_int("nn.n", nn["n"], 4)
    need_int("nn.width", nn["width"], 1)
    need_int("nn.depth", nn["depth"], 0)
    need_int("nn.steps", nn["steps"], 0)
    need_int("nn.batch_size", nn["batch_size"], 1)
    if not (isinstance(nn["lr"], int | float) and nn["lr"] > 0):
        raise ConfigError(f"eval.nn.lr={nn['lr']!r} must be a positive number")
    if not (isinstance(nn["train_fraction"], float) and 0 < nn["train_fraction"] < 1):
        raise ConfigError(f"eval.nn.train_fraction={nn['train_fraction']!r} must be a number in (0, 1)")
    need_int("support.n_batches", out["support"]["n_batches"], 1)
    need_int("support.max_batch", out["support"]["max_batch"], 2, allow_none=True)
    need_int("param_error.restarts", out["param_error"]["restarts"], 0)
    if n_test is not None:
        for name in ("w1", "w2"):
            if out[name]["enabled"]:
                n = min(out[name]["n"], out["n_samples"], int(n_test))
                need = D.ot_memory_bytes(n, n)
                lim = out[name]["max_memory_gb"]
                avail = D._available_memory_bytes()
                limit = lim * 2**30 if lim is not None else (avail // 2 if avail else 8 * 2**30)
                if need > limit:
                    raise ConfigError(
                        f"eval.{name}.n={out[name]['n']}: the exact solve at n={n} needs about "
                        f"{need / 2**30:.1f} GB (> {limit / 2**30:.1f} GB); lower eval.{name}.n or set "
                        f"eval.{name}.enabled=false and rely on eval.sw"
                    )
    return out


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
    if type(model) is not type(truth) or getattr(truth, "family", None) not in GAUGE_FAMILIES:
        return {"param_error": None,
                "param_error_status": f"skipped: the generator ({type(model).__name__}) is not in the true "
                                      f"family ({type(truth).__name__})"}
    family = truth.family
    same_bias = [lin.bias is None for lin in getattr(model, "layers", [])] == \
        [lin.bias is None for lin in getattr(truth, "layers", [])]
    if family == "relu_deep" and (model.widths != truth.widths or not same_bias):
        return {"param_error": None,
                "param_error_status": f"skipped: architectures differ ({model.widths} vs {truth.widths})"}
    if family == "polynomial" and model.degree != truth.degree:
        return {"param_error": None,
                "param_error_status": f"skipped: degrees differ ({model.degree} vs {truth.degree})"}
    if model.latent_dim != truth.latent_dim or model.out_dim != truth.out_dim:
        return {"param_error": None,
                "param_error_status": f"skipped: (latent_dim, out_dim) differ: ({model.latent_dim}, "
                                      f"{model.out_dim}) vs ({truth.latent_dim}, {truth.out_dim})"}
    try:
        out: dict[str, Any] = parameter_error(family, truth.params(), model.params(),
                                              restarts=cfg["restarts"], seed=seed,
                                              degree=getattr(truth, "degree", None))
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
    c = resolve_eval_config(cfg)
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
        for name, key in (("w1", "w1"), ("w2", "w2"), ("sw", "sw"), ("mmd", "mmd"), ("nn", "nn_dist")):
            if c[name]["enabled"]:
                rec[key] = None
                rec[f"{key}_floor"] = None
        if c["support"]["enabled"]:
            rec["support_size"] = None
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


def _distance_stages(c: dict, x_gen: np.ndarray, x_ref: np.ndarray, x_floor: np.ndarray,
                     seed: int) -> list[tuple[str, Callable[[], dict[str, Any]]]]:
    """One closure per enabled distance; each returns the metric, its floor and their records."""
    stages: list[tuple[str, Callable[[], dict[str, Any]]]] = []

    def size(n: int) -> int:
        return int(min(n, x_gen.shape[0], x_ref.shape[0], x_floor.shape[0]))

    for p, name in ((1, "w1"), (2, "w2")):
        if not c[name]["enabled"]:
            continue

        def exact(p: int = p, name: str = name) -> dict[str, Any]:
            n = size(c[name]["n"])
            out: dict[str, Any] = {f"{name}_n": n}
            for tag, xs in (("", x_gen), ("_floor", x_floor)):
                r = D.wasserstein_result(xs[:n], x_ref[:n], p, max_iter=c[name]["max_iter"],
                                         max_memory_gb=c[name]["max_memory_gb"])
                out[f"{name}{tag}"] = r.value
                out[f"{name}{tag}_converged"] = r.converged
                if r.reason:
                    out[f"{name}{tag}_reason"] = r.reason
            return out

        stages.append((name, exact))

    if c["sw"]["enabled"]:
        def sliced() -> dict[str, Any]:
            s = c["sw"]
            n = size(s["n"])
            dirs = D.random_directions(x_ref.shape[1], s["n_projections"], numpy_generator(seed, "eval_sw"))
            return {"sw": D.sliced_wasserstein(x_gen[:n], x_ref[:n], p=s["p"], directions=dirs),
                    "sw_floor": D.sliced_wasserstein(x_floor[:n], x_ref[:n], p=s["p"], directions=dirs),
                    "sw_n": n, "sw_p": s["p"], "sw_n_projections": s["n_projections"]}

        stages.append(("sw", sliced))

    if c["mmd"]["enabled"]:
        def mmd() -> dict[str, Any]:
            n = size(c["mmd"]["n"])
            try:
                h = D.median_bandwidth(x_ref[:n])
            except ConfigError as e:
                return {"mmd": None, "mmd_floor": None, "mmd_reason": str(e)}
            val, floor = D.mmd2_unbiased_many([x_gen[:n], x_floor[:n]], x_ref[:n], h)
            return {"mmd": val, "mmd_floor": floor, "mmd_n": n, "mmd_bandwidth": h,
                    "mmd_estimator": "unbiased MMD^2, Gaussian kernel exp(-|x-y|^2/(2h^2)), h = median "
                                     "pairwise distance of the true sample"}

        stages.append(("mmd", mmd))

    if c["nn"]["enabled"]:
        def nn() -> dict[str, Any]:
            s = c["nn"]
            n = size(s["n"])
            kw = dict(width=s["width"], depth=s["depth"], steps=s["steps"], lr=s["lr"],
                      batch_size=s["batch_size"], train_fraction=s["train_fraction"])
            # the same stream for both: identical critic init, splits and batches, so metric and
            # floor differ only by the sample being judged
            r = D.neural_net_distance(x_gen[:n], x_ref[:n], generator=torch_generator(seed, "eval_nn"), **kw)
            f = D.neural_net_distance(x_floor[:n], x_ref[:n], generator=torch_generator(seed, "eval_nn"),
                                      **kw)
            return {"nn_dist": r.value, "nn_dist_floor": f.value, "nn_dist_train_gap": r.train_gap,
                    "nn_dist_floor_train_gap": f.train_gap, "nn_dist_class": r.critic_class,
                    "nn_dist_n": n, "nn_dist_steps": r.steps}

        stages.append(("nn_dist", nn))

    if c["support"]["enabled"]:
        def support() -> dict[str, Any]:
            s = c["support"]
            tau = D.collision_threshold(x_ref)
            atoms = D.true_atoms(x_ref)
            cap = min(x_ref.shape[0], x_gen.shape[0], x_floor.shape[0]) // 4
            mb = max(2, min(s["max_batch"] or cap, cap))
            out = D.birthday_support(x_gen, tau, max_batch=mb, n_batches=s["n_batches"], atoms=atoms,
                                     generator=numpy_generator(seed, "eval_support"))
            fl = D.birthday_support(x_floor, tau, max_batch=mb, n_batches=s["n_batches"], atoms=atoms,
                                    generator=numpy_generator(seed, "eval_support"))
            out.update({f"{k}_floor": v for k, v in fl.items() if k != "support_threshold"})
            out["support_true_atoms"] = int(len(atoms))
            out["support_max_batch"] = mb
            return out

        stages.append(("support", support))
    return stages

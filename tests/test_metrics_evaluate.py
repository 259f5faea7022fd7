"""The shared evaluation: configs, floors, parameter error wiring, and honest failure records."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import pfbench.metrics.evaluate as E
from pfbench import CONF_DIR, ConfigError
from pfbench.config import validate
from pfbench.families import build_family, make_instance
from pfbench.metrics.evaluate import REGISTRY, Distance, EvalConfig, evaluate, is_validated, resolve_eval_config
from pfbench.models.nets import MLPGenerator
from pfbench.seeding import torch_generator
from tests.runner import compose_cfg

DISTANCES = ("w1", "w2", "sw", "mmd", "nn_dist")
SMALL = {"name": "small", "n_samples": 400, "w1": {"n": 400, "null_n": 200, "null_draws": 19},
         "w2": {"n": 200, "null_n": 100, "null_draws": 19},
         "sw": {"n": 400, "n_projections": 100, "null_draws": 19}, "mmd": {"n": 400, "null_draws": 19},
         "nn": {"n": 400, "steps": 100, "width": 32, "null_draws": 99}, "support": {"n_batches": 10},
         "moments": {"n": 400, "null_draws": 59}, "copying": {"n": 400, "cells": 5},
         "param_error": {"restarts": 2}}
#: SMALL as the evaluation was before the calibrated verdicts (issue 12): no nulls, moments or copying test
SMALL_OLD = {**SMALL, **{k: {**SMALL[k], "null_draws": 0} for k in ("w1", "w2", "sw", "mmd", "nn")},
             "moments": {"enabled": False}, "copying": {"enabled": False}}


def relu_truth(seed: int = 0):
    truth = make_instance("relu", 5, 5, generator=torch_generator(seed, "instance"))
    return truth, truth.sample(400, torch_generator(seed, "test"))


def copy_of(truth, shift_b: float = 0.0):
    m = build_family("relu", 5, 5, dtype=torch.float32).set_params(truth.params())
    with torch.no_grad():
        m.b.add_(shift_b)
    return m


# --------------------------------------------------------------------------------------------- configs


def _keys(tree):
    return {k: _keys(v) if isinstance(v, dict) else None for k, v in tree.items()}


@pytest.mark.parametrize("path", sorted((CONF_DIR / "eval").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_eval_config_file_validates_and_spells_out_every_key(path):
    raw = OmegaConf.load(path)
    c = resolve_eval_config(raw, n_test=2000)  # with the start-up memory check at the default n_test
    assert is_validated(c) and c.name == path.stem
    # no silent reliance on the schema's defaults: every key of every block is written out
    assert _keys(OmegaConf.to_container(raw)) == _keys(OmegaConf.to_container(OmegaConf.structured(EvalConfig)))


def test_eval_files_grow_and_missing_keys_take_the_default_file():
    res = {name: resolve_eval_config(OmegaConf.load(CONF_DIR / "eval" / f"{name}.yaml"))
           for name in ("fast", "default", "full")}
    assert res["fast"]["n_samples"] < res["default"]["n_samples"] < res["full"]["n_samples"]
    assert res["fast"]["w1"]["n"] < res["default"]["w1"]["n"] < res["full"]["w1"]["n"]
    assert res["fast"].nn.steps < res["default"].nn.steps < res["full"].nn.steps
    # a partial eval config gets conf/eval/default.yaml's values (the schema's defaults are that file)
    assert OmegaConf.to_container(resolve_eval_config({})) == OmegaConf.to_container(res["default"])
    part = resolve_eval_config({"nn": {"steps": 7}})
    assert part.nn.steps == 7 and part.nn.width == res["default"].nn.width and part.w2 == res["default"].w2


@pytest.mark.parametrize("cfg,message", [
    ({"w3": {}}, "unknown key eval.w3; valid keys: ['alpha', 'copying', 'mmd', 'moments', 'n_samples', 'name', 'nn', "
                 "'param_error', 'support', 'sw', 'w1', 'w2']"),
    ({"nn": {"widht": 3}}, "unknown key eval.nn.widht; valid keys: ['batch_size', 'depth', 'enabled', 'lr', 'n', "),
    # wrong types: exactly the schema's (no 'yes' -> true, '500' -> 500 conversion)
    ({"w1": {"n": "500"}}, "eval.w1.n='500' must be an integer"),
    ({"w1": {"n": 2.5}}, "eval.w1.n=2.5 must be an integer"),
    ({"w1": {"enabled": 1}}, "eval.w1.enabled=1 must be true or false"),
    ({"nn": {"lr": "fast"}}, "eval.nn.lr='fast' must be a number"),
    ({"w2": {"max_iter": "x"}}, "eval.w2.max_iter='x' must be an integer or null"),
    ({"n_samples": None}, "eval.n_samples=None must be an integer"),
    ({"name": 3}, "eval.name=3 must be a string"),
    ({"sw": 200}, "eval.sw must be a mapping with keys ['enabled', 'n', 'n_projections', 'null_draws', 'p'], got 200"),
    ({"alpha": "0.05"}, "eval.alpha='0.05' must be a number"),
    # out of range
    ({"n_samples": 3}, "eval.n_samples=3 must be an integer >= 4"),
    ({"mmd": {"n": 1}}, "eval.mmd.n=1 must be an integer >= 2"),
    ({"nn": {"train_fraction": 1.0}}, "eval.nn.train_fraction=1.0 must be a number in (0, 1)"),
    ({"nn": {"lr": 0}}, "eval.nn.lr=0.0 must be a positive number"),
    ({"support": {"max_batch": 1}}, "eval.support.max_batch=1 must be an integer >= 2"),
    ({"param_error": {"restarts": -1}}, "eval.param_error.restarts=-1 must be an integer >= 0"),
    ({"w2": {"max_memory_gb": 0}}, "eval.w2.max_memory_gb=0.0 must be a positive number or null"),
    # the calibrated verdicts' settings
    ({"alpha": 0}, "eval.alpha=0.0 must be a number in (0, 1)"),
    ({"alpha": 1.5}, "eval.alpha=1.5 must be a number in (0, 1)"),
    ({"sw": {"null_draws": -1}}, "eval.sw.null_draws=-1 must be an integer >= 0"),
    ({"w1": {"null_n": 1}}, "eval.w1.null_n=1 must be an integer >= 2"),
    ({"mmd": {"null_draws": 10}}, "eval.mmd.null_draws=10 is too few for eval.alpha=0.05: the smallest p-value is "
                                  "1/(1 + 10); use 0 (no null) or at least 19"),
    ({"alpha": 0.01}, "eval.w1.null_draws=39 is too few for eval.alpha=0.01: the smallest p-value is 1/(1 + 39); "
                      "use 0 (no null) or at least 99"),
    ({"moments": {"folds": 1}}, "eval.moments.folds=1 must be an integer >= 2"),
    ({"moments": {"n": 20, "folds": 10}}, "eval.moments.folds=10 needs eval.moments.n >= 3 folds = 30, got 20"),
    ({"moments": {"sketch_dim": 0}}, "eval.moments.sketch_dim=0 must be an integer >= 1"),
    ({"copying": {"cells": 0}}, "eval.copying.cells=0 must be an integer >= 1"),
    ({"copying": {"max_train": 0}}, "eval.copying.max_train=0 must be an integer >= 1"),
    ({"copying": {"min_cell": True}}, "eval.copying.min_cell=True must be an integer"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_bad_eval_value_is_one_line_error_naming_the_key(cfg, message):
    with pytest.raises(ConfigError) as e:
        resolve_eval_config(cfg)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_run_config_is_validated_once(monkeypatch):
    # pfbench.config.validate checks cfg.eval (with the memory guard against data.n_test) ...
    with pytest.raises(ConfigError, match=r"eval\.w1\.n=2000: the exact solve at n=2000 needs .* GB"):
        validate(compose_cfg(["+model=wgan", "logger=none", "eval.w1.max_memory_gb=0.01"]))
    cfg = validate(compose_cfg(["+model=wgan", "logger=none", "eval=fast", "eval.sw.n_projections=7"]))
    assert is_validated(cfg.eval) and cfg.eval.name == "fast" and cfg.eval.sw.n_projections == 7
    # ... and nothing checks it again: resolve_eval_config returns it as it is, evaluate uses it so
    calls = []
    monkeypatch.setattr(E.SWConfig, "check", lambda self, key: calls.append(key))
    assert resolve_eval_config(cfg.eval) is cfg.eval
    assert resolve_eval_config(cfg.eval)["param_error"]["restarts"] == 1  # what train.py reads
    truth, x_test = relu_truth(7)
    off = {name: {"enabled": False} for name in ("w1", "w2", "mmd", "nn", "support", "param_error")}
    small = resolve_eval_config({**off, "n_samples": 100, "sw": {"n": 100, "n_projections": 10}})
    assert calls == ["eval.sw"]
    rec = evaluate(copy_of(truth), x_test, truth=truth, cfg=small, seed=0)
    assert calls == ["eval.sw"] and rec["sw_n_projections"] == 10


@dataclass
class ToyConfig:
    enabled: bool = True
    n: int = 50

    def check(self, key: str) -> None:
        if self.n < 1:
            raise ConfigError(f"{key}.n={self.n} must be an integer >= 1")


def mean_gap(s, x_gen, x_ref, x_floor, seed):
    """A toy distance: the largest coordinate gap between sample means, on the first n points."""
    n = min(s.n, len(x_gen), len(x_ref), len(x_floor))

    def gap(x):
        return float(np.abs(x[:n].mean(0) - x_ref[:n].mean(0)).max())

    return {"mean_gap": gap(x_gen), "mean_gap_floor": gap(x_floor), "mean_gap_n": n}


def test_a_registered_distance_is_configured_evaluated_and_nulled(monkeypatch):
    # a new distance is its function and one registry entry (and its block in conf/eval/*.yaml)
    monkeypatch.setattr(E, "REGISTRY", (*REGISTRY, Distance("toy", ToyConfig, "mean_gap", mean_gap)))
    truth, x_test = relu_truth(6)
    cfg = {**{d.name: {"enabled": False} for d in REGISTRY}, "param_error": {"enabled": False},
           "n_samples": 200, "toy": {"n": 150}}
    rec = evaluate(copy_of(truth, 0.5), x_test, truth=truth, cfg=cfg, seed=0)
    assert rec["mean_gap_n"] == 150 and rec["mean_gap"] > rec["mean_gap_floor"] > 0.0
    assert rec["mean_gap_time_s"] >= 0.0 and not any(k in rec for k in DISTANCES)
    # validated like every block: defaults, unknown keys, ranges
    assert resolve_eval_config({}).toy.n == 50
    with pytest.raises(ConfigError, match=r"unknown key eval\.toy\.m; valid keys: \['enabled', 'n'\]"):
        resolve_eval_config({"toy": {"m": 1}})
    with pytest.raises(ConfigError, match=r"eval\.toy\.n=0 must be"):
        resolve_eval_config({"toy": {"n": 0}})
    # non-finite generated samples: null beside the others
    model = copy_of(truth)
    with torch.no_grad():
        model.W[0, 0] = float("nan")
    rec = evaluate(model, x_test, truth=truth, cfg={**cfg, "w1": {"n": 100}}, seed=0)
    assert rec["mean_gap"] is None and rec["mean_gap_floor"] is None and rec["w1"] is None


def test_bad_eval_config_is_one_line_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"unknown key eval\.w3"):
        resolve_eval_config({"w3": {}})
    with pytest.raises(ConfigError, match=r"unknown key eval\.nn\.widht"):
        resolve_eval_config({"nn": {"widht": 3}})
    with pytest.raises(ConfigError, match=r"eval\.sw\.n_projections=0"):
        resolve_eval_config({"sw": {"n_projections": 0}})
    with pytest.raises(ConfigError, match=r"eval\.sw\.p=3"):
        resolve_eval_config({"sw": {"p": 3}})
    with pytest.raises(ConfigError, match=r"eval\.w1\.enabled"):
        resolve_eval_config({"w1": {"enabled": "yes"}})
    # the memory guard can fire at start-up, before any training
    with pytest.raises(ConfigError, match=r"eval\.w1\.n=2000.*GB.*eval\.sw"):
        resolve_eval_config({"w1": {"max_memory_gb": 0.01}}, n_test=2000)
    assert resolve_eval_config({"w1": {"max_memory_gb": 0.01}}, n_test=100)["w1"]["n"] == 2000


# ------------------------------------------------------------------------------------------- records


def test_record_is_flat_json_deterministic_and_has_param_error():
    truth, x_test = relu_truth(1)
    model = copy_of(truth, 0.0)
    rec = evaluate(model, x_test, truth=truth, cfg=SMALL, seed=1)
    again = evaluate(model, x_test, truth=truth, cfg=SMALL, seed=1)
    drop = [k for k in rec if "time" in k]
    assert {k: v for k, v in rec.items() if k not in drop} == \
        {k: v for k, v in again.items() if k not in drop}
    json.dumps(rec, allow_nan=False)  # strictly JSON: no NaN/inf, only scalars
    assert all(v is None or isinstance(v, str | int | float | bool) for v in rec.values())
    assert rec["eval_status"] == "ok"
    for k in DISTANCES:
        assert isinstance(rec[k], float) and isinstance(rec[f"{k}_floor"], float)
        assert 0 < rec[f"{k}_pvalue"] <= 1 and rec[f"{k}_verdict"].startswith(("different", "indistinguishable"))
    assert rec["w1_converged"] is True and rec["w1_floor_converged"] is True
    # the same parameters (float32 copy of the float64 truth): gauge error at float32 rounding
    assert 0.0 <= rec["param_error"] <= 1e-6
    assert rec["param_error_status"] == "ok"
    assert {"param_error_gram", "param_error_procrustes", "param_error_bias"} <= set(rec)
    assert "1-Lipschitz" in rec["nn_dist_class"]
    # this ReLU instance has an atom at 0 (all pre-activations negative): set aside, then no collision
    assert rec["support_true_atoms"] >= 1 and 0.02 <= rec["support_atom_fraction"] <= 0.2
    assert rec["support_size"] is None and rec["support_lower_bound"] >= 64**2
    assert rec["eval_time_s"] >= rec["w1_time_s"] >= 0.0


@pytest.mark.parametrize("with_truth", [True, False], ids=["truth", "user-data"])
def test_a_shared_memo_gives_the_same_numbers_without_recomputing_the_floors(monkeypatch, with_truth):
    # a run evaluates its final, selected and EMA generators against the same data: the floors, the
    # references' preprocessing and the fresh-draw nulls do not read the generator and are done once
    truth, x_test = relu_truth(8)
    x_train = truth.sample(600, torch_generator(8, "train"))
    ref = truth if with_truth else None
    models = [copy_of(truth, 0.1), copy_of(truth, 0.3)]

    def run(model, x=x_test, **kw):
        rec = evaluate(model, x, truth=ref, cfg=SMALL, seed=2, x_train=x_train, **kw)
        return {k: v for k, v in rec.items() if "time" not in k}

    alone = [run(m) for m in models]
    solves = []
    exact = E.D.wasserstein_result
    monkeypatch.setattr(E.D, "wasserstein_result", lambda *a, **k: solves.append(a[0].shape[0]) or exact(*a, **k))
    memo: dict = {}
    assert run(models[0], memo=memo) == alone[0]
    first = len(solves)
    assert run(models[1], memo=memo) == alone[1]
    if with_truth:
        # w1 (n 400, null_n 200) and w2 (200, 100), 19 draws each: the generated sample at n and at null_n,
        # the floor sample at both, 18 fresh draws; the second generator needs its own two solves only
        assert (first, len(solves) - first) == (44, 4)
    else:  # user data, n = 200 (half of x_test): the permutation nulls pool the generated sample, so only
        # the three floor solves are shared (w1 at 200 = its null_n, w2 at 200 and 100)
        assert (first, len(solves) - first) == (42, 39)
    # other data (or seed, or settings): the memo is emptied, not misapplied
    assert run(models[1], x=x_test[:300], memo=memo) == run(models[1], x=x_test[:300])


@pytest.mark.parametrize("with_truth", [True, False], ids=["truth", "user-data"])
def test_the_calibration_changes_no_existing_number(with_truth):
    # the nulls, verdicts, moments and copying test only add keys: every value the evaluation reported
    # before issue 12 is the same, bit for bit (the MMD's permutation null shares its kernel blocks)
    truth, x_test = relu_truth(8)
    x_train = truth.sample(600, torch_generator(8, "train"))
    model = copy_of(truth, 0.1)
    on = evaluate(model, x_test, truth=truth if with_truth else None, cfg=SMALL, seed=2, x_train=x_train)
    off = evaluate(model, x_test, truth=truth if with_truth else None, cfg=SMALL_OLD, seed=2)
    old = {k: v for k, v in off.items() if "time" not in k}
    assert {k: on[k] for k in old} == old
    added = set(on) - set(off)
    for key in DISTANCES:
        assert {f"{key}_null", f"{key}_null_draws", f"{key}_floor_mean", f"{key}_floor_std", f"{key}_pvalue",
                f"{key}_z", f"{key}_verdict"} <= added, key
    assert {"moments", "moments_floor", "moments_verdict", "copying", "copying_floor", "copying_pvalue",
            "copying_verdict"} <= added and on["alpha"] == 0.05 and on["support_verdict"]
    assert on["w1_floor_std"] > 0 and on["copying_verdict"].startswith(("no data copying", "copying suspected"))
    kind = "fresh true draws" if with_truth else "permutation of pooled samples"
    assert on["sw_null"].startswith(kind) and on["w1_null"].startswith(kind) and on["moments_null"].startswith(kind)
    assert on["mmd_null"].startswith("permutation of pooled samples")


@pytest.mark.slow
def test_floor_separates_shifted_from_same_distribution():
    # One truth and test sample, 6 evaluation seeds: a model with the true parameters gives metrics
    # distributed like their floors (the same statistic); shifting b by 0.3 moves every distance
    # far above the floor band.
    same_m, same_f, shift_m = ({k: [] for k in DISTANCES} for _ in range(3))
    truth, x_test = relu_truth(0)
    for seed in range(6):
        a = evaluate(copy_of(truth), x_test, truth=truth, cfg=SMALL, seed=seed)
        b = evaluate(copy_of(truth, 0.3), x_test, truth=truth, cfg=SMALL, seed=seed)
        for k in DISTANCES:
            same_m[k].append(a[k])
            same_f[k].append(a[f"{k}_floor"])
            shift_m[k].append(b[k])
        assert abs(b["param_error_bias"] - 0.3 * math.sqrt(5) / truth.params()["W"].norm().item()) <= 1e-6
    for k in DISTANCES:
        m, f = np.array(same_m[k]), np.array(same_f[k])
        sd = math.sqrt((m.var(ddof=1) + f.var(ddof=1)) / 2)  # spread of one value of the statistic
        # same distribution: the means differ by at most 3 sd (about 5 standard errors of the difference)
        assert abs(m.mean() - f.mean()) <= 3 * sd, k
        # shifted: every seed clearly above the floor band
        assert min(shift_m[k]) >= f.mean() + 5 * sd, k


def test_user_data_floor_from_halves_and_param_error_skipped():
    truth, x_test = relu_truth(2)
    rec = evaluate(copy_of(truth, 0.2), x_test, truth=None, cfg=SMALL, seed=0)
    assert rec["n_reference"] == 200 and rec["w1_n"] == 200
    assert "second half" in rec["floor_source"]
    assert rec["param_error"] is None and "user data" in rec["param_error_status"]
    assert rec["w1"] > rec["w1_floor"] > 0.0


def test_non_finite_samples_are_reported_not_scored():
    truth, x_test = relu_truth(3)
    model = copy_of(truth)
    with torch.no_grad():
        model.W[0, 0] = float("nan")
    rec = evaluate(model, x_test, truth=truth, cfg=SMALL, seed=0)
    assert rec["eval_status"] == "non-finite samples"
    assert 0.0 < rec["nonfinite_fraction"] <= 1.0
    assert all(rec[k] is None for k in DISTANCES)
    assert rec["param_error"] is None and "non-finite" in rec["param_error_status"]
    json.dumps(rec, allow_nan=False)


def test_non_converged_exact_solve_is_null_with_reason():
    truth, x_test = relu_truth(4)
    cfg = {**SMALL, "w1": {"n": 400, "max_iter": 20}, "w2": {"enabled": False}, "nn": {"enabled": False},
           "mmd": {"enabled": False}, "support": {"enabled": False}}
    rec = evaluate(copy_of(truth, 0.2), x_test, truth=truth, cfg=cfg, seed=0)
    assert rec["w1"] is None and rec["w1_converged"] is False
    assert "max_iter=20" in rec["w1_reason"]
    assert rec["w1_floor"] is None and rec["w1_floor_converged"] is False
    assert "w2" not in rec and "nn_dist" not in rec
    assert isinstance(rec["sw"], float)


def test_param_error_skipped_for_other_classes_and_architectures():
    truth, x_test = relu_truth(5)
    mlp = MLPGenerator(5, 5, width=8, depth=1).reset_random_(torch.Generator().manual_seed(0))
    rec = evaluate(mlp, x_test, truth=truth, cfg=SMALL, seed=0)
    assert rec["param_error"] is None and "not in the true family" in rec["param_error_status"]
    deep = make_instance("relu_deep", 3, 6, hidden=[4], generator=torch.Generator().manual_seed(0))
    other = build_family("relu_deep", 3, 6, hidden=[5])
    xd = deep.sample(100, torch.Generator().manual_seed(1))
    rec = evaluate(other, xd, truth=deep, cfg=OmegaConf.load(CONF_DIR / "eval" / "fast.yaml"), seed=0)
    assert rec["param_error"] is None and "architectures differ" in rec["param_error_status"]


def test_fast_config_runs_on_a_tiny_run():
    truth = make_instance("quadratic", 3, 8, generator=torch_generator(0, "instance"))
    x_test = truth.sample(300, torch_generator(0, "test"))
    model = build_family("quadratic", 3, 8).reset_random_(torch_generator(0, "init"))
    cfg = OmegaConf.load(CONF_DIR / "eval" / "fast.yaml")
    rec = evaluate(model, x_test, truth=truth, cfg=cfg, seed=0)
    # its cost is measured in scripts/bench_metrics.py, not here: a shared machine's time is noise
    assert rec["eval_time_s"] > 0.0
    assert rec["eval_name"] == "fast" and rec["w1_n"] == 256
    # an unrelated random instance is far from the truth in parameters
    assert 0.5 <= rec["param_error"] <= 2.5

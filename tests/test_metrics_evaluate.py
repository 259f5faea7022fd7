"""The shared evaluation: configs, floors, parameter error wiring, and honest failure records."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from pfbench import CONF_DIR, ConfigError
from pfbench.families import build_family, make_instance
from pfbench.metrics.evaluate import EVAL_DEFAULTS, evaluate, resolve_eval_config
from pfbench.models.nets import MLPGenerator
from pfbench.seeding import torch_generator

DISTANCES = ("w1", "w2", "sw", "mmd", "nn_dist")
SMALL = {"name": "small", "n_samples": 400, "w1": {"n": 400}, "w2": {"n": 200},
         "sw": {"n": 400, "n_projections": 100}, "mmd": {"n": 400},
         "nn": {"n": 400, "steps": 100, "width": 32}, "support": {"n_batches": 10},
         "param_error": {"restarts": 2}}


def relu_truth(seed: int = 0):
    truth = make_instance("relu", 5, 5, generator=torch_generator(seed, "instance"))
    return truth, truth.sample(400, torch_generator(seed, "test"))


def copy_of(truth, shift_b: float = 0.0):
    m = build_family("relu", 5, 5, dtype=torch.float32).set_params(truth.params())
    with torch.no_grad():
        m.b.add_(shift_b)
    return m


# --------------------------------------------------------------------------------------------- configs


def test_config_files_resolve_and_default_mirrors_code():
    cfgs = {name: OmegaConf.load(CONF_DIR / "eval" / f"{name}.yaml") for name in ("fast", "default", "full")}
    assert OmegaConf.to_container(cfgs["default"]) == EVAL_DEFAULTS
    res = {name: resolve_eval_config(c) for name, c in cfgs.items()}
    for name, r in res.items():
        assert r["name"] == name
        # every file spells out every key (no silent reliance on code defaults)
        assert set(OmegaConf.to_container(cfgs[name])) == set(EVAL_DEFAULTS)
    for key in ("n_samples",):
        assert res["fast"][key] < res["default"][key] < res["full"][key]
    assert res["fast"]["w1"]["n"] < res["default"]["w1"]["n"] < res["full"]["w1"]["n"]
    assert res["fast"]["nn"]["steps"] < res["default"]["nn"]["steps"] < res["full"]["nn"]["steps"]


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

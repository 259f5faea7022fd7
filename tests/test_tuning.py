"""Equal-budget hyperparameter searches (conf/hparams_search, Hydra's Optuna sweeper) and
scripts/apply_tuning.py, which turns a finished search into +model=<method>_tuned."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Transformer

from pfbench import CONF_DIR, ROOT
from tests.runner import run_cli

METHODS = ["wgan", "wgan_gp", "jsgan", "jsgan_minimax", "vae"]
TINY = ["data.n_train=64", "data.n_test=64", "data.n_val=64", "eval=fast", "logger=none", "plots=false",
        "progress=false", "model.train.steps=4", "model.train.batch_size=16", "model.train.eval_every=2",
        "model.train.log_every=1"]


def _apply_tuning():
    spec = importlib.util.spec_from_file_location("apply_tuning", ROOT / "scripts" / "apply_tuning.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _sweeper(method: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"+hparams_search={method}"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    return cfg.hydra.sweeper


def _split(params) -> tuple[dict, dict]:
    """(search space {key: parsed override}, fixed {key: value string}) of hydra.sweeper.params."""
    space, fixed = {}, {}
    for k, v in params.items():
        o = OverridesParser.create().parse_override(f"{k}={v}")
        (space if o.is_sweep_override() else fixed)[k] = o if o.is_sweep_override() else str(v)
    return space, fixed


def test_every_method_gets_the_same_search_budget():
    sweepers = {m: _sweeper(m) for m in METHODS}
    ref = sweepers["wgan"]
    for m, s in sweepers.items():
        assert s._target_.endswith("OptunaSweeper") and s.direction == "minimize"
        assert s.sampler._target_ == "optuna.samplers.TPESampler" and s.sampler.seed is not None
        for key in ("n_trials", "n_jobs", "max_failure_rate", "storage"):
            assert s[key] == ref[key], (m, key)
        assert s.sampler == ref.sampler, m
        space, fixed = _split(s.params)
        assert fixed.pop("+model") == m  # the search config names its own method
        assert fixed == {k: v for k, v in _split(ref.params)[1].items() if k != "+model"}, m
        assert fixed["seed"] not in {str(i) for i in range(5)}  # the experiments' seeds stay fresh
        assert {"++model.train.steps", "++model.train.eval_every", "data.n_train", "data.n_val"} <= set(fixed)
        assert "++model.train.lr_g" in space
    assert ref.n_trials == 12


def _in_space(o, value) -> bool:
    if o.is_interval_sweep():
        v = o.value()
        return v.start <= value <= v.end
    return value in list(o.sweep_iterator(transformer=Transformer.encode))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["wgan_gp", "vae"])
def test_two_trial_search_then_tuned_model(tmp_path, method):
    sweep = tmp_path / "search"
    p = run_cli(["-m", f"+model={method}", f"+hparams_search={method}", f"hydra.sweep.dir={sweep}",
                 "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=1", *TINY], tmp_path / "unused", timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "pfbench sweep: 2 jobs ->" in p.stderr

    res = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    space, _ = _split(_sweeper(method).params)
    assert res["best_params"] and set(res["best_params"]) <= set(space)
    for k, v in res["best_params"].items():
        assert _in_space(space[k], v), (k, v)
    trials = sorted(sweep.glob("*/metrics.json"))
    assert len(trials) == 2
    records = [json.loads(f.read_text()) for f in trials]
    assert all(r["seed"] == 1000 and r["steps"] == 4 for r in records)  # the command line beat the budget
    objectives = [math.inf if r.get("objective") is None else float(r["objective"]) for r in records]
    assert isinstance(res["best_value"], float) and math.isfinite(res["best_value"])
    assert res["best_value"] == pytest.approx(min(objectives), rel=1e-12)

    conf = tmp_path / "conf"
    # a name of its own: conf/model/<method>_tuned.yaml (the committed tuning) would shadow a searchpath copy
    out = _apply_tuning().apply(sweep, conf / "model" / f"{method}_tuned_ci.yaml")
    tuned = yaml.safe_load(out.read_text())
    assert tuned["defaults"] == [method, "_self_"]
    assert tuned["tuned"].startswith(f"hparams_search={method} ") and "2 trials" in tuned["tuned"]

    run_dir = tmp_path / "tuned_run"
    p = run_cli([f"+model={method}_tuned_ci", f"hydra.searchpath=[file://{conf}]", "seed=0", *TINY], run_dir)
    assert p.returncode == 0, p.stderr[-3000:]
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["model"]["name"] == method and cfg["model"]["tuned"] == tuned["tuned"]
    for k, v in res["best_params"].items():
        key = k.lstrip("+").split(".")
        assert key[0] == "model"
        got = cfg["model"]
        for part in key[1:]:
            got = got[part]
        want = OverridesParser.create().parse_override(f"{k}={v}").value()
        assert got == want, (k, got, want)
    assert json.loads((run_dir / "metrics.json").read_text())["tuned"] == tuned["tuned"]


def test_apply_tuning_refuses_bad_results_and_writes_nothing(tmp_path, capsys):
    at = _apply_tuning()
    out = tmp_path / "model" / "x_tuned.yaml"
    cases = {
        "missing": None,
        "malformed": "name: optuna\nbest_params: {a: [1\n",
        "not_a_mapping": "- 1\n",
        "all_failed": "name: optuna\nbest_params:\n  ++model.train.lr_g: 0.001\nbest_value: .inf\n",
        "not_model": "name: optuna\nbest_params:\n  data.n_train: 100\nbest_value: 1.0\n",
        "no_trials": "name: optuna\nbest_params:\n  ++model.train.lr_g: 0.001\nbest_value: 1.0\n",
    }
    for name, text in cases.items():
        d = tmp_path / name
        d.mkdir()
        if text is not None:
            (d / "optimization_results.yaml").write_text(text)
        assert at.main([str(d), "--out", str(out)]) == 2, name
        err = capsys.readouterr().err.strip()
        assert err.startswith("apply_tuning: error: ") and "\n" not in err, (name, err)
        assert not out.exists() and not out.parent.exists(), name

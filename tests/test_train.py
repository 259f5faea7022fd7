"""End-to-end: every +model on every data at tiny size, resume equality, divergence, bad configs."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from pfbench import CONF_DIR, ConfigError
from pfbench.config import validate
from tests.runner import TINY, compose_cfg, metrics, run_cli, run_inprocess

DATA = {
    "quadratic": ["data.latent_dim=2", "data.out_dim=4"],
    "polynomial": ["data.latent_dim=2", "data.out_dim=4"],
    "relu": ["data.latent_dim=2", "data.out_dim=3"],
    "relu_deep": ["data.latent_dim=2", "data.out_dim=8", "data.hidden=[5]"],
}
MODELS = {
    "wgan": [],
    "wgan_gp": [],
    "jsgan": ["model.loss=non_saturating"],
    "jsgan-minimax": ["model.loss=minimax"],
    "vae": [],
}


@pytest.mark.parametrize("data", sorted(DATA))
@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_model_on_every_data(model, data, tmp_path):
    gen = "family" if model != "wgan_gp" else "mlp"  # one generic-MLP generator among the options
    ov = [f"+model={model.split('-')[0]}", f"data={data}", *DATA[data], *MODELS[model], *TINY,
          f"model.generator={gen}"]
    rec = run_inprocess(ov, tmp_path)
    assert rec["status"] == "completed", rec.get("reason")
    assert rec["steps"] == 3
    on_disk = metrics(tmp_path)
    assert on_disk["metrics"] == rec["metrics"]
    m = on_disk["metrics"]
    assert m["w1"] is not None and 0 < m["w1"] < 1e3 and m["w1_floor"] > 0
    assert 0 <= m["sw"] < 1e3
    if gen == "family":
        assert 0 <= m["param_error"] < 1e3
    else:
        assert m["param_error"] is None and m["param_error_status"].startswith("skipped: the generator (MLP")
    assert (tmp_path / "generator.pt").exists() and (tmp_path / "checkpoint.pt").exists()
    assert (tmp_path / "config.yaml").exists()


def test_same_seed_same_metrics_and_seed_zero(tmp_path):
    ov = ["+model=wgan", "seed=0", *TINY]
    a = run_inprocess(ov, tmp_path / "a")
    b = run_inprocess(ov, tmp_path / "b")
    c = run_inprocess([*ov[:1], "seed=1", *TINY], tmp_path / "c")
    assert a["metrics"] == b["metrics"]
    assert (tmp_path / "a/metrics.json").read_text().split('"timing"')[0] == \
        (tmp_path / "b/metrics.json").read_text().split('"timing"')[0]
    assert a["metrics"]["w1"] != c["metrics"]["w1"]


def test_divergence_is_recorded_not_raised(tmp_path):
    ov = ["+model=jsgan", *TINY, "model.train.lr_g=1e30", "model.train.lr_d=1e30", "model.train.steps=50"]
    rec = run_inprocess(ov, tmp_path)
    assert rec["status"] == "diverged"
    assert 1 <= rec["diverged_step"] <= 50 and rec["steps"] == rec["diverged_step"]
    assert "non-finite" in rec["reason"]
    assert metrics(tmp_path)["status"] == "diverged"


@pytest.mark.parametrize("override,message", [
    ("data.n_train=0", "data.n_train=0 must be > 0"),
    ("data.latent_dim=0", "data.latent_dim=0 must be >= 1"),
    ("data.out_dim=-2", "data.out_dim=-2 must be >= 1"),
    ("data.instance.sigma=-0.5", "data.instance.sigma=-0.5 must be >= 0"),
    ("+data.n_tarin=5", "unknown config key 'data.n_tarin'; valid keys under data: ["),
    ("+model.train.stepz=5", "unknown config key 'model.train.stepz'; valid keys under model.train: ["),
    ("model.train.steps=abc", "bad value for 'model.train.steps'"),
    ("model.loss=hinge", "model.loss='hinge' is not valid for +model=wgan"),
    ("model.generator=cnn", "model.generator='cnn' must be family or mlp"),
    ("seed=-3", "seed=-3 must be an integer >= 0"),
    ("+eval.w3.enabled=true", "unknown key eval.w3; valid keys: ["),
    ("+logger.projekt=x", "unknown config key 'logger.projekt'; valid keys under logger: ["),
    ("tasks.inversion.n=0", "tasks.inversion: n=0 must be >= 1"),
])
def test_bad_config_one_line_error(override, message, tmp_path):
    from pfbench.train import run

    cfg = compose_cfg(["+model=wgan", *TINY, override])
    with pytest.raises(ConfigError) as e:
        run(cfg, tmp_path)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_cli_bad_config_exits_2_with_one_line(tmp_path):
    p = run_cli(["+model=wgan", "data.n_train=-1", "logger=none"], tmp_path / "run")
    assert p.returncode == 2
    err = [line for line in p.stderr.splitlines() if line.strip()]
    assert err == ["pfbench: error: data.n_train=-1 must be > 0 (number of training samples)"]


def test_missing_model_is_explained():
    with pytest.raises(ConfigError, match=r"add \+model=<name>"):
        validate(compose_cfg(["logger=none"]))


def _generator_state(run_dir):
    return torch.load(run_dir / "generator.pt", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_killed_then_resumed_equals_uninterrupted(tmp_path):
    ov = ["+model=wgan", "data.n_train=512", "data.n_test=64", "eval=fast", "logger=none", "plots=false",
          "progress=false", "model.train.steps=600", "model.train.checkpoint_every=50",
          "model.train.batch_size=32"]
    full = tmp_path / "full"
    p = run_cli(ov, full)
    assert p.returncode == 0, p.stderr[-2000:]

    part = tmp_path / "part"
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.Popen([sys.executable, "-m", "pfbench.train", *ov, f"hydra.run.dir={part}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    ck = part / "checkpoint.pt"
    deadline = time.time() + 120
    while not ck.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ck.exists() and not (part / "metrics.json").exists(), "the run ended before it could be killed"
    step = torch.load(ck, weights_only=True)["step"]
    assert 50 <= step < 600

    p = run_cli([*ov, "resume=true"], part)
    assert p.returncode == 0, p.stderr[-2000:]
    rec = metrics(part)
    assert rec["resumed_from"] == step and rec["steps"] == 600
    a, b = _generator_state(full), _generator_state(part)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert rec["metrics"] == metrics(full)["metrics"]


def test_existing_checkpoint_without_resume_is_refused(tmp_path):
    ov = ["+model=wgan", *TINY]
    run_inprocess(ov, tmp_path)
    with pytest.raises(ConfigError, match=r"already holds a run \(.*checkpoint.pt.*\); set resume=true"):
        run_inprocess(ov, tmp_path)


def test_wandb_offline_files_match_metrics(tmp_path):
    from tests.wandb_files import summary_config_history

    ov = ["+model=wgan", *[o for o in TINY if not o.startswith("logger")], "logger=wandb", "logger.mode=auto"]
    rec = run_inprocess(ov, tmp_path)
    files = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    summary, config, history = summary_config_history(files[0])
    assert summary["status"] == "completed"
    assert math.isclose(summary["metrics.w1"], rec["metrics"]["w1"], rel_tol=1e-12)
    assert summary["steps"] == 3
    assert config["model.name"] == "wgan" and config["data.name"] == "quadratic" and config["seed"] == 0
    assert config["_job_type"] == "wgan"
    logged = [h["train/loss_g"] for h in history if "train/loss_g" in h]
    hist = json.loads((tmp_path / "history.json").read_text())["train"]
    assert logged == pytest.approx([h["loss_g"] for h in hist]) and len(hist) == 3


def test_downstream_tasks_run_on_the_fitted_generator(tmp_path):
    ov = ["+model=wgan", "data=relu_deep", "data.latent_dim=4", "data.hidden=[12]", "data.out_dim=30", *TINY,
          "tasks.inversion.enabled=true", "tasks.compressed_sensing.enabled=true",
          "tasks.compressed_sensing.ms=[3,25]", "tasks.compressed_sensing.n=3"]
    m = run_inprocess(ov, tmp_path)["metrics"]
    # the generator is expanding (4-12-30) and noise 1e-6: the LP recovers its own latents
    assert 0 <= m["inversion_rel_error_median"] <= 1e-4
    assert m["cs_error_m3"] > 0 and m["cs_error_m25"] > 0
    rec = run_inprocess(["+model=wgan", *TINY, "tasks.inversion.enabled=true"], tmp_path / "q")
    assert rec["metrics"]["inversion_status"].startswith("skipped: QuadraticPushforward")


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")))
def test_every_experiment_config_composes_and_validates(experiment):
    from pfbench.sweep import count_jobs

    cfg = compose_cfg([f"+experiment={experiment}", "+model=wgan"])
    params = cfg.hydra.sweeper.params
    assert params, "an experiment is a sweep"
    models = str(params.get("+model", "wgan")).split(",")
    fixed = [f"{k}={v}" for k, v in params.items() if k != "+model" and "," not in str(v) and "(" not in str(v)]
    for model in models:  # each model with the sweep's single-valued overrides, as a job gets them
        validate(compose_cfg([f"+model={model}", *fixed, f"+experiment={experiment}"]))
    n = count_jobs([f"{k}={v}" for k, v in params.items()])
    assert 2 <= n <= 200


@pytest.mark.parametrize("gen", ["family", "mlp"])
def test_generator_reloads_from_run_dir_and_serves_downstream_tasks(gen, tmp_path):
    from pfbench.data import make_data
    from pfbench.runs import load_generator, load_truth, main

    ov = ["+model=vae", "data=relu_deep", "data.latent_dim=3", "data.hidden=[8]", "data.out_dim=20", *TINY,
          f"model.generator={gen}", "model.generator_mlp.width=9"]
    rec = run_inprocess(ov, tmp_path)
    g = load_generator(tmp_path)
    z = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    state = torch.load(tmp_path / "generator.pt", weights_only=True)["state_dict"]
    assert g.state_dict().keys() == state.keys()
    truth = load_truth(tmp_path)
    truth_ref = make_data(validate(compose_cfg(ov))).truth
    assert torch.equal(truth(z), truth_ref(z))  # the same instance, rebuilt from config and seed
    assert rec["status"] == "completed"
    assert main([str(tmp_path), "--cs", "--ms", "4,40", "--n", "2"]) == 0
    down = json.loads((tmp_path / "downstream.json").read_text())
    assert down["cs_error_m4"] > 0 and down["cs_lasso_error_m40"] >= 0

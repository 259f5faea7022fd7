"""Three splits, periodic evaluation, checkpoint selection, early stopping and EMA (validation data only)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pfbench import ConfigError
from pfbench.config import validate
from pfbench.families import build_family, make_instance
from pfbench.seeding import torch_generator
from pfbench.selection import Monitor, ValidationStatistics, spearman
from pfbench.userdata import split_samples
from tests.runner import TINY, compose_cfg, run_inprocess

SMALL = ["data.latent_dim=2", "data.out_dim=4", "data.n_val=256", *TINY, "model.train.steps=12",
         "model.train.eval_every=3"]


def _no_timing(rec: dict) -> dict:
    out = {k: v for k, v in rec.items() if k != "timing"}
    return json.loads(json.dumps(out))


def test_synthetic_splits_are_disjoint_seeded_streams():
    from pfbench.data import make_data

    cfg = validate(compose_cfg(["+model=wgan", "data.n_train=300", "data.n_val=200", "data.n_test=100"]))
    a, b = make_data(cfg), make_data(cfg)
    assert a.x_train.shape == (300, 20) and a.x_val.shape == (200, 20) and a.x_test.shape == (100, 20)
    for x, y in ((a.x_train, b.x_train), (a.x_val, b.x_val), (a.x_test, b.x_test)):
        assert torch.equal(x, y)  # seeded
    rows = torch.cat([a.x_train, a.x_val, a.x_test])
    assert torch.unique(rows, dim=0).shape[0] == 600  # continuous draws: no row shared between splits
    # the validation stream is its own: adding it leaves the train and test samples as they were
    c = make_data(validate(compose_cfg(["+model=wgan", "data.n_train=300", "data.n_val=0", "data.n_test=100"])))
    assert c.x_val is None and torch.equal(c.x_train, a.x_train) and torch.equal(c.x_test, a.x_test)
    d = make_data(validate(compose_cfg(["+model=wgan", "data.n_train=300", "data.n_val=200", "data.n_test=100",
                                        "seed=1"])))
    assert not torch.equal(d.x_val, a.x_val)


def test_file_split_carves_disjoint_validation_rows():
    x = np.arange(200 * 3, dtype=float).reshape(200, 3)  # every row distinct
    kw = dict(n_test=40, n_train=None, min_train=2, path="x.npy", out_dim=3)
    tr, te, va = split_samples(x, n_val=30, generator=np.random.default_rng(0), **kw)
    assert (len(tr), len(te), len(va)) == (130, 40, 30)
    ids = [set(t[:, 0].numpy().tolist()) for t in (tr, te, va)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    tr0, te0, va0 = split_samples(x, n_val=0, generator=np.random.default_rng(0), **kw)
    assert va0 is None and torch.equal(te0, te)  # the test rows do not depend on n_val
    with pytest.raises(ConfigError, match=r"data.n_val=180 held out"):
        split_samples(x, n_val=180, generator=np.random.default_rng(0), **kw)


def test_validation_statistics_vanish_on_the_validation_sample_itself_and_grow_with_error():
    truth = make_instance("quadratic", 3, 8, generator=torch_generator(0, "instance"))
    x_val = truth.sample(4000, torch_generator(0, "val"))
    stats = ValidationStatistics(x_val, seed=0)
    same = stats(truth)  # fresh samples of the truth: only sampling noise (about n^-1/2)
    assert 0.0 < same["val_moments"] < 0.15 and 0.0 < same["val_sw"] < 0.05
    far = stats(build_family("quadratic", 3, 8, dtype=torch.float64).reset_random_(torch_generator(5, "x")))
    assert far["val_moments"] > 5 * same["val_moments"] and far["val_sw"] > 5 * same["val_sw"]
    # invariant to a common affine change of units (statistics live in validation-standardized z)
    moved = ValidationStatistics(3.0 * x_val + 1.0, seed=0)(_Affine(truth, 3.0, 1.0))
    assert moved["val_moments"] == pytest.approx(same["val_moments"], rel=1e-6)
    assert moved["val_sw"] == pytest.approx(same["val_sw"], rel=1e-6)


class _Affine(torch.nn.Module):
    """x -> scale G(z) + shift, for the units-invariance check."""

    def __init__(self, g, scale: float, shift: float):
        super().__init__()
        self.g, self.scale, self.shift, self.latent_dim = g, scale, shift, g.latent_dim
        self.anchor = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64), requires_grad=False)

    def forward(self, z):
        return self.scale * self.g(z) + self.shift


def test_spearman_matches_a_direct_rank_formula():
    a = [0.3, 0.1, 0.7, 0.5, 0.9]
    b = [1.0, 0.2, 0.8, 0.9, 3.0]
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    n = len(a)
    ref = 1 - 6 * np.sum((ra - rb) ** 2) / (n * (n * n - 1))
    assert spearman(a, b) == pytest.approx(ref, abs=1e-12)
    assert spearman([1, 2], [1, 2]) is None and spearman([1, 1, 1], [1, 2, 3]) is None


def test_selection_never_reads_the_test_split_or_the_truth(tmp_path):
    base = run_inprocess(["+model=wgan_gp", *SMALL], tmp_path / "base")
    # another test split (size and stream contents change) and no parameter error at all: same selection
    other_test = run_inprocess(["+model=wgan_gp", *SMALL, "data.n_test=80"], tmp_path / "test")
    no_truth = run_inprocess(["+model=wgan_gp", *SMALL, "eval.param_error.enabled=false"], tmp_path / "truth")
    sel = base["selection"]
    assert sel["n_evals"] == 4 and sel["step"] in (3, 6, 9, 12)
    for other in (other_test, no_truth):
        assert other["selection"]["step"] == sel["step"] and other["selection"]["value"] == sel["value"]
        assert other["objective"] == base["objective"]
    assert base["metrics"]["w1"] != other_test["metrics"]["w1"]  # the test split did change
    hist = json.loads((tmp_path / "base" / "history.json").read_text())["eval"]
    vals = [h[sel["statistic"]] for h in hist]
    assert sel["value"] == min(vals) and hist[int(np.argmin(vals))]["step"] == sel["step"]
    assert all(h["elapsed_s"] > 0 for h in hist) and [h["step"] for h in hist] == [3, 6, 9, 12]


def test_periodic_param_error_at_the_last_step_equals_the_final_evaluation(tmp_path):
    rec = run_inprocess(["+model=wgan", *SMALL], tmp_path)
    last = json.loads((tmp_path / "history.json").read_text())["eval"][-1]
    assert last["step"] == rec["steps"] == 12
    assert last["param_error"] == pytest.approx(rec["metrics"]["param_error"], rel=1e-12)
    sel = rec["selection"]
    hist = json.loads((tmp_path / "history.json").read_text())["eval"]
    chosen = next(h for h in hist if h["step"] == sel["step"])
    assert chosen["param_error"] == pytest.approx(rec["metrics_selected"]["param_error"], rel=1e-12)
    assert (tmp_path / "generator_selected.pt").exists()


def test_monitor_and_ema_leave_the_final_generator_unchanged(tmp_path):
    # periodic evaluation and EMA draw from their own streams and never touch the training state:
    # the final generator's metrics equal a run with both off (today's behaviour)
    off = run_inprocess(["+model=wgan", *SMALL, "model.train.eval_every=null"], tmp_path / "off")
    on = run_inprocess(["+model=wgan", *SMALL, "model.train.ema=0.9"], tmp_path / "on")
    assert "selection" not in off and "metrics_selected" not in off and "metrics_ema" not in off
    assert _no_timing(on)["metrics"] == _no_timing(off)["metrics"]
    assert on["metrics_ema"]["param_error"] != on["metrics"]["param_error"]
    s_off = torch.load(tmp_path / "off" / "generator.pt", weights_only=True)["state_dict"]
    s_on = torch.load(tmp_path / "on" / "generator.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(s_off[k], s_on[k]) for k in s_off)


def test_ema_is_the_exponential_average_of_the_iterates():
    g = build_family("quadratic", 2, 3)
    mon = Monitor(g, stats=None, eval_every=None, ema=0.5)
    seen = []
    for t in range(3):
        with torch.no_grad():
            g.Q.fill_(float(t + 1))
        seen.append(float(t + 1))
        mon.after_step(t + 1)
    # first update copies; then e <- 0.5 e + 0.5 p: 1 -> 1.5 -> 2.25
    assert torch.allclose(mon.ema_generator.Q, torch.full_like(g.Q, 2.25))


def test_early_stopping_stops_after_patience_evaluations_without_improvement(tmp_path):
    rec = run_inprocess(["+model=wgan", *SMALL, "model.train.steps=60", "model.train.eval_every=1",
                         "model.train.patience=2", "model.train.lr_g=0.3", "model.train.lr_d=0.3"], tmp_path)
    sel = rec["selection"]
    hist = json.loads((tmp_path / "history.json").read_text())["eval"]
    # at lr 0.3 the statistic stops improving within a few dozen steps (seen: stop at 15 of 60)
    assert sel["early_stopped_step"] is not None
    assert rec["steps"] == sel["early_stopped_step"] == hist[-1]["step"]
    vals = [h["val_moments"] for h in hist]
    best = int(np.argmin(vals))
    assert len(vals) - 1 - best == 2  # exactly `patience` evaluations after the best one
    assert sel["step"] == hist[best]["step"]


def test_resumed_selection_equals_uninterrupted(tmp_path):
    ov = ["+model=wgan_gp", *SMALL, "model.train.ema=0.9", "model.train.checkpoint_every=6"]
    full = run_inprocess(ov, tmp_path / "full")
    run_inprocess([*ov, "model.train.steps=6"], tmp_path / "part")
    resumed = run_inprocess([*ov, "resume=true"], tmp_path / "part")
    assert resumed["resumed_from"] == 6
    assert _no_timing(resumed)["selection"] == _no_timing(full)["selection"]
    assert _no_timing(resumed)["metrics_ema"] == _no_timing(full)["metrics_ema"]

    def strip(p):
        return [{k: v for k, v in h.items() if k != "elapsed_s"}
                for h in json.loads((p / "history.json").read_text())["eval"]]

    assert strip(tmp_path / "part") == strip(tmp_path / "full")


@pytest.mark.parametrize("bad,msg", [
    (["model.train.eval_every=5", "data.n_val=0"], r"selects on validation data; set data.n_val"),
    (["model.train.select_by=test_w1"], r"select_by='test_w1' must be one of"),
    (["model.train.patience=3"], r"patience=3 must be >= 1 and needs model.train.eval_every"),
    (["model.train.ema=1.5"], r"ema=1.5 must be in \(0, 1\)"),
    (["data.n_val=1"], r"data.n_val=1 must be 0"),
])
def test_bad_selection_settings_are_one_line_errors(bad, msg):
    with pytest.raises(ConfigError, match=msg):
        validate(compose_cfg(["+model=wgan", *bad]))


def test_estimators_report_the_validation_statistic_as_objective(tmp_path):
    from pfbench.train import objective

    rec = run_inprocess(["+model=moments", "data.latent_dim=2", "data.out_dim=4", "data.n_train=4000",
                         "data.n_val=500", "data.n_test=200", "eval=fast", "logger=none", "plots=false",
                         "progress=false"], tmp_path)
    assert rec["status"] == "completed"
    assert rec["objective"] == rec["validation"]["val_moments"] and 0 < rec["objective"] < 1
    assert objective(rec) == rec["objective"]
    assert objective({"status": "diverged", "objective": 0.1}) == float("inf")


def test_user_data_selects_on_rows_carved_from_the_file(tmp_path):
    x = np.random.default_rng(0).normal(size=(400, 4))
    np.save(tmp_path / "x.npy", x)
    ov = ["+model=wgan", "model.generator=mlp", "data=file", f"data.path={tmp_path / 'x.npy'}", "data.latent_dim=2",
          *TINY, "data.n_train=null", "data.n_val=100", "model.train.steps=6", "model.train.eval_every=2"]
    rec = run_inprocess(ov, tmp_path / "run")
    assert rec["status"] == "completed" and rec["n_train"] == 400 - 64 - 100
    hist = json.loads((tmp_path / "run" / "history.json").read_text())["eval"]
    assert [h["step"] for h in hist] == [2, 4, 6]
    assert all("param_error" not in h for h in hist)  # no truth: nothing for the record, selection still runs
    assert rec["selection"]["step"] in (2, 4, 6) and rec["selection"]["rank_corr_with_param_error"]["val_sw"] is None


@pytest.mark.parametrize("eval_every", [3, 12])  # 12: one evaluation, so the selection is the final generator
def test_selected_metrics_are_the_evaluation_of_the_saved_selected_generator(eval_every, tmp_path):
    from pfbench.data import make_data
    from pfbench.metrics.evaluate import evaluate

    ov = ["+model=wgan", *SMALL, f"model.train.eval_every={eval_every}"]
    rec = run_inprocess(ov, tmp_path)
    cfg = validate(compose_cfg(ov))
    data = make_data(cfg)
    g = build_family("quadratic", 2, 4)
    g.load_state_dict(torch.load(tmp_path / "generator_selected.pt", weights_only=True)["state_dict"])
    ref = evaluate(g, data.x_test, truth=data.truth, cfg=cfg.eval, seed=cfg.seed, x_train=data.x_train)
    ref = {k: v for k, v in json.loads(json.dumps(ref)).items() if not k.endswith("time_s")}
    assert json.loads(json.dumps(rec["metrics_selected"])) == ref
    if eval_every == 12:
        assert rec["selection"]["step"] == rec["steps"] == 12

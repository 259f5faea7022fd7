"""Reference methods (+model=memorize, gaussian, truth): closed forms, and runs through the shared evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pfbench import ConfigError
from pfbench.baselines import GaussianBaseline, GaussianFit, MemorizedSample, Memorizer
from pfbench.seeding import torch_generator
from tests.runner import TINY, run_inprocess

EST = [o for o in TINY if not o.startswith("model.train")]  # estimators have no training block


def test_memorizer_replays_training_rows_uniformly():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 3))
    g = Memorizer(latent_dim=2, out_dim=3).fit(x).pushforward_
    s = g.sample(20000, torch_generator(0, "m")).numpy()
    # every sample is a training row, and each row is drawn about 20000 / 50 = 400 times
    match = (np.abs(s[:, None, :] - x[None, :, :]).sum(-1) == 0)
    assert match.any(1).all()
    counts = match.sum(0)
    # binomial(20000, 1/50): sd = 19.8; 5 sd either side
    assert counts.min() >= 400 - 5 * 19.8 and counts.max() <= 400 + 5 * 19.8


def test_gaussian_baseline_has_the_training_mean_and_covariance():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((400, 4)) @ rng.standard_normal((4, 4)) + 3.0
    g = GaussianBaseline(latent_dim=2, out_dim=4).fit(x).pushforward_
    p = g.params()
    assert np.allclose(p["mean"].numpy(), x.mean(0), atol=1e-12)
    assert np.allclose((p["root"] @ p["root"].T).numpy(), np.cov(x, rowvar=False), atol=1e-10)
    # and its samples follow it: the sample mean within 5 standard errors
    s = g.sample(100_000, torch_generator(0, "g")).numpy()
    se = np.sqrt(np.diag(np.cov(x, rowvar=False)) / 100_000)
    assert np.all(np.abs(s.mean(0) - x.mean(0)) <= 5 * se)


@pytest.mark.parametrize("cls", [MemorizedSample, GaussianFit])
def test_reference_generators_reload_from_their_run(cls, tmp_path):
    from pfbench.runs import load_generator

    model = "memorize" if cls is MemorizedSample else "gaussian"
    rec = run_inprocess([f"+model={model}", *EST, "data.latent_dim=2", "data.out_dim=4"], tmp_path)
    assert rec["status"] == "completed"
    g = load_generator(tmp_path)
    assert isinstance(g, cls)
    a = g.sample(10, torch_generator(3, "s"))
    assert a.shape == (10, 4) and torch.isfinite(a).all()


def test_truth_baseline_is_the_truth_and_refuses_user_data(tmp_path):
    rec = run_inprocess(["+model=truth", *EST, "data.latent_dim=2", "data.out_dim=4"], tmp_path / "t")
    assert rec["status"] == "completed"
    assert rec["metrics"]["param_error_status"] == "ok"
    assert 0.0 <= rec["metrics"]["param_error"] <= 1e-12
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((300, 4)))
    with pytest.raises(ConfigError, match="does not apply to data=file"):
        run_inprocess(["+model=truth", "data=file", f"data.path={tmp_path / 'x.npy'}", "data.family=quadratic",
                       "data.latent_dim=2", *EST], tmp_path / "f")
    assert not (tmp_path / "f" / "metrics.json").exists()


def test_memorizer_sits_at_the_w1_floor_and_has_no_parameter_error(tmp_path):
    ov = ["+model=memorize", "data.n_train=2000", "data.n_test=500", "data.latent_dim=2", "data.out_dim=4",
          "eval=fast", "logger=none", "plots=false", "progress=false"]
    m = run_inprocess(ov, tmp_path)["metrics"]
    assert m["param_error"] is None and "not in the true family" in m["param_error_status"]
    # a sample of the truth: its W1 to the test sample is within 25% of a fresh true sample's, and the
    # calibrated verdict does not tell it from the truth; the data-copying test does
    assert abs(m["w1"] - m["w1_floor"]) <= 0.25 * m["w1_floor"]
    assert m["w1_verdict"].startswith("indistinguishable")
    assert m["copying_verdict"].startswith("copying suspected") and m["copying_pvalue"] < 1e-6

"""The one-layer sigmoid family: its closed-form distribution, its symmetry, and a run end to end."""

from __future__ import annotations

import numpy as np
import torch

from pfbench.families import make_instance
from pfbench.seeding import torch_generator
from tests.runner import TINY, run_inprocess


def test_logit_of_a_sample_is_gaussian_with_mean_b_and_covariance_wwt():
    # logit(x) = W z + b ~ N(b, W W^T): checked within 5 standard errors, on a real sample
    k, d, n = 3, 6, 200_000
    f = make_instance("sigmoid", k, d, generator=torch_generator(0, "instance"))
    x = f.sample_batched(n, torch_generator(0, "x")).numpy()
    assert x.min() > 0 and x.max() < 1
    y = np.log(x) - np.log1p(-x)
    W, b = f.params()["W"].numpy(), f.params()["b"].numpy()
    cov = W @ W.T
    se_mean = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(y.mean(0) - b) <= 5 * se_mean)
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    assert np.all(np.abs(np.cov(y, rowvar=False) - cov) <= 5 * se_cov)
    assert np.abs(y.mean(0) - b).max() > 0


def test_aligned_error_of_a_perturbed_copy_is_its_relative_perturbation():
    # no rotation needed when the perturbation is small: error = ||dW, db|| / ||W, b|| (first order)
    truth = make_instance("sigmoid", 4, 10, generator=torch_generator(1, "instance"))
    p = truth.params()
    g = torch.Generator().manual_seed(7)
    dW, db = 1e-4 * torch.randn(p["W"].shape, generator=g, dtype=torch.float64), torch.zeros(10, dtype=torch.float64)
    est = make_instance("sigmoid", 4, 10, generator=torch_generator(1, "instance")).set_params(
        {"W": p["W"] + dW, "b": p["b"] + db})
    err = truth.param_error(est)["param_error"]
    rel = float(torch.sqrt((dW**2).sum() / ((p["W"] ** 2).sum() + (p["b"] ** 2).sum())))
    assert 0.5 * rel <= err <= 1.0001 * rel  # Procrustes can only lower it, and not by half at this size


def test_a_well_specified_gan_runs_on_sigmoid_data(tmp_path):
    rec = run_inprocess(["+model=wgan", "data=sigmoid", *TINY, "data.latent_dim=2", "data.out_dim=5"], tmp_path)
    assert rec["status"] == "completed"
    assert rec["metrics"]["param_error_status"] == "ok" and 0 < rec["metrics"]["param_error"] < 10

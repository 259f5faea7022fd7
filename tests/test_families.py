"""Families: shapes, seeding, instance kinds, and closed-form moments (MATH sections 1-2, 4)."""

import math

import numpy as np
import pytest
import torch

from pfbench import ConfigError
from pfbench.families import build_family, make_instance
from pfbench.seeding import stream_seed, torch_generator

SPECS = [
    ("quadratic", 3, 7, {}),
    ("polynomial", 3, 6, {"degree": 3, "rank": 2}),
    ("relu", 4, 6, {}),
    ("relu_deep", 4, 9, {"hidden": [6, 8]}),
]


@pytest.mark.parametrize("name,k,d,kw", SPECS)
def test_shapes_and_seed_determinism(name, k, d, kw):
    a = make_instance(name, k, d, generator=torch_generator(0, "instance"), **kw)
    b = make_instance(name, k, d, generator=torch_generator(0, "instance"), **kw)
    c = make_instance(name, k, d, generator=torch_generator(1, "instance"), **kw)
    xa = a.sample(50, torch_generator(0, "x"))
    xb = b.sample(50, torch_generator(0, "x"))
    assert xa.shape == (50, d) and xa.dtype == torch.float64
    assert torch.equal(xa, xb)
    diff = sum(float((p - q).abs().sum()) for p, q in zip(a.parameters(), c.parameters()))
    assert diff > 1e-3  # another seed gives another instance
    assert a.latent_dim == k and a.out_dim == d
    assert all(not p.requires_grad for p in a.parameters())


def test_stream_seeds_are_distinct_and_seed_zero_is_valid():
    s = {stream_seed(0, n) for n in ("instance", "train", "test", "batches")}
    assert len(s) == 4
    assert stream_seed(0, "train") != stream_seed(1, "train")
    with pytest.raises(ValueError):
        stream_seed(-1, "train")


def test_quadratic_mean_and_covariance_identities():
    # E x_a = Tr Q_a and Cov(x_a, x_b) = 2 Tr(Q_a Q_b) (MATH 2), checked within 5 standard errors.
    r, d, n = 3, 4, 400_000
    f = make_instance("quadratic", r, d, generator=torch_generator(3, "instance"))
    Q = f.params()["Q"]
    assert torch.allclose(Q, Q.transpose(1, 2))
    x = f.sample_batched(n, torch_generator(3, "x")).numpy()
    mean_true = torch.einsum("aii->a", Q).numpy()
    cov_true = 2 * torch.einsum("aij,bji->ab", Q, Q).numpy()
    se_mean = np.sqrt(np.diag(cov_true) / n)
    assert np.all(np.abs(x.mean(0) - mean_true) <= 5 * se_mean)
    cov = np.cov(x, rowvar=False)
    # Var of a sample covariance entry of a quadratic form: bounded via fourth moments; use 2x Gaussian SE.
    se_cov = np.sqrt((np.outer(np.diag(cov_true), np.diag(cov_true)) + cov_true**2) / n) * 3
    assert np.all(np.abs(cov - cov_true) <= 5 * se_cov)
    assert np.abs(cov - cov_true).max() > 0  # a real sample, not the population


def test_quadratic_forward_matches_definition():
    f = build_family("quadratic", 3, 5, dtype=torch.float64)
    z = torch.randn(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    Q = f.params()["Q"]
    ref = torch.einsum("ni,aij,nj->na", z, Q, z)
    assert torch.allclose(f(z), ref, atol=1e-12, rtol=0)


def test_polynomial_degree2_mean_closed_form():
    # w = 2: E lam <v, g>^2 = lam ||v||^2.
    f = make_instance("polynomial", 3, 5, degree=2, rank=2, generator=torch_generator(0, "instance"))
    p = f.params()
    mean_true = (p["lam"] * p["v"].pow(2).sum(-1)).sum(-1).numpy()
    x = f.sample_batched(400_000, torch_generator(0, "x")).numpy()
    se = x.std(0) / math.sqrt(len(x))
    assert np.all(np.abs(x.mean(0) - mean_true) <= 5 * se)


def test_relu_mean_closed_form():
    # E ReLU(N(b, s^2)) = b Phi(b/s) + s phi(b/s), s = ||W_i||.
    f = make_instance("relu", 3, 4, generator=torch_generator(2, "instance"))
    W, b = f.params()["W"].numpy(), f.params()["b"].numpy()
    assert np.all(b >= 0)
    s = np.linalg.norm(W, axis=1)
    from scipy.stats import norm

    mean_true = b * norm.cdf(b / s) + s * norm.pdf(b / s)
    x = f.sample_batched(400_000, torch_generator(2, "x")).numpy()
    se = x.std(0) / math.sqrt(len(x))
    assert np.all(np.abs(x.mean(0) - mean_true) <= 5 * se)


def test_deep_relu_widths_and_output_activation():
    f = make_instance("relu_deep", 20, 500, hidden=[100], generator=torch_generator(0, "instance"))
    assert f.widths == [20, 100, 500]
    x = f.sample(200, torch_generator(0, "x"))
    assert x.min() >= 0 and 0.3 < float((x > 0).double().mean()) < 0.7  # ReLU of symmetric pre-activations
    g = make_instance("relu_deep", 4, 6, hidden=[8], output_relu=False, generator=torch_generator(0, "i"))
    assert g.sample(500, torch_generator(0, "x")).min() < 0


def test_smoothed_instance_adds_sigma_noise():
    f = make_instance("quadratic", 6, 40, kind="smoothed", base="zero", sigma=0.3,
                      generator=torch_generator(0, "instance"))
    raw = f.Q.detach()
    assert 0.27 <= float(raw.std()) <= 0.33
    base = make_instance("relu", 5, 30, generator=torch_generator(0, "instance"))
    sm = make_instance("relu", 5, 30, kind="smoothed", base="random", sigma=0.05,
                       generator=torch_generator(0, "instance"))
    delta = (sm.params()["W"] - base.params()["W"]).std()
    assert 0.04 <= float(delta) <= 0.06


def test_file_instance_round_trip_and_errors(tmp_path):
    f = make_instance("relu", 3, 4, generator=torch_generator(5, "instance"))
    np.savez(tmp_path / "p.npz", **{k: v.numpy() for k, v in f.params().items()})
    g = make_instance("relu", 3, 4, kind="file", path=str(tmp_path / "p.npz"), generator=torch_generator(9, "i"))
    assert torch.equal(g.params()["W"], f.params()["W"])
    torch.save({k: v for k, v in f.params().items()}, tmp_path / "p.pt")
    h = make_instance("relu", 3, 4, kind="file", path=str(tmp_path / "p.pt"), generator=torch_generator(9, "i"))
    assert torch.equal(h.params()["b"], f.params()["b"])
    with pytest.raises(ConfigError, match=r"parameter 'W' has shape \(4, 3\), expected \(5, 3\)"):
        make_instance("relu", 3, 5, kind="file", path=str(tmp_path / "p.npz"), generator=torch_generator(0, "i"))
    with pytest.raises(ConfigError, match="does not exist"):
        make_instance("relu", 3, 4, kind="file", path=str(tmp_path / "nope.npz"), generator=torch_generator(0, "i"))
    bad = {k: v.numpy() for k, v in f.params().items()}
    bad["W"][0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", **bad)
    with pytest.raises(ConfigError, match="non-finite"):
        make_instance("relu", 3, 4, kind="file", path=str(tmp_path / "nan.npz"), generator=torch_generator(0, "i"))


def test_bad_family_arguments():
    with pytest.raises(ConfigError, match="unknown family 'cubic'"):
        build_family("cubic", 2, 2)
    with pytest.raises(ConfigError, match="latent_dim=0"):
        build_family("relu", 0, 2)
    with pytest.raises(ConfigError, match="sigma=-1"):
        make_instance("relu", 2, 2, kind="smoothed", sigma=-1, generator=torch_generator(0, "i"))

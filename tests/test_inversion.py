"""Layerwise LP inversion of ReLU generators (Lei, Jalal, Dhillon, Dimakis) and the gradient baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pfbench import ConfigError
from pfbench.families import make_instance
from pfbench.families.relu import OneLayerReLUPushforward
from pfbench.models.nets import MLPGenerator
from pfbench.seeding import torch_generator
from pfbench.tasks.inversion import inversion_task, invert_gd, invert_layer, invert_layerwise, relu_layers


def _net(k: int, hidden: list[int], d: int, seed: int = 0, **kw) -> torch.nn.Module:
    return make_instance("relu_deep", k, d, hidden=hidden, generator=torch_generator(seed, "instance"), **kw)


def _latents(G: torch.nn.Module, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.randn(n, G.latent_dim, generator=torch_generator(seed, "z"), dtype=torch.float64)
    with torch.no_grad():
        return z, G(z)


def _rel(zh: np.ndarray, z: torch.Tensor) -> np.ndarray:
    return np.linalg.norm(zh - z.numpy(), axis=-1) / np.linalg.norm(z.numpy(), axis=-1)


def test_realizable_lp_inverts_an_expanding_net_exactly() -> None:
    G = _net(5, [30], 80)
    z, x = _latents(G, 5)
    zh, info = invert_layerwise(G, x, noise="realizable", return_info=True)
    assert zh.shape == (5, 5)
    assert np.max(_rel(zh, z)) <= 1e-9
    assert all(i["modes"] == ["realizable", "realizable"] for i in info)
    # one sample in, one latent out
    assert np.max(np.abs(invert_layerwise(G, x[0]) - zh[0])) <= 1e-9


def test_biases_and_a_linear_output_layer() -> None:
    G = _net(4, [24], 40, bias=True, output_relu=False)
    assert [lay.relu for lay in relu_layers(G)] == [True, False]
    z, x = _latents(G, 6, seed=1)
    zh, info = invert_layerwise(G, x, return_info=True)  # auto: l_inf on the linear layer, exact at t = 0
    assert np.max(_rel(zh, z)) <= 1e-8
    assert all(i["modes"][0] == "linf" and i["t"][0] <= 1e-9 for i in info)


def test_one_layer_relu_with_bias() -> None:
    G = make_instance("relu", 3, 20, generator=torch_generator(2, "instance"))
    assert isinstance(G, OneLayerReLUPushforward)
    z, x = _latents(G, 4, seed=2)
    assert np.max(_rel(invert_layerwise(G, x, noise="realizable"), z)) <= 1e-9


def test_linf_lp_optimum_is_bounded_by_the_noise() -> None:
    # the true h is feasible with t = max|noise| (every noisy zero stays below tau), so t* <= ||e||_inf
    G = _net(6, [40], 90, seed=3)
    lay = relu_layers(G)[1]
    h = torch.relu(torch.randn(1, 6, generator=torch_generator(0, "h"), dtype=torch.float64)
                   @ torch.as_tensor(relu_layers(G)[0].W).T)[0].numpy()
    e = 1e-6 * torch.randn(90, generator=torch_generator(0, "e"), dtype=torch.float64).numpy()
    y = np.maximum(lay.W @ h, 0) + e
    hh, info = invert_layer(lay, y, nonneg=True, mode="linf", tau=1e-4)
    assert 0.0 <= info["t"] <= np.abs(e).max() + 1e-12
    assert np.max(np.abs(hh - h)) <= 1e-4
    assert np.max(lay.W @ hh - y) <= info["t"] + 1e-9  # every row: pre-activation <= y + t


def test_noisy_20_100_500_meets_the_paper_accuracy() -> None:
    G = _net(20, [100], 500)
    res = inversion_task(G, n=3, seed=0, noise_std=1e-6)
    # paper: relative error ~1e-6 at noise 1e-6; the noise floor keeps it above ~1e-8
    assert 1e-9 <= res["inversion_rel_error_median"] <= 1e-5
    assert res["inversion_success_rate"] == 1.0
    assert res["inversion_time_per_sample_s"] > 0.0  # its cost is measured in scripts/bench_relu.py


def test_too_little_expansion_breaks_recovery() -> None:
    # 12 hidden units for a 10-dim latent: about 6 active rows cannot pin z down
    G = _net(10, [12], 120, seed=4)
    z, x = _latents(G, 6, seed=4)
    zh = invert_layerwise(G, x, noise="realizable")
    err = _rel(zh, z)
    assert np.median(err) >= 0.05
    # ... yet the recovered latent explains x (a non-unique preimage, not a solver failure)
    with torch.no_grad():
        xh = G(torch.as_tensor(zh)).numpy()
    assert np.max(np.abs(xh - x.numpy())) <= 1e-7


def test_gradient_baseline_finds_the_latent_on_an_easy_net() -> None:
    G = _net(3, [20], 40, seed=5)
    z, x = _latents(G, 4, seed=5)
    zh = invert_gd(G, x, restarts=4, steps=400, lr=0.1, seed=0)
    err = _rel(zh, z)
    # 3 samples to ~1e-8; one sits near a kink and converges slowly (4e-5 here; 0.13 with lr = 0.05)
    assert np.median(err) <= 1e-6 and np.max(err) <= 1e-3
    res = inversion_task(G, n=4, seed=1, noise_std=0.0, method="gd", restarts=4, steps=400)
    assert res["inversion_rel_error_median"] <= 1e-3 and res["inversion_success_rate"] == 1.0


def test_inversion_task_is_reproducible() -> None:
    G = _net(5, [30], 80, seed=6)
    a, b = inversion_task(G, n=4, seed=2, noise_std=0.0), inversion_task(G, n=4, seed=2, noise_std=0.0)
    for key in a:
        if "time" not in key:
            assert a[key] == b[key]
    assert a["inversion_rel_error_p90"] <= 1e-9 and a["inversion_output_rel_error_median"] <= 1e-9


def test_bad_inputs() -> None:
    G = _net(5, [30], 80)
    _, x = _latents(G, 2)
    with pytest.raises(ConfigError, match="noise='l2'"):
        invert_layerwise(G, x, noise="l2")
    with pytest.raises(ConfigError, match=r"expected \(80,\) or \(n, 80\)"):
        invert_layerwise(G, x[:, :50])
    with pytest.raises(ConfigError, match="use method='gd'"):
        invert_layerwise(MLPGenerator(5, 80), x)
    noisy = x + 1e-3 * torch.randn(x.shape, generator=torch_generator(0, "n"), dtype=torch.float64)
    with pytest.raises(ConfigError, match="not in the range of G"):
        invert_layerwise(G, noisy, noise="realizable")
    with pytest.raises(ConfigError, match="method='sgd'"):
        inversion_task(G, n=2, seed=0, method="sgd")


def test_inversion_task_skips_a_generator_that_is_not_a_relu_net() -> None:
    # the generator says whether the task applies (Pushforward.is_relu_net); no sampling, no LP, no
    # argument checks: the status the entry point wrote when it made this decision itself
    Q = make_instance("quadratic", 2, 4, generator=torch_generator(0, "instance"))
    assert Q.is_relu_net is False
    skipped = "skipped: QuadraticPushforward is not a ReLU generator"
    assert inversion_task(Q, n=3, seed=0) == {"inversion_status": skipped}
    assert inversion_task(Q, n=0, seed=0, method="sgd") == {"inversion_status": skipped}
    assert inversion_task(MLPGenerator(3, 5), n=3, seed=0, method="gd") == {
        "inversion_status": "skipped: MLPGenerator is not a ReLU generator"}
    assert _net(3, [10], 20).is_relu_net
    assert make_instance("relu", 3, 8, generator=torch_generator(0, "instance")).is_relu_net

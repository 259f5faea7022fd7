"""Timings for issue 5: the ReLU estimator fit, LP inversion per sample, the compressed-sensing task.

The machine is shared and noisy, so every timing is the median of repeats and is reported beside a
baseline measured in the same run on the same data (the ratio is the number to compare across runs):
  fit     ReLUMomentEstimator.fit at n = 200k, d = k = 5 (newton, sgd)  vs  X^T X on the same X;
  invert  layerwise l_inf LP inversion, 20-100-500, noise 1e-6, per sample  vs  least squares on the active
          rows of each layer (the unconstrained solve the LP refines), per sample;
          the GD baseline (5 restarts x 1000 Adam steps) per sample as well;
  cs      compressed_sensing_task at ms = [10, 40], n = 6 on 20-100-500  vs  the same number of
          forward/backward passes of G on the same batch shape (the floor of any Adam-based recovery).

Usage:  .venv/bin/python scripts/bench_relu.py [--repeats 7]
"""

from __future__ import annotations

import os

# small matrix products under a shared load run up to 40x slower with 2 BLAS threads than with 1 (measured:
# (10 x 500) @ (500 x 500) 6.7 ms vs 0.17 ms); set before numpy loads OpenBLAS
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import time

import numpy as np
import torch

from pfbench.families import make_instance
from pfbench.families.relu import wds_instance
from pfbench.recovery.relu_estimator import ReLUMomentEstimator
from pfbench.seeding import torch_generator
from pfbench.tasks.compressed_sensing import compressed_sensing_task
from pfbench.tasks.inversion import invert_gd, invert_layerwise, relu_layers


def median_time(fn, repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def lstsq_layers(G: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """Unconstrained analogue of the LP inversion: least squares on the active rows, layer by layer."""
    y = x
    for lay in reversed(relu_layers(G)):
        rows = y > 1e-4 * np.abs(y).max() if lay.relu else np.ones(len(y), dtype=bool)
        y = np.linalg.lstsq(lay.W[rows], (y - lay.b)[rows], rcond=None)[0]
    return y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(1)
    R = args.repeats

    truth = wds_instance(5, 5, 1.0, torch_generator(0, "instance"))
    X = truth.sample_batched(200_000, torch_generator(0, "train")).numpy()
    base = median_time(lambda: X.T @ X, R)
    print(f"[fit] n = 200000, d = k = 5;  baseline X^T X: {base * 1e3:.2f} ms")
    for solver in ("newton", "sgd"):
        est = ReLUMomentEstimator(latent_dim=5, out_dim=5, solver=solver)
        t = median_time(lambda est=est: est.fit(X), R if solver == "newton" else max(3, R // 2))
        err = est.extra_metrics(truth)["sigma_error"]
        print(f"  {solver:6s}: {t:.4f} s  ({t / base:.1f}x baseline)  sigma_error {err:.4f}")

    G = make_instance("relu_deep", 20, 500, hidden=[100], generator=torch_generator(0, "instance"))
    gen = torch_generator(0, "inversion")
    z = torch.randn(20, 20, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        x = (G(z) + 1e-6 * torch.randn(20, 500, generator=gen, dtype=torch.float64)).numpy()
    t0 = time.perf_counter()
    zh = invert_layerwise(G, x)
    t_lp = (time.perf_counter() - t0) / len(x)
    t0 = time.perf_counter()
    zl = np.stack([lstsq_layers(G, xi) for xi in x])
    t_ls = (time.perf_counter() - t0) / len(x)
    e_lp = np.linalg.norm(zh - z.numpy(), axis=1) / np.linalg.norm(z.numpy(), axis=1)
    e_ls = np.linalg.norm(zl - z.numpy(), axis=1) / np.linalg.norm(z.numpy(), axis=1)
    t0 = time.perf_counter()
    zg = invert_gd(G, x[:5], restarts=5, steps=1000, seed=0)
    t_gd = (time.perf_counter() - t0) / 5
    e_gd = np.linalg.norm(zg - z.numpy()[:5], axis=1) / np.linalg.norm(z.numpy()[:5], axis=1)
    print(f"[invert] 20-100-500, noise 1e-6, 20 samples;  baseline least squares: {t_ls * 1e3:.2f} ms/sample "
          f"(median error {np.median(e_ls):.1e})")
    print(f"  LP    : {t_lp:.4f} s/sample  ({t_lp / t_ls:.0f}x baseline)  median error "
          f"{np.median(e_lp):.2e}, max {e_lp.max():.2e}")
    print(f"  GD    : {t_gd:.4f} s/sample  ({t_gd / t_ls:.0f}x baseline)  median error {np.median(e_gd):.2e} "
          "(5 samples, 5 restarts x 1000 Adam steps)")

    ms, n, restarts, steps = [10, 40], 6, 5, 300
    g64 = G.double()
    zb = torch.randn(restarts * n, 20, dtype=torch.float64, requires_grad=True)

    def passes() -> None:
        for _ in range(steps * len(ms)):
            g64(zb).sum().backward()

    t_pass = median_time(passes, 3)
    t_cs = median_time(lambda: compressed_sensing_task(G, G, ms=ms, n=n, seed=0, noise_std=0.01), 3)
    t_cs_nl = median_time(lambda: compressed_sensing_task(G, G, ms=ms, n=n, seed=0, noise_std=0.01,
                                                          lasso_fractions=None), 3)
    print(f"[cs] ms = {ms}, n = {n}, 5 restarts x 300 steps;  baseline {steps * len(ms)} fwd/bwd passes: "
          f"{t_pass:.2f} s")
    print(f"  task with Lasso: {t_cs:.2f} s ({t_cs / t_pass:.1f}x baseline);  without: {t_cs_nl:.2f} s "
          f"({t_cs_nl / t_pass:.1f}x)")


if __name__ == "__main__":
    main()

"""Layerwise LP inversion vs expansion (Lei, Jalal, Dhillon, Dimakis 2019; MATH section 5).

Random Gaussian ReLU nets k-250-600 (He scaling, no biases, ReLU output): invert fresh samples
x = G(z) + N(0, 1e-6^2 I) with the l_inf LPs and report the relative latent error ||z - z_hat|| / ||z||
as the latent dimension k grows. The paper: exact up to k ~ 120 with 250 hidden units, failing beyond
(the hidden layer must expand the latent about 2x: about half the units are active, and they must pin
z down). Also the reference configuration 20-100-500 (20 samples; the paper: ~2e-6 median error and
~0.15 s per sample for the authors' code).

Usage:  .venv/bin/python scripts/inversion_expansion.py [--samples 10] [--noise 1e-6]
Writes docs/figures/inversion_expansion.png and .json; prints the table.
"""

from __future__ import annotations

import os

# small matrix products under a shared load run up to 40x slower with 2 BLAS threads than with 1 (measured:
# (10 x 500) @ (500 x 500) 6.7 ms vs 0.17 ms); set before numpy loads OpenBLAS
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from pfbench.families import make_instance
from pfbench.seeding import torch_generator
from pfbench.tasks.inversion import invert_layerwise

KS = [20, 40, 60, 80, 100, 110, 120, 130, 140, 160, 180, 200, 240]


def errors(G: torch.nn.Module, n: int, seed: int, noise: float) -> tuple[np.ndarray, float]:
    """Per-sample relative latent errors of the LP inversion, and seconds per sample."""
    gen = torch_generator(seed, "inversion")
    z = torch.randn(n, G.latent_dim, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        x = G(z)
    x = x + noise * torch.randn(x.shape, generator=gen, dtype=torch.float64)
    t0 = time.perf_counter()
    zh = invert_layerwise(G, x, noise="auto")
    dt = (time.perf_counter() - t0) / n
    return np.linalg.norm(zh - z.numpy(), axis=1) / np.linalg.norm(z.numpy(), axis=1), dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--noise", type=float, default=1e-6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "figures")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t_all = time.perf_counter()

    ref = make_instance("relu_deep", 20, 500, hidden=[100], generator=torch_generator(args.seed, "instance"))
    e_ref, dt_ref = errors(ref, 20, args.seed, args.noise)
    print(f"20-100-500, noise {args.noise:g}, 20 samples: median rel. error {np.median(e_ref):.2e} "
          f"(p90 {np.quantile(e_ref, 0.9):.2e}, max {e_ref.max():.2e}), {dt_ref:.3f} s per sample")

    rows = []
    for k in KS:
        G = make_instance("relu_deep", k, 600, hidden=[250],
                          generator=torch_generator(args.seed, f"instance_k{k}"))
        e, dt = errors(G, args.samples, args.seed, args.noise)
        rows.append({"k": k, "median": float(np.median(e)), "p10": float(np.quantile(e, 0.1)),
                     "p90": float(np.quantile(e, 0.9)), "exact_fraction": float(np.mean(e <= 1e-5)),
                     "time_per_sample_s": dt})
        r = rows[-1]
        print(f"k = {k:3d} (expansion {250 / k:4.2f}x): median {r['median']:.2e}  p10 {r['p10']:.2e}  "
              f"p90 {r['p90']:.2e}  exact (<= 1e-5) {r['exact_fraction']:.1f}  {dt:.3f} s/sample")
    wall = time.perf_counter() - t_all

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [r["k"] for r in rows]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
    ax.fill_between(ks, [r["p10"] for r in rows], [r["p90"] for r in rows], alpha=0.25, label="p10-p90")
    ax.semilogy(ks, [r["median"] for r in rows], "o-", label="median")
    ax.axhline(1e-5, color="k", ls=":", lw=1, label="1e-5 (exact)")
    ax.axvline(125, color="r", ls="--", lw=1, label="2x expansion (k = 125)")
    ax.set_xlabel("latent dimension k (net k-250-600)")
    ax.set_ylabel(r"$\|z - \hat z\| / \|z\|$")
    ax.set_title(f"layerwise l_inf LP inversion, noise {args.noise:g}, {args.samples} samples per k")
    ax.legend(fontsize=8)
    ax2.plot(ks, [r["exact_fraction"] for r in rows], "o-")
    ax2.axvline(125, color="r", ls="--", lw=1)
    ax2.set_xlabel("latent dimension k")
    ax2.set_ylabel("fraction with error <= 1e-5")
    ax2.set_ylim(-0.05, 1.05)
    args.out.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out / "inversion_expansion.png", dpi=110)
    (args.out / "inversion_expansion.json").write_text(json.dumps({
        "noise": args.noise, "samples": args.samples, "wall_s": wall,
        "reference_20_100_500": {"median": float(np.median(e_ref)), "p90": float(np.quantile(e_ref, 0.9)),
                                 "time_per_sample_s": dt_ref},
        "sweep": rows}, indent=1))
    print(f"wall {wall:.1f} s")


if __name__ == "__main__":
    main()

"""Reproduce Figure 1 of Wu, Dimakis, Sanghavi (2019): the one-layer ReLU estimator's error in three sweeps.

Panels (MATH section 4; 10 seeds per point, d = k):
  n      error vs n in 20k:30k:200k at d = k = 5, kappa = 1;
  d      error vs d in 5:4:25 at n = 5e5, kappa = 1;
  kappa  error vs the condition number of W W^T in 1:4:25 at d = k = 5, n = 5e5.
Metrics: ||Sigma_hat - W W^T||_F / ||W||_F^2, ||b_hat - b|| / ||W||_F and the TV proxy sqrt(min KL / 2).

Each point uses the same streams as the training entry point, so one point equals the run
    python -m pfbench.train +model=relu_moments data=relu data.instance.kind=wds data.instance.kappa=KAPPA \\
        data.latent_dim=D data.out_dim=D data.n_train=N seed=S [model.params.solver=sgd]
and a panel is that command as a Hydra multirun (-m) over one of n / d / kappa and seed=0,1,...,9.

Usage:  .venv/bin/python scripts/wds_figure1.py [--solver newton sgd] [--seeds 10] [--jobs 2] [--replot]
Writes docs/figures/wds_figure1.png and docs/figures/wds_figure1.json; prints a table and the targets.
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
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

PANELS: dict[str, dict] = {
    "n": {"values": list(range(20_000, 200_001, 30_000)), "d": 5, "kappa": 1.0, "n": None},
    "d": {"values": list(range(5, 26, 4)), "d": None, "kappa": 1.0, "n": 500_000},
    "kappa": {"values": [float(v) for v in range(1, 26, 4)], "d": 5, "kappa": None, "n": 500_000},
}
METRICS = ("sigma_error", "bias_error", "tv_proxy")
LABELS = {"sigma_error": r"$\|\hat\Sigma - WW^T\|_F / \|W\|_F^2$",
          "bias_error": r"$\|\hat b - b\| / \|W\|_F$", "tv_proxy": r"TV proxy $\sqrt{\min KL/2}$"}


def one_fit(job: tuple[str, float, int, str]) -> dict:
    """Fit one (panel, value, seed, solver) point; returns the metrics and the fit time."""
    import torch

    from pfbench.families.relu import wds_instance
    from pfbench.recovery.relu_estimator import ReLUMomentEstimator
    from pfbench.seeding import torch_generator

    torch.set_num_threads(1)
    panel, value, seed, solver = job
    spec = PANELS[panel]
    d = int(value) if panel == "d" else spec["d"]
    kappa = float(value) if panel == "kappa" else spec["kappa"]
    n = int(value) if panel == "n" else spec["n"]
    truth = wds_instance(d, d, kappa, torch_generator(seed, "instance"))
    X = truth.sample_batched(n, torch_generator(seed, "train")).numpy()
    t0 = time.perf_counter()
    est = ReLUMomentEstimator(latent_dim=d, out_dim=d, seed=seed, solver=solver).fit(X)
    fit_s = time.perf_counter() - t0
    return {"panel": panel, "value": value, "seed": seed, "solver": solver, "fit_time_s": fit_s,
            "psd_projected": est.info_["sigma_psd_projected"], **est.extra_metrics(truth)}


def summarize(rows: list[dict], solver: str) -> dict:
    out: dict = {}
    for panel, spec in PANELS.items():
        out[panel] = {}
        for v in spec["values"]:
            sel = [r for r in rows if r["panel"] == panel and r["value"] == v and r["solver"] == solver]
            out[panel][str(v)] = {m: (float(np.mean([r[m] for r in sel])), float(np.std([r[m] for r in sel])))
                                  for m in (*METRICS, "fit_time_s")}
            out[panel][str(v)]["psd_projected"] = int(sum(r["psd_projected"] for r in sel))
    return out


def plot(summary: dict[str, dict], path: Path, seeds: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), constrained_layout=True)
    xlabels = {"n": "number of samples n, thousands (d = k = 5)", "d": "dimension d = k (n = 5e5)",
               "kappa": r"condition number $\kappa$ of $WW^T$ (d = k = 5, n = 5e5)"}
    styles = {"newton": "-", "sgd": "--"}
    colors = {"sigma_error": "C0", "bias_error": "C1", "tv_proxy": "C2"}
    for ax, panel in zip(axes, PANELS):
        for solver, summ in summary.items():
            xs = [float(v) / (1000 if panel == "n" else 1) for v in summ[panel]]
            for m in METRICS:
                mean = [summ[panel][v][m][0] for v in summ[panel]]
                std = [summ[panel][v][m][1] for v in summ[panel]]
                ax.errorbar(xs, mean, yerr=std, ls=styles[solver], color=colors[m], marker="o", ms=3,
                            capsize=2, label=f"{LABELS[m]} ({solver})")
        ax.set_xlabel(xlabels[panel])
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"error (mean $\\pm$ sd over {seeds} seeds)")
    axes[0].legend(fontsize=7)
    fig.suptitle("Wu-Dimakis-Sanghavi estimator on x = ReLU(Wz + b), b >= 0 (their Figure 1)")
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--solver", nargs="+", default=["newton"], choices=["newton", "sgd"])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (one thread each)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "figures")
    ap.add_argument("--replot", action="store_true", help="redraw the PNG from the JSON of the last run")
    args = ap.parse_args()
    if args.replot:
        saved = json.loads((args.out / "wds_figure1.json").read_text())
        plot(saved["summary"], args.out / "wds_figure1.png", saved["meta"]["seeds"])
        return
    jobs = [(p, v, s, solver) for solver in args.solver for p, spec in PANELS.items()
            for v in spec["values"] for s in range(args.seeds)]
    t0 = time.perf_counter()
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            rows = list(pool.map(one_fit, jobs, chunksize=4))
    else:
        rows = [one_fit(j) for j in jobs]
    wall = time.perf_counter() - t0
    summary = {solver: summarize(rows, solver) for solver in args.solver}
    args.out.mkdir(parents=True, exist_ok=True)
    plot(summary, args.out / "wds_figure1.png", args.seeds)
    meta = {"fits": len(jobs), "wall_s": wall, "jobs": args.jobs, "seeds": args.seeds}
    (args.out / "wds_figure1.json").write_text(json.dumps({"meta": meta, "summary": summary}, indent=1))
    print(f"{len(jobs)} fits (data generation included) in {wall:.1f} s with {args.jobs} process(es)")
    for solver, summ in summary.items():
        print(f"\n[{solver}]  mean (sd) over {args.seeds} seeds;  psd = fits whose Sigma_hat was projected")
        for panel in PANELS:
            for v, r in summ[panel].items():
                print(f"  {panel:>5} = {v:>8}: sigma {r['sigma_error'][0]:.4f} ({r['sigma_error'][1]:.4f})  "
                      f"bias {r['bias_error'][0]:.4f} ({r['bias_error'][1]:.4f})  "
                      f"tv {r['tv_proxy'][0]:.4f} ({r['tv_proxy'][1]:.4f})  "
                      f"fit {r['fit_time_s'][0]:.3f} s  psd {r['psd_projected']}")
        big = [r["sigma_error"][0] for p in ("d", "kappa") for r in summ[p].values()]
        print(f"  targets: sigma(n=20k) {summ['n']['20000']['sigma_error'][0]:.4f} <= 0.17, "
              f"sigma(n=200k) {summ['n']['200000']['sigma_error'][0]:.4f} <= 0.04, "
              f"max sigma at n=5e5 {max(big):.4f} <= 0.025")


if __name__ == "__main__":
    main()

"""Power of each distance's verdict: which metric sees a parameter error of what size, at which n.

    .venv/bin/python scripts/metric_power.py                       # every family, n = 500 / 2000, 10 seeds
    .venv/bin/python scripts/metric_power.py --quick               # quadratic and relu, n = 500, 4 seeds
    .venv/bin/python scripts/metric_power.py --families quadratic --ns 2000 --seeds 20

For each family (its ``conf/data`` dimensions scaled down to latent 5 / out 20 where larger), a true
instance F* and, for each relative perturbation eps in 0 / 0.01 / 0.02 / 0.05 / 0.1 / 0.2 / 0.5 / 1.0,
a generator whose every parameter tensor is F*'s plus Gaussian noise of Frobenius norm eps times
the tensor's norm (eps = 0: the truth itself, so that row is the false-positive rate). Each
(family, eps, n, seed) runs the shared evaluation (:func:`pfbench.metrics.evaluate.evaluate`, the
default settings at sample size n: the same nulls, B and level alpha as a run) and records every
distance's verdict. The table is the fraction of seeds in which the verdict says "different from
the truth". Seeds differ in the instance, the perturbation and every sample.

Writes docs/figures/metric_power.json (every verdict and p-value) and docs/figures/metric_power.png
(power against eps, one panel per family, one line per distance and n), and prints the table.
"""

from __future__ import annotations

from pfbench import limit_blas_threads

limit_blas_threads()

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pfbench.families import FAMILIES, make_instance  # noqa: E402
from pfbench.metrics.evaluate import REGISTRY, evaluate  # noqa: E402
from pfbench.seeding import torch_generator  # noqa: E402

EPS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
OUT = Path(__file__).resolve().parents[1] / "docs" / "figures"
DIMS = {"relu_deep": dict(latent=5, out=20, hidden=[20])}


def perturbed(truth: torch.nn.Module, eps: float, seed: int) -> torch.nn.Module:
    """A copy of ``truth`` with each parameter tensor moved by noise of relative Frobenius size eps."""
    g = copy.deepcopy(truth)
    gen = torch_generator(seed, f"power_perturb_{eps}")
    with torch.no_grad():
        for p in g.parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            scale = float(p.norm()) / max(float(noise.norm()), 1e-300)
            p.add_(eps * scale * noise)
    return g


def eval_cfg(n: int) -> dict:
    """The default evaluation at sample size n (the copying and birthday tests need a training set or
    only test memorization; the parameter error is known by construction)."""
    cfg: dict = {"n_samples": n, "param_error": {"enabled": False}}
    for d in REGISTRY:
        block: dict = {}
        if hasattr(d.config(), "n"):
            block["n"] = n
        if d.name in ("w2", "support", "copying"):
            block["enabled"] = False
        cfg[d.name] = block
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--families", default=None, help="comma-separated (default: every registered family)")
    ap.add_argument("--ns", default=None, help="comma-separated sample sizes (default 500,2000)")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--replot", action="store_true", help="redraw the figure from <out>/metric_power.json")
    args = ap.parse_args()
    if args.replot:
        d = json.loads((args.out / "metric_power.json").read_text())
        keys = sorted({row["distance"] for row in d["table"]})
        _figure(d["table"], d["families"], d["ns"], keys, args.out / "metric_power.png", d["seeds"])
        return
    fams = (args.families.split(",") if args.families else
            (["quadratic", "relu"] if args.quick else sorted(FAMILIES)))
    ns = [int(x) for x in args.ns.split(",")] if args.ns else ([500] if args.quick else [500, 2000])
    seeds = args.seeds or (4 if args.quick else 10)
    torch.set_num_threads(1)
    records = []
    t_start = time.perf_counter()
    for fam in fams:
        spec = DIMS.get(fam, dict(latent=5, out=20))
        kw = {k: v for k, v in spec.items() if k not in ("latent", "out")}
        for n in ns:
            for s in range(seeds):
                truth = make_instance(fam, spec["latent"], spec["out"], generator=torch_generator(s, f"power_{fam}"),
                                      **kw)
                x_test = truth.sample_batched(n, torch_generator(s, "power_test"))
                memo: dict = {}  # what does not read the generated sample, shared by the eps values
                for eps in EPS:
                    model = perturbed(truth, eps, s) if eps > 0 else copy.deepcopy(truth)
                    rec = evaluate(model, x_test, truth=truth, cfg=eval_cfg(n), seed=s, memo=memo)
                    keys = [d.key for d in REGISTRY if f"{d.key}_verdict" in rec]
                    records.append({"family": fam, "n": n, "seed": s, "eps": eps,
                                    **{f"{k}_verdict": rec[f"{k}_verdict"] for k in keys},
                                    **{f"{k}_pvalue": rec.get(f"{k}_pvalue") for k in keys},
                                    **{k: rec.get(k) for k in keys}})
                print(f"{fam} n={n} seed {s}: done ({time.perf_counter() - t_start:.0f} s)", flush=True)
    keys = sorted({k[: -len("_verdict")] for r in records for k in r if k.endswith("_verdict")})
    table = []
    for fam in fams:
        for n in ns:
            for k in keys:
                row = {"family": fam, "n": n, "distance": k}
                memo: dict = {}  # what does not read the generated sample, shared by the eps values
                for eps in EPS:
                    vs = [r[f"{k}_verdict"] for r in records if (r["family"], r["n"], r["eps"]) == (fam, n, eps)
                          and r.get(f"{k}_verdict") is not None]
                    row[str(eps)] = (sum(str(v).startswith("different") for v in vs) / len(vs)) if vs else None
                table.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "metric_power.json", "w") as f:
        json.dump({"eps": EPS, "ns": ns, "seeds": seeds, "families": fams, "table": table, "runs": records,
                   "seconds": time.perf_counter() - t_start}, f, indent=1)
    head = "| family | n | distance | " + " | ".join(f"eps={e:g}" for e in EPS) + " |"
    print(head)
    print("|---|---|---|" + "---|" * len(EPS))
    for row in table:
        print(f"| {row['family']} | {row['n']} | {row['distance']} | "
              + " | ".join("" if row[str(e)] is None else f"{row[str(e)]:.2f}" for e in EPS) + " |")
    _figure(table, fams, ns, keys, args.out / "metric_power.png", seeds)


def _figure(table: list[dict], fams: list[str], ns: list[int], keys: list[str], path: Path, seeds: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(fams), figsize=(3.6 * len(fams), 3.4), squeeze=False, sharey=True)
    colors = dict(zip(keys, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    styles = dict(zip(ns, ["--", "-", ":"]))
    x = [e for e in EPS if e > 0]
    for ax, fam in zip(axes[0], fams):
        for row in (r for r in table if r["family"] == fam):
            y = [row[str(e)] for e in x]
            if all(v is None for v in y):
                continue
            ax.plot(x, [np.nan if v is None else v for v in y], styles.get(row["n"], "-"), marker="o", ms=3,
                    color=colors[row["distance"]], label=f"{row['distance']}, n = {row['n']}")
        ax.axhline(0.05, color="0.6", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_title(fam)
        ax.set_xlabel("relative parameter perturbation eps")
    axes[0][0].set_ylabel(f"fraction of {seeds} seeds judged different")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle("Power of each distance's verdict (level 0.05, dotted; dashed: n = 500, solid: n = 2000) "
                 "against the size of the parameter error")
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    main()

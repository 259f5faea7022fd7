"""``python -m pfbench.report <sweep dir>``: runs -> results.csv, report.md and figures.

Reads every ``metrics.json`` under the directory (with the run's ``config.yaml``), so it can be
re-run while a sweep is still going and shows failed and diverged runs with their reasons.
Outputs (in ``<sweep dir>/report`` unless ``--out``):

- ``results.csv``: one row per run; flat columns (``cfg.*`` config, ``metrics.*``, ``fit.*``, ``timing.*``);
- ``report.md``: per data family, each method's metrics as mean and 95% t-interval over seeds at
  each training-set size, beside the noise floors, and time to fit; the headline table; failures;
- ``param_error_vs_n.png``, ``distance_vs_n.png`` (log-log, fitted slopes), ``time_to_accuracy.png``,
  ``samples_<family>.png`` (true vs generated samples of one seed per method).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy import stats

from pfbench.tracking import flatten

DISTANCES = ("w1", "sw", "mmd", "nn_dist")


def method_label(rec: dict) -> str:
    """wgan, wgan_gp, jsgan-minimax, vae, moments, ...; ``+mlp`` marks a generic MLP generator."""
    name = str(rec.get("method", "?"))
    if name == "jsgan" and rec.get("loss"):
        name = f"jsgan-{rec['loss']}"
    if rec.get("generator") == "mlp":
        name += "+mlp"
    return name


def load_runs(root: Path) -> list[dict]:
    """One flat dict per run directory under ``root`` holding a metrics.json."""
    rows = []
    for mpath in sorted(root.rglob("metrics.json")):
        if "report" in mpath.parts[len(root.parts):]:
            continue
        try:
            rec = json.loads(mpath.read_text())
        except (OSError, json.JSONDecodeError) as e:
            rows.append({"run_dir": str(mpath.parent), "status": "unreadable", "reason": str(e)})
            continue
        row: dict[str, Any] = {"run_dir": str(mpath.parent.relative_to(root))}
        cpath = mpath.parent / "config.yaml"
        cfg = yaml.safe_load(cpath.read_text()) if cpath.exists() else {}
        for k, v in flatten(cfg or {}).items():
            row[f"cfg.{k}"] = json.dumps(v) if isinstance(v, (list, dict)) else v
        for k, v in rec.items():
            if isinstance(v, dict):
                row.update({f"{k}.{k2}": v2 for k2, v2 in flatten(v).items()})
            else:
                row[k] = v
        row["label"] = method_label(rec)
        if row.get("data") is None:
            row["data"] = row.get("cfg.data.name", "?")
        if row.get("n_train") is None:
            row["n_train"] = row.get("cfg.data.n_train")
        rows.append(row)
    return rows


def write_csv(rows: list[dict], path: Path) -> None:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def mean_ci(values: list[float]) -> tuple[float, float] | None:
    """Mean and half-width of the 95% t-interval (0 for a single value)."""
    v = [x for x in values if x is not None]
    if not v:
        return None
    if len(v) == 1:
        return v[0], 0.0
    a = np.asarray(v)
    return float(a.mean()), float(stats.t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / math.sqrt(len(a)))


def fmt(mc: tuple[float, float] | None) -> str:
    if mc is None:
        return "–"
    m, h = mc
    return f"{m:.3g}" if h == 0 else f"{m:.3g} ± {h:.2g}"


def _ok(r: dict) -> bool:
    return r.get("status") in ("completed", "not_converged")


def group(rows: list[dict]) -> dict[str, dict[tuple[str, Any], list[dict]]]:
    """family -> (method label, n_train) -> completed runs."""
    out: dict[str, dict] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if _ok(r):
            out[str(r.get("data"))][(r["label"], r.get("n_train"))].append(r)
    return out


def _sort_key(k):
    return (k[0], _num(k[1]) or 0)


def family_table(cells: dict[tuple[str, Any], list[dict]]) -> list[str]:
    cols = ["method", "n_train", "runs", "param_error"]
    for d in DISTANCES:
        cols += [d, f"{d}_floor"]
    cols += ["fit time (s)"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for (label, n), runs in sorted(cells.items(), key=lambda kv: _sort_key(kv[0])):
        vals = [label, str(n), str(len(runs)), fmt(mean_ci([_num(r.get("metrics.param_error")) for r in runs]))]
        for d in DISTANCES:
            vals += [fmt(mean_ci([_num(r.get(f"metrics.{d}")) for r in runs])),
                     fmt(mean_ci([_num(r.get(f"metrics.{d}_floor")) for r in runs]))]
        vals.append(fmt(mean_ci([_fit_time(r) for r in runs])))
        lines.append("| " + " | ".join(vals) + " |")
    return lines


def _fit_time(r: dict) -> float | None:
    t = _num(r.get("timing.train_time_s"))
    return t if t is not None else _num(r.get("timing.fit_time_s"))


def headline(rows: list[dict], family: str = "quadratic") -> list[str]:
    """Per method on ``family``: median gauge-aligned parameter error and wall time at each n."""
    cells = group(rows).get(family, {})
    ns = sorted({n for (_, n) in cells if n is not None}, key=lambda n: _num(n) or 0)
    methods = sorted({m for (m, _) in cells})
    if not methods:
        return [f"(no completed runs on {family})"]
    lines = ["| method | " + " | ".join(f"n = {int(_num(n)):,}" for n in ns) + " |",
             "|---|" + "---|" * len(ns)]
    for m in methods:
        vals = []
        for n in ns:
            runs = cells.get((m, n), [])
            pe = [x for x in (_num(r.get("metrics.param_error")) for r in runs) if x is not None]
            wt = [x for x in (_num(r.get("timing.wall_time_s")) for r in runs) if x is not None]
            vals.append(f"{np.median(pe):.3g} ({np.median(wt):.1f} s)" if pe else
                        (f"– ({np.median(wt):.1f} s)" if wt else "–"))
        lines.append(f"| {m} | " + " | ".join(vals) + " |")
    return lines


def slope(ns: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log y against log n (the empirical rate)."""
    pts = [(math.log(n), math.log(y)) for n, y in zip(ns, ys) if n and y and n > 0 and y > 0]
    if len({p[0] for p in pts}) < 2:
        return None
    x, y = np.array(pts).T
    return float(np.polyfit(x, y, 1)[0])


def _figures(rows: list[dict], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    fams = group(rows)
    if not fams:
        return made
    for metric, fname, ylabel in (("param_error", "param_error_vs_n.png", "gauge-aligned parameter error"),
                                  ("w1", "distance_vs_n.png", "W1 to held-out sample")):
        fig, axes = plt.subplots(1, len(fams), figsize=(5 * len(fams), 4), squeeze=False)
        drew = False
        for ax, (fam, cells) in zip(axes[0], sorted(fams.items())):
            per_method: dict[str, list] = defaultdict(list)
            floors: dict[float, list] = defaultdict(list)
            for (m, n), runs in cells.items():
                vals = [x for x in (_num(r.get(f"metrics.{metric}")) for r in runs) if x is not None]
                if vals and _num(n):
                    per_method[m].append((_num(n), float(np.median(vals)), np.percentile(vals, [25, 75])))
                for r in runs:
                    f = _num(r.get(f"metrics.{metric}_floor"))
                    if f is not None and _num(n):
                        floors[_num(n)].append(f)
            for m, pts in sorted(per_method.items()):
                pts.sort()
                ns, med, iq = [p[0] for p in pts], [p[1] for p in pts], np.array([p[2] for p in pts])
                s = slope(ns, med)
                ax.errorbar(ns, med, yerr=[np.subtract(med, iq[:, 0]), np.subtract(iq[:, 1], med)], marker="o",
                            capsize=3, label=f"{m}" + (f" (slope {s:.2f})" if s is not None else ""))
                drew = True
            if floors:
                fl = sorted((n, float(np.median(v))) for n, v in floors.items())
                ax.plot([p[0] for p in fl], [p[1] for p in fl], "k--", label="noise floor")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(fam)
            ax.set_xlabel("n_train")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3, which="both")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        if drew:
            fig.tight_layout()
            fig.savefig(out / fname, dpi=90)
            made.append(fname)
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4.5))
    by_m: dict[str, list] = defaultdict(list)
    for r in rows:
        pe, t = _num(r.get("metrics.param_error")), _num(r.get("timing.wall_time_s"))
        if _ok(r) and pe is not None and t is not None and pe > 0:
            by_m[f"{r['label']} / {r['data']}"].append((t, pe))
    for m, pts in sorted(by_m.items()):
        ax.scatter(*zip(*pts), label=m, s=18)
    if by_m:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("wall time per run (s)")
        ax.set_ylabel("parameter error")
        ax.set_title("time to accuracy")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, which="both")
        fig.tight_layout()
        fig.savefig(out / "time_to_accuracy.png", dpi=90)
        made.append("time_to_accuracy.png")
    plt.close(fig)

    for fam, cells in sorted(fams.items()):  # sample plots of one seed per method (largest n)
        picks = {}
        for (m, n), runs in cells.items():
            for r in runs:
                p = Path(r["_root"]) / r["run_dir"] / "samples.png"
                best = picks.get(m)
                key = (-(_num(n) or 0), _num(r.get("seed")) or 0)
                if p.exists() and (best is None or key < best[0]):
                    picks[m] = (key, p)
        if not picks:
            continue
        fig, axes = plt.subplots(len(picks), 1, figsize=(12, 3.6 * len(picks)), squeeze=False)
        for ax, (_m, (_, p)) in zip(axes[:, 0], sorted(picks.items())):  # each image is titled
            ax.imshow(plt.imread(p))
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(out / f"samples_{fam}.png", dpi=80)
        plt.close(fig)
        made.append(f"samples_{fam}.png")
    return made


def build_report(root: Path, out: Path | None = None, figures: bool = True) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise SystemExit(f"pfbench.report: {root} is not a directory; pass a sweep (multirun) directory")
    out = Path(out) if out else root / "report"
    out.mkdir(parents=True, exist_ok=True)
    rows = load_runs(root)
    for r in rows:
        r["_root"] = str(root)
    public = [{k: v for k, v in r.items() if k != "_root"} for r in rows]
    write_csv(public, out / "results.csv")
    made = _figures(rows, out) if figures else []
    status = defaultdict(int)
    for r in rows:
        status[r.get("status", "unknown")] += 1
    md = [f"# pfbench report: {root}", "",
          f"{len(rows)} runs: " + ", ".join(f"{k} {v}" for k, v in sorted(status.items())), "",
          "Each cell: mean ± half-width of the 95% t-interval over seeds (completed runs). `<metric>_floor` is",
          "the same distance between two independent true samples of the same sizes: a method whose distance",
          "lies within its floor is indistinguishable from the truth at that sample size.", "",
          "## Headline: quadratic family, median parameter error (median wall time)", "", *headline(rows), ""]
    for fam, cells in sorted(group(rows).items()):
        md += [f"## data = {fam}", "", *family_table(cells), ""]
    bad = [r for r in rows if not _ok(r) and r.get("status") != "skipped"]
    if bad:
        md += ["## Failed, diverged or unreadable runs", "", "| run | method | data | status | step | reason |",
               "|---|---|---|---|---|---|"]
        for r in bad:
            reason = str(r.get("reason", "")).replace("|", "/")
            md.append(f"| {r['run_dir']} | {r.get('label', '?')} | {r.get('data', '?')} | {r.get('status')} | "
                      f"{r.get('diverged_step') or r.get('steps', '')} | {reason} |")
        md.append("")
    if made:
        md += ["## Figures", ""] + [f"![{f}]({f})" for f in made] + [""]
    (out / "report.md").write_text("\n".join(md))
    (out / "headline.md").write_text("\n".join(headline(rows)) + "\n")
    return out


def log_wandb_table(root: Path, out: Path, mode: str = "offline") -> None:
    """One W&B run (job_type 'report', grouped by sweep) holding the results as a W&B Table."""
    import os

    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    from pfbench.tracking import resolve_mode

    with open(out / "results.csv") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        return
    run = wandb.init(project="pfbench", group=Path(root).name, job_type="report", name=f"report-{Path(root).name}",
                     dir=str(out), mode=resolve_mode(mode), reinit="finish_previous",
                     settings=wandb.Settings(console="off", silent=True, x_disable_stats=True))
    run.log({"results": wandb.Table(columns=rows[0], data=rows[1:])})
    for png in out.glob("*.png"):
        run.log({f"report/{png.stem}": wandb.Image(str(png))})
    run.finish()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pfbench.report", description=__doc__.splitlines()[0])
    ap.add_argument("sweep_dir", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="output directory (default <sweep_dir>/report)")
    ap.add_argument("--no-figures", action="store_true")
    ap.add_argument("--wandb", default="auto", choices=["auto", "offline", "online", "disabled"],
                    help="log the results table to W&B (auto: online only when W&B is configured)")
    a = ap.parse_args(argv)
    out = build_report(a.sweep_dir, a.out, figures=not a.no_figures)
    if a.wandb != "disabled":
        log_wandb_table(a.sweep_dir, out, a.wandb)
    print(f"pfbench.report: {out / 'report.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

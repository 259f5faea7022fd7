"""The report's budgets (selection among evaluations <= B), run counts and exclusions, recovery of
config-failed jobs, the empty-directory error, figures and the fixed color per method."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from pfbench import report as R

# ---------------------------------------------------------------------------------------------
# budget_selection against a hand computation
# ---------------------------------------------------------------------------------------------

EVALS = [  # val_moments selects; param_error is only recorded (step 300 has the best one, never selected)
    {"step": 100, "elapsed_s": 1.0, "val_moments": 0.5, "val_sw": 0.10, "param_error": 0.9},
    {"step": 200, "elapsed_s": 2.0, "val_moments": 0.3, "val_sw": 0.50, "param_error": 0.8},
    {"step": 300, "elapsed_s": 3.0, "val_moments": 0.4, "val_sw": 0.05, "param_error": 0.1},
    {"step": 400, "elapsed_s": 4.0, "val_moments": 0.2, "val_sw": 0.60, "param_error": 0.6},
    {"step": 500, "elapsed_s": 5.0, "val_moments": None, "val_sw": None, "param_error": 0.05},  # inf -> null
]


def test_budget_selection_by_hand():
    sel = R.budget_selection(EVALS, "val_moments", [50, 100, 250, 350, 400, 10_000])
    assert sel[50] is None  # below the first evaluation
    assert (sel[100]["step"], sel[100]["param_error"], sel[100]["value"]) == (100, 0.9, 0.5)
    assert (sel[250]["step"], sel[250]["param_error"], sel[250]["elapsed_s"]) == (200, 0.8, 2.0)
    # at B = 350 the later, better (val 0.2) checkpoint of step 400 is not available, and step 300's
    # far better param_error (0.1) does not matter: selection reads the validation statistic only
    s = sel[350]
    assert (s["step"], s["param_error"], s["value"], s["variant"]) == (200, 0.8, 0.3, "raw")
    assert (s["elapsed_s"], s["budget_step"], s["selected_elapsed_s"]) == (3.0, 300, 2.0)
    assert (sel[400]["step"], sel[400]["param_error"]) == (400, 0.6)
    # beyond the last evaluation: all evaluations (the null statistic of step 500 is never selected)
    assert (sel[10_000]["step"], sel[10_000]["param_error"], sel[10_000]["elapsed_s"]) == (400, 0.6, 5.0)


def test_budget_selection_follows_the_statistic_not_param_error():
    by_sw = R.budget_selection(EVALS, "val_sw", [250, 400])
    assert (by_sw[250]["step"], by_sw[250]["param_error"]) == (100, 0.9)
    assert (by_sw[400]["step"], by_sw[400]["param_error"]) == (300, 0.1)
    shuffled = R.budget_selection(list(reversed(EVALS)), "val_moments", [350])
    assert shuffled[350]["step"] == 200
    # with param_error reordered arbitrarily the choice does not move
    scrambled = [{**e, "param_error": p} for e, p in zip(EVALS, [0.01, 5.0, 0.02, 0.03, 0.04])]
    assert R.budget_selection(scrambled, "val_moments", [350])[350]["step"] == 200


def test_budget_selection_ema_and_ties():
    evals = [{**e, "ema_val_moments": 0.25 if e["step"] == 200 else 9.0, "ema_param_error": 0.7} for e in EVALS[:3]]
    sel = R.budget_selection(evals, "val_moments", [250])[250]
    assert (sel["step"], sel["variant"], sel["param_error"]) == (200, "ema", 0.7)
    raw_only = R.budget_selection(evals, "val_moments", [250], ema=False)[250]
    assert (raw_only["variant"], raw_only["param_error"]) == ("raw", 0.8)
    ties = [{"step": s, "val_moments": 0.5, "param_error": p} for s, p in ((10, 1.0), (20, 2.0))]
    assert R.budget_selection(ties, "val_moments", [30])[30]["step"] == 10  # the earlier one, as the run does
    assert R.budget_selection([], "val_moments", [30]) == {30: None}


# ---------------------------------------------------------------------------------------------
# A fake sweep with known numbers
# ---------------------------------------------------------------------------------------------

STEPS = (100, 200, 300, 400)
WGAN = {  # seed: (val_moments at each step, param_error at each step)
    0: ([0.5, 0.3, 0.4, 0.2], [0.9, 0.8, 0.1, 0.6]),
    1: ([0.6, 0.5, 0.45, 0.4], [0.95, 0.85, 0.7, 0.5]),
    2: ([0.4, 0.45, 0.3, 0.35], [0.88, 0.2, 0.75, 0.3]),
    3: ([0.4, 0.3, 0.2, 0.1], [None] * 4),  # param_error null (non-finite) at every evaluation
}
MOMENTS = {0: (0.2, 1.0), 1: (0.3, 2.0), 2: (0.25, 3.0)}  # seed: (param_error, fit time)


def _write_run(root: Path, name: str, rec: dict, *, cfg: dict | None = None, history=None) -> Path:
    d = root / name
    d.mkdir(parents=True)
    if cfg is not None:
        (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    if history is not None:
        (d / "history.json").write_text(json.dumps(history))
    (d / "metrics.json").write_text(json.dumps(rec))
    return d


def _learned(root: Path, name: str, seed: int, vals, pes, *, status="completed", diverged_step=None, method="wgan",
             rho=None, steps=400, n=1000):
    evals = [{"step": s, "elapsed_s": 0.01 * s * (1 + seed / 10), "val_moments": v, "val_sw": 1.0, "param_error": p}
             for s, v, p in zip(STEPS, vals, pes)]
    rec = {"method": method, "loss": None, "generator": "family", "tuned": None, "data": "quadratic",
           "latent_dim": 2, "out_dim": 4, "n_train": n, "n_val": 128, "seed": seed, "status": status,
           "reason": None if status == "completed" else f"non-finite loss_g at step {diverged_step}",
           "steps": diverged_step or steps, "diverged_step": diverged_step,
           "timing": {"train_time_s": 0.01 * steps, "wall_time_s": 0.02 * steps}}
    if status == "completed":
        rec["selection"] = {"statistic": "val_moments", "eval_every": 100, "n_evals": len(evals), "step": 400,
                            "variant": "raw", "value": min(vals), "early_stopped_step": None, "patience": None,
                            "rank_corr_with_param_error": {"val_moments": rho, "val_sw": None}}
        rec["metrics"] = {"param_error": pes[-1], "w1": 1.0, "w1_floor": 0.5}
        rec["metrics_selected"] = {"param_error": pes[-1]}
    cfg = {"seed": seed, "data": {"name": "quadratic", "n_train": n, "n_val": 128},
           "model": {"name": method, "kind": "gan", "train": {"steps": steps, "eval_every": 100, "ema": None,
                                                               "select_by": "val_moments"}}}
    _write_run(root, name, rec, cfg=cfg, history={"train": [{"step": 25, "loss_d": 0.1, "loss_g": 0.2}],
                                                  "eval": evals})


def _fake_sweep(root: Path) -> Path:
    rhos = {0: 0.5, 1: 0.7}
    for s, (vals, pes) in WGAN.items():
        _learned(root, f"{s}_wgan_quadratic_s{s}", s, vals, pes, rho=rhos.get(s))
    # diverged at step 250: its evaluations at 100 and 200 stand for budgets below 250
    _learned(root, "4_wgan_quadratic_s4", 4, [0.5, 0.4], [0.92, 0.82], status="diverged", diverged_step=250)
    for s, (pe, t) in MOMENTS.items():
        _write_run(root, f"{5 + s}_moments_quadratic_s{s}",
                   {"method": "moments", "loss": None, "generator": "estimator", "data": "quadratic", "n_train": 1000,
                    "seed": s, "status": "completed", "reason": None, "steps": 0,
                    "validation": {"val_moments": 0.1, "val_sw": 0.1}, "objective": 0.1,
                    "metrics": {"param_error": pe, "w1": 0.6, "w1_floor": 0.5},
                    "timing": {"fit_time_s": t, "wall_time_s": t + 1}},
                   cfg={"seed": s, "data": {"name": "quadratic", "n_train": 1000}, "model": {"name": "moments",
                                                                                          "kind": "estimator"}})
    # an old run: history.json is a plain list of loss records, no evaluations
    _write_run(root, "8_vae_quadratic_s0",
               {"method": "vae", "generator": "family", "data": "quadratic", "n_train": 1000, "seed": 0,
                "status": "completed", "steps": 400, "metrics": {"param_error": 0.7}, "timing": {"wall_time_s": 2.0}},
               cfg={"seed": 0, "data": {"name": "quadratic", "n_train": 1000}, "model": {"name": "vae"}},
               history=[{"step": 25, "loss": 1.0}])
    # config-failed jobs: metrics.json names no method (Hydra's overrides do; or only the directory name)
    d = _write_run(root, "9_wgan_gp_quadratic_s0",
                   {"status": "failed", "reason": "config error: data.n_train=-5 must be > 0"})
    (d / ".hydra").mkdir()
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["+model=wgan_gp", "data.n_train=1000", "seed=0"]))
    _write_run(root, "10_jsgan_minimax_quadratic_s1", {"status": "failed", "reason": "config error: bad value"})
    # a method that does not apply to the family: skipped, listed once, not a table row
    _write_run(root, "11_relu_moments_quadratic_s0",
               {"method": "relu_moments", "data": "quadratic", "seed": 0, "status": "skipped",
                "reason": "+model=relu_moments does not apply to data=quadratic"})
    return root


def _cell(values: list[float], n_all: int) -> str:
    """``median (mean ± 95% t half-width)``, 3 significant digits, ``[k/N]`` when runs are left out."""
    v = np.asarray(values)
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    out = f"{R.sig3(np.median(v))} ({R.sig3(v.mean())} ± {R.sig3(half)})"
    return out + (f" [{len(v)}/{n_all}]" if len(v) < n_all else "")


def test_three_significant_digits():
    cases = {0.1: "0.100", 0.04312: "0.0431", 179.2: "179", 1234.0: "1230", 0.000607: "6.07e-04",
             -0.000117: "-1.17e-04", 123456.0: "1.23e+05", 0.0009996: "0.00100", 0.000999: "9.99e-04",
             0.09996: "0.100", 2.0: "2.00", 0.0: "0", None: "–", float("nan"): "–", -3.32e-05: "-3.32e-05",
             12.345: "12.3"}
    for x, want in cases.items():
        assert R.sig3(x) == want, (x, R.sig3(x), want)
    assert R.fmt((-0.000117, 0.00053)) == "-1.17e-04 ± 5.30e-04"
    assert R.summary([0.5]) == "0.500"


def test_budget_table_counts_and_exclusions(tmp_path):
    out = R.build_report(_fake_sweep(tmp_path), figures=False, budgets=[100, 200, 400])
    md = (out / "report.md").read_text()
    assert "12 runs: completed 8, diverged 1, failed 2, skipped 1" in md
    table = md.split("### Selected-checkpoint param_error")[1].split("Excluded from these cells:")[0]
    assert "| method | B (steps) | n = 1,000 |" in table
    rows = {tuple(ln.split(" | ")[:2]): ln for ln in table.splitlines() if ln.startswith("| ")}
    # hand selection per seed: B=100 -> step 100; B=200 -> seed 2 keeps step 100 (val 0.4 < 0.45,
    # though step 200 has param_error 0.2); B=400 -> steps 400, 400, 300; seed 3 has no param_error,
    # seed 4 diverged at 250 (counted at B = 100, 200, excluded at 400)
    b100, b200, b400 = [0.9, 0.95, 0.88, 0.92], [0.8, 0.85, 0.88, 0.82], [0.6, 0.5, 0.75]
    assert rows[("| wgan", "100")] == f"| wgan | 100 | {_cell(b100, 5)} |"
    assert rows[("| wgan", "200")] == f"| wgan | 200 | {_cell(b200, 5)} |"
    assert rows[("| wgan", "400")] == f"| wgan | 400 | {_cell(b400, 5)} |"
    assert _cell(b400, 5) == "0.600 (0.617 ± 0.313) [3/5]"  # 3 significant digits, k/N only where runs are out
    pe, t = zip(*MOMENTS.values())
    assert rows[("| moments", "–")] == f"| moments | – | {_cell(list(pe), 3)} · fit 2.00 s |"  # one row: no steps
    assert not any(k[0] == "| moments" and k[1] != "–" for k in rows)
    assert rows[("| vae", "400")] == "| vae | 400 | – [0/1] |"
    assert rows[("| wgan-gp", "100")] == "| wgan-gp | 100 | – [0/1] |"  # recovered from .hydra/overrides.yaml
    exc = md.split("Excluded from these cells:")[1].split("###")[0]
    assert ("- wgan, n = 1,000, budget 100 / 200 / 400: **non-finite/null param_error**: 1 run "
            "(`3_wgan_quadratic_s3`)") in exc
    assert "- wgan, n = 1,000, budget 400: **diverged**: 1 run (`4_wgan_quadratic_s4`)" in exc
    assert "- wgan-gp, n = 1,000, budget 100 / 200 / 400: **failed**: 1 run (`9_wgan_gp_quadratic_s0`)" in exc
    assert "**no periodic evaluations (eval_every unset)**: 1 run (`8_vae_quadratic_s0`)" in exc
    # the job with neither metrics nor overrides: method from its directory name, n_train unknown
    assert "| 10_jsgan_minimax_quadratic_s1 | jsgan-minimax | quadratic | failed |" in md
    assert "| 9_wgan_gp_quadratic_s0 | wgan-gp | quadratic | failed |" in md
    assert "'?'" not in md and "| ? |" not in md
    # skipped runs: listed with their reason, not a table row
    skipped = md.split("## Skipped runs (1)")[1].split("##")[0]
    assert ("| relu-moments | quadratic | +model=relu_moments does not apply to data=quadratic | "
            "1 run (`11_relu_moments_quadratic_s0`) |") in skipped
    assert "| relu-moments |" not in md.split("## Skipped runs")[0]
    # final checkpoint: the null param_error run is excluded and counted, not silently dropped
    final = [ln for ln in md.splitlines() if ln.startswith("| wgan | final |")][0]
    assert final.endswith(f"| {_cell([0.6, 0.5, 0.3], 5)} |")
    # median Spearman correlations: 0.5 and 0.7 of the four completed runs
    assert "| wgan | +0.600 [2/4] | – [0/4] |" in md
    # results.csv carries the budget columns
    import csv

    by_dir = {r["run_dir"]: r for r in csv.DictReader(open(out / "results.csv"))}
    assert by_dir["2_wgan_quadratic_s2"]["budget_200.step"] == "100"
    assert by_dir["4_wgan_quadratic_s4"]["budget_400.excluded"] == "diverged"
    # the headline: largest budget by n_train, and by budget at n_train = 1,000 (10,000 absent)
    head = (out / "headline.md").read_text()
    assert "13 runs" not in head and "12 runs on quadratic" in head and "budgets 100 / 200 / 400" in head
    assert "seeds 0–4" in head and "tuned hyperparameters: none" in head
    assert "| B = 100 | B = 200 | B = 400 |" in head
    # the headline's time is training (or fit) time, never the wall time with the worker's start-up:
    # moments fit in 1, 2, 3 s (wall 2, 3, 4 s); the usable wgan runs (seeds 0, 1, 2) trained 4.0, 4.4,
    # 4.8 s to step 400, evaluations excluded (wall 8 s)
    moments = [ln for ln in head.splitlines() if ln.startswith("| moments |")][0]
    assert moments.endswith(" · 2.00 s |") and "3.00 s" not in moments
    wgan = [ln for ln in head.splitlines() if ln.startswith("| wgan |")][0]
    assert wgan.endswith(" · 4.40 s [3/5] |") and "8.00 s" not in wgan


def test_default_budgets_and_parse():
    rows = [{"_kind": "learned", "_evals": [{"step": s} for s in (250, 2500, 15000)]}, {"_kind": "estimator"}]
    assert R.default_budgets(rows) == [1500, 5000, 15000]
    rows[0]["_evals"] = [{"step": 600}]
    assert R.default_budgets(rows) == [600]
    assert R.default_budgets([{"_kind": "estimator"}]) == []
    assert R.parse_budgets("5000,1500,1.5k,15000") == [1500, 5000, 15000]
    with pytest.raises(R.ReportError):
        R.parse_budgets("a,b")


def test_history_formats(tmp_path):
    (tmp_path / "history.json").write_text(json.dumps([{"step": 1, "loss": 2.0}]))
    assert R.load_history(tmp_path) == ([{"step": 1, "loss": 2.0}], [])
    (tmp_path / "history.json").write_text(json.dumps({"train": [], "eval": [{"step": 20}, {"step": 10}]}))
    assert R.load_history(tmp_path) == ([], [{"step": 10}, {"step": 20}])
    assert R.load_history(tmp_path / "nope") == ([], [])


def test_empty_directory_is_an_error(tmp_path, capsys):
    (tmp_path / "0_wgan_quadratic_s0" / ".hydra").mkdir(parents=True)  # a sweep whose jobs wrote nothing yet
    assert R.main([str(tmp_path), "--wandb", "disabled"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"pfbench report: error: no metrics.json under {tmp_path}; ")
    assert not (tmp_path / "report").exists()
    assert R.main([str(tmp_path / "missing"), "--wandb", "disabled"]) == 2


def test_recover_identity_from_hydra_and_dir_name(tmp_path):
    d = tmp_path / "3_jsgan_minimax_tuned_relu_deep_s4"
    (d / ".hydra").mkdir(parents=True)
    assert R.recover_identity(d) == {"label": "jsgan-minimax-tuned", "data": "relu_deep", "seed": 4}
    (d / ".hydra" / "config.yaml").write_text(yaml.safe_dump(
        {"seed": 4, "data": {"name": "relu_deep", "n_train": 500},
         "model": {"name": "wgan", "kind": "gan", "generator": "mlp", "tuned": None}}))
    assert R.recover_identity(d) == {"label": "wgan+mlp", "kind": "gan", "data": "relu_deep", "n_train": 500, "seed": 4}
    assert R.parse_run_dir_name("12-01-02-123456_vae_relu_s0") == {"choice": "vae", "data": "relu", "seed": 0}
    assert R.parse_run_dir_name("report") == {}


def test_method_labels_follow_one_convention(tmp_path):
    """Words joined by '-', '-tuned' and '+mlp' suffixes, whatever the source (metrics.json, config choice)."""
    ml = R.method_label
    assert ml({"method": "jsgan", "loss": "non_saturating"}) == "jsgan-nonsat"
    assert ml({"method": "jsgan", "loss": "minimax", "tuned": True}) == "jsgan-minimax-tuned"
    assert ml({"method": "wgan_gp", "generator": "mlp"}) == "wgan-gp+mlp"
    assert ml({"method": "relu_moments"}) == "relu-moments"
    assert ml({"method": "wgan_tuned", "tuned": True}) == "wgan-tuned"
    for choice, label in (("jsgan", "jsgan-nonsat"), ("jsgan_tuned", "jsgan-nonsat-tuned"),
                          ("jsgan_minimax", "jsgan-minimax"), ("wgan_gp_tuned", "wgan-gp-tuned"),
                          ("relu_moments", "relu-moments"), ("memorize", "memorize")):
        assert R.label_from_choice(choice) == label
    assert all("_" not in m for m in R.METHOD_COLORS)
    assert set(R.METHOD_MARKERS) == set(R.METHOD_COLORS)
    # the CSV label column and the tables use the same labels
    out = R.build_report(_fake_sweep(tmp_path), figures=False, budgets=[400])
    import csv

    labels = {r["label"] for r in csv.DictReader(open(out / "results.csv"))}
    assert labels == {"wgan", "moments", "vae", "wgan-gp", "jsgan-minimax", "relu-moments"}
    assert "_" not in "".join(labels)


def _legend_colors(fig) -> dict[str, str]:
    """label -> color of every labelled artist on the panels (lines, errorbars, scatter points)."""
    import matplotlib.colors as mc

    out = {}
    for ax in fig.axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            if hasattr(h, "lines"):  # an errorbar container: its data line
                out[label] = mc.to_hex(h.lines[0].get_color())
            elif hasattr(h, "get_edgecolor"):  # scatter points
                out[label] = mc.to_hex(h.get_edgecolor()[0])
            else:
                out[label] = mc.to_hex(h.get_color())
    return out


def test_one_color_per_method(tmp_path):
    assert R.method_style("wgan") is R.method_style("wgan")
    assert R.method_style("wgan").color == R.METHOD_COLORS["wgan"]
    for variant in ("wgan-tuned", "wgan+mlp", "wgan-tuned+mlp"):
        assert R.method_style(variant).color == R.METHOD_COLORS["wgan"]
        assert R.method_style(variant).marker == R.METHOD_MARKERS["wgan"]
        assert R.method_style(variant)[1:] != R.method_style("wgan")[1:]
    assert R.method_style("jsgan-minimax-tuned").color == R.METHOD_COLORS["jsgan-minimax"]
    assert len({R.method_style(m).color for m in R.METHOD_COLORS}) == len(R.METHOD_COLORS)
    assert len({R.method_style(m).marker for m in R.METHOD_COLORS}) == len(R.METHOD_COLORS)
    for ref in R.REFERENCE_METHODS:  # reference methods: greys
        r, g, b = (int(R.METHOD_COLORS[ref][i:i + 2], 16) for i in (1, 3, 5))
        assert r == g == b
    new = R.method_style("my-new-gan")
    assert new == R.method_style.__wrapped__("my-new-gan") and new.color not in R.METHOD_COLORS.values()
    # every figure draws each method in its color: the same for a method across figures
    rows = R.load_runs(_fake_sweep(tmp_path))
    figs = {"steps": R.fig_param_error_vs_steps(rows, [100, 200, 400]), "time": R.fig_param_error_vs_time(rows),
            "n": R.fig_versus_n(rows, "param_error", "param_error"), "w1": R.fig_versus_n(rows, "w1", "W1"),
            "tta": R.fig_time_to_accuracy(rows)}
    colors = {k: _legend_colors(f) for k, f in figs.items()}
    for k, cs in colors.items():
        for label, c in cs.items():
            method = label.split(" (")[0]
            if not label.startswith("noise floor"):
                assert c == R.method_style(method).color, (k, label, c)
        assert cs["wgan"] == R.METHOD_COLORS["wgan"], k
        assert any(lb.startswith("moments") for lb in cs), k
    assert colors["steps"]["moments (estimator)"] == colors["time"]["moments (fit)"] == R.METHOD_COLORS["moments"]
    assert colors["n"]["moments"] == colors["tta"]["moments"] == R.METHOD_COLORS["moments"]
    for k, f in figs.items():
        # one legend per figure, outside the panels, each entry once; none on a panel
        assert len(f.legends) == 1 and all(ax.get_legend() is None for ax in f.axes), k
        texts = [t.get_text() for t in f.legends[0].get_texts()]
        assert len(texts) == len(set(texts)), k
    # the statistic is named on the axis: medians over seeds, interquartile bars
    assert all("median over seeds" in ax.get_ylabel() for ax in figs["steps"].axes if ax.get_visible())
    assert "interquartile" in figs["n"].axes[0].get_ylabel()
    # the noise floor is drawn (a visible marker), also with a single n_train
    (floor,) = [ln for ln in figs["w1"].axes[0].get_lines() if ln.get_label().startswith("noise floor")]
    assert len(floor.get_xdata()) == 1 and floor.get_marker() not in ("None", "", None) and floor.get_visible()
    import matplotlib.pyplot as plt

    plt.close("all")


def test_exact_methods_are_named_not_drawn():
    """The truth as a method (param_error ~1e-16) would stretch the log axis over 15 decades: it is left
    out of the param_error figures by name; a method exact in only some runs is still drawn."""
    def row(label, pe):
        return {"label": label, "metrics.param_error": pe}

    rows = [row("truth", 6e-16), row("truth", -2e-16), row("wgan", 0.1), row("wgan", 3e-17), row("moments", 0.02),
            row("gaussian", None), row("memorize", None)]
    assert R.exact_methods(rows) == ["truth"]
    assert R.exact_methods([row("truth", 6e-16), row("truth", 2e-10)]) == []  # 2e-10 is above the threshold


def test_time_to_accuracy_counts_training_not_start_up(tmp_path):
    """Wall time (worker start-up included) is never the time axis: fit time for estimators, training
    seconds at the last evaluation (evaluations excluded) for learned runs."""
    rows = R.load_runs(_fake_sweep(tmp_path))
    fig = R.fig_time_to_accuracy(rows)
    ax = fig.axes[0]
    xs = {h.get_label(): sorted(p[0] for p in h.get_offsets()) for h in ax.collections}
    assert xs["moments"] == [1.0, 2.0, 3.0]  # fit_time_s, not wall_time_s = fit + 1
    by_seed = [0.01 * 400 * (1 + s / 10) for s in (0, 1, 2)]  # elapsed_s at step 400 (seed 3: no param_error)
    assert np.allclose(xs["wgan"], sorted(by_seed))
    assert "start-up" in fig._suptitle.get_text()
    import matplotlib.pyplot as plt

    plt.close("all")


def test_figures_are_written(tmp_path):
    out = R.build_report(_fake_sweep(tmp_path), budgets=[100, 200, 400])
    for f in ("param_error_vs_steps.png", "param_error_vs_time.png", "param_error_vs_n.png", "time_to_accuracy.png",
              "distance_vs_n.png"):
        assert (out / f).stat().st_size > 5000, f
        assert f"![{f}]({f})" in (out / "report.md").read_text()


def _tabular(text: str) -> tuple[str, list[str]]:
    """(column spec, body lines) of the one tabular in a .tex file."""
    m = re.search(r"\\begin\{tabular\}\{([lrc]+)\}\n(.*?)\n\\end\{tabular\}", text, re.S)
    assert m, text
    return m[1], m[2].splitlines()


def test_latex_tables_are_booktabs(tmp_path):
    out = R.build_report(_fake_sweep(tmp_path), figures=False, budgets=[100, 200, 400])
    files = sorted(p.name for p in (out / "tables").glob("*.tex"))
    for want in ("headline_by_n.tex", "headline_by_budget.tex", "quadratic_budgets.tex", "quadratic_metrics.tex"):
        assert want in files, files
    for name in files:
        text = (out / "tables" / name).read_text()
        spec, body = _tabular(text)
        assert body[0] == "\\toprule" and body[2] == "\\midrule" and body[-1] == "\\bottomrule", name
        assert sum(ln == "\\toprule" for ln in body) == 1 and sum(ln == "\\bottomrule" for ln in body) == 1
        rows = [ln for ln in body if not ln.startswith("\\") or ln.startswith("\\textbackslash")]
        assert rows, name
        for ln in rows:
            assert ln.endswith(" \\\\"), (name, ln)
            # every row has as many cells as the column spec; no unescaped & or _ in a cell
            cells = ln[:-3].split(" & ")
            assert len(cells) == len(spec), (name, ln)
            assert not any(re.search(r"(?<!\\)[&_%#]", c) for c in cells), (name, ln)
            assert ln.count("$") % 2 == 0, (name, ln)
    metrics = (out / "tables" / "quadratic_metrics.tex").read_text()
    assert "param\\_error" in metrics and "noise floor (true vs true)" in metrics
    assert "$\\pm$" in metrics or "$\\cdot$" in metrics or "--" in metrics
    assert "tables/headline_by_n.tex" in (out / "report.md").read_text()


def test_latex_escape():
    assert R.tex_escape("jsgan_minimax 5% & #1") == r"jsgan\_minimax 5\% \& \#1"
    assert R.tex_escape("0.1 ± 1.20e-04 · 2 s ″ –") == r"0.1 $\pm$ $1.20\times10^{-4}$ $\cdot$ 2 s $''$ --"


def test_readme_headline_script_on_a_copy(tmp_path):
    sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
    try:
        import update_readme_headline as U
    finally:
        sys.path.pop(0)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{U.START}\nold table\n{U.END}\nafter\n")
    sweep = _fake_sweep(tmp_path / "sweep")
    assert U.main([str(sweep), "--readme", str(readme), "--no-figures", "--budgets", "100,400"]) == 0
    text = readme.read_text()
    assert "old table" not in text and text.startswith("# x\n\nbefore\n") and text.endswith(f"{U.END}\nafter\n")
    block = text.split(U.START)[1].split(U.END)[0]
    assert "budgets 100 / 400" in block and "| method | n = 1,000 |" in block and "| B = 100 | B = 400 |" in block
    assert f"| wgan | {R.sig3(np.median([0.6, 0.5, 0.75]))} (" in block and "| wgan | 0.600 (" in block
    readme.write_text("no markers\n")
    assert U.main([str(sweep), "--readme", str(readme), "--no-figures"]) == 2


# ---------------------------------------------------------------------------------------------
# End to end: a real tiny sweep, then the report CLI
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_report_on_a_real_tiny_sweep(tmp_path):
    sweep = tmp_path / "sw"
    env = {**os.environ, "WANDB_MODE": "disabled"}
    p = subprocess.run([sys.executable, "-m", "pfbench.train", "-m", "+model=wgan,moments", "data.latent_dim=2",
                        "data.out_dim=4", "data.n_train=200,400", "data.n_val=128", "data.n_test=64", "eval=fast",
                        "logger=none", "plots=false", "progress=false", "++model.train.steps=40",
                        "++model.train.eval_every=10", "++model.train.batch_size=32", f"hydra.sweep.dir={sweep}"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert R.main([str(sweep), "--budgets", "20,40", "--wandb", "disabled"]) == 0
    md = (sweep / "report" / "report.md").read_text()
    assert "| method | B (steps) | n = 200 | n = 400 |" in md
    table = md.split("### Selected-checkpoint param_error")[1].split("###")[0]
    cells = {tuple(ln.split(" | ")[:2]): ln.split(" | ")[2:] for ln in table.splitlines() if ln.startswith("| ")}
    for key in (("| wgan", "20"), ("| wgan", "40"), ("| moments", "–")):  # wgan at two budgets, moments once
        assert len(cells[key]) == 2 and all(c[0].isdigit() and "[" not in c for c in cells[key]), (key, cells)
    assert (sweep / "report" / "tables" / "quadratic_budgets.tex").exists()
    for f in ("param_error_vs_steps.png", "param_error_vs_time.png"):
        assert (sweep / "report" / f).stat().st_size > 5000
    # at the largest step the report's selection is the run's own, and its param_error the test-split one
    for run in R.load_runs(sweep):
        if R.is_estimator(run):
            continue
        sel = R.budget_selection(run["_evals"], run["selection.statistic"], [40])[40]
        assert (sel["step"], sel["variant"]) == (run["selection.step"], run["selection.variant"])
        assert math.isclose(sel["param_error"], run["metrics_selected.param_error"], rel_tol=1e-9)


# ---------------------------------------------------------------------------------------------
# reference methods: their own rows, last, and the verdict table counts
# ---------------------------------------------------------------------------------------------


def test_reference_rows_close_the_tables_and_verdicts_are_counted(tmp_path):
    def verdict(diff: bool, p: float) -> str:
        return (f"different from the truth at n = 64 (p = {p})" if diff else
                f"indistinguishable from the truth at n = 64 (p = {p})")

    specs = [("wgan", False, [True, True, False]), ("memorize", True, [False, False, False]),
             ("truth", False, [False, False, True])]
    for method, copying, w1_diff in specs:
        for seed, diff in enumerate(w1_diff):
            m = {"w1": 0.5, "w1_floor": 0.4, "w1_pvalue": 0.01 if diff else 0.5, "w1_verdict": verdict(diff, 0.5),
                 "copying_verdict": ("copying suspected at n = 64: ..." if copying else "no copying detected"),
                 "param_error": 0.0 if method == "truth" else None,
                 "param_error_status": "ok" if method == "truth" else "skipped: not in the true family"}
            _write_run(tmp_path, f"{method}_{seed}", {"method": method, "data": "quadratic", "n_train": 64,
                                                       "seed": seed, "status": "completed", "metrics": m,
                                                       "generator": "estimator" if method != "wgan" else "family"})
    out = R.build_report(tmp_path, figures=False)
    md = (out / "report.md").read_text()
    table = md[md.index("### Calibrated verdicts"):]
    rows = [ln for ln in table.splitlines() if ln.startswith("| ") and "n_train" not in ln]
    assert [r.split(" | ")[0] for r in rows[:3]] == ["| wgan", "| memorize (reference)", "| truth (reference)"]
    wgan, mem, truth = (r.split(" | ") for r in rows[:3])
    assert wgan[2].startswith("2/3") and mem[2].startswith("0/3") and truth[2].startswith("1/3")
    assert mem[3].startswith("3/3") and wgan[3].startswith("0/3")
    head = (out / "headline.md").read_text()
    assert "memorize (reference) | n/a" in head and "truth (reference) | 0 " in head

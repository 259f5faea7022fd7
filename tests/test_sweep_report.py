"""Multirun (joblib, submitit local), the sweep report, and one W&B run per job."""

from __future__ import annotations

import csv
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

from pfbench.report import build_report, sig3, slope
from pfbench.sweep import count_jobs


def _multirun(args: list[str], out: Path, timeout: float = 600) -> tuple[subprocess.CompletedProcess, Path]:
    env = {**os.environ, "WANDB_MODE": "offline", "PFBENCH_OUTPUT_DIR": str(out)}
    p = subprocess.run([sys.executable, "-m", "pfbench.train", "-m", *args], capture_output=True, text=True,
                       timeout=timeout, env=env)
    sweeps = sorted((out / "multirun").glob("*/*"))
    return p, (sweeps[-1] if sweeps else out)


def _statuses(sweep: Path) -> dict[str, str]:
    return {f.parent.name: json.loads(f.read_text())["status"] for f in sweep.glob("*/metrics.json")}


@pytest.mark.slow
def test_smoke_experiment_with_joblib(tmp_path):
    p, sweep = _multirun(["+experiment=smoke", "hydra/launcher=local_pool"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    st = _statuses(sweep)
    n_expected = count_jobs(["+model=" + ",".join(_smoke_models()), "data=quadratic,polynomial,relu,relu_deep"])
    assert len(st) == n_expected
    from pfbench.recovery import ESTIMATORS

    expected_skips = {f"{m}_{d}" for m in _smoke_models() for d in ("quadratic", "polynomial", "relu", "relu_deep")
                      if m in {e for e, _ in ESTIMATORS} and (m, d) not in ESTIMATORS}
    skipped = {name.split("_", 1)[1].rsplit("_s", 1)[0] for name, s in st.items() if s == "skipped"}
    assert skipped == expected_skips
    assert {s for s in st.values() if s != "skipped"} <= {"completed", "not_converged"}, st
    assert f"pfbench sweep: {n_expected}/{n_expected} jobs finished" in p.stderr
    out = build_report(sweep, figures=False)
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == n_expected


def _smoke_models() -> list[str]:
    cfg = yaml.safe_load(open(Path(__file__).parents[1] / "conf/experiment/smoke.yaml"))
    return cfg["hydra"]["sweeper"]["params"]["+model"].split(",")


@pytest.mark.slow
def test_submitit_local_executor(tmp_path):
    p, sweep = _multirun(["+experiment=smoke", "hydra/launcher=submitit_local", "+model=wgan,vae", "data=relu"],
                         tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert sorted(_statuses(sweep).values()) == ["completed", "completed"]
    assert (sweep / ".submitit").is_dir()


@pytest.mark.slow
def test_one_wandb_run_per_job(tmp_path):
    from tests.wandb_files import summary_config_history

    p, sweep = _multirun(["+experiment=smoke", "hydra/launcher=local_pool", "+model=wgan,jsgan", "data=relu",
                          "logger=wandb"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    jobs = sorted(d for d in sweep.iterdir() if (d / "metrics.json").exists())
    assert len(jobs) == 2
    ids = set()
    for job in jobs:
        files = list(job.glob("wandb/offline-run-*/run-*.wandb"))
        assert len(files) == 1, job
        ids.add(files[0].name)
        summary, config, _ = summary_config_history(files[0])
        rec = json.loads((job / "metrics.json").read_text())
        assert config["_run_group"] == sweep.name and config["_job_type"] == rec["method"]
        assert config["seed"] == rec["seed"] and summary["seed"] == rec["seed"]
        assert math.isclose(summary["metrics.sw"], rec["metrics"]["sw"], rel_tol=1e-12)
    assert len(ids) == 2  # multirun never reuses a W&B run


def _fake_run(root: Path, name: str, *, method="wgan", data="quadratic", n=1000, seed=0, status="completed",
              pe=None, w1=None, reason=None, wall=1.0, loss=None):
    d = root / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "data": {"name": data, "n_train": n},
                                                   "model": {"name": method}}))
    rec = {"method": method, "loss": loss, "generator": "family", "data": data, "n_train": n, "seed": seed,
           "status": status, "reason": reason, "steps": 7,
           "diverged_step": 7 if status == "diverged" else None,
           "metrics": {} if status != "completed" else {"param_error": pe, "w1": w1, "w1_floor": 0.5},
           "timing": {"wall_time_s": wall, "train_time_s": wall / 2}}
    (d / "metrics.json").write_text(json.dumps(rec))


def test_report_on_synthetic_sweep_with_failures(tmp_path):
    pes = {1000: [0.2, 0.3, 0.25], 10000: [0.07, 0.09, 0.08], 100000: [0.025, 0.03, 0.027]}
    for n, vals in pes.items():
        for s, v in enumerate(vals):
            _fake_run(tmp_path, f"m{n}_{s}", method="moments", n=n, seed=s, pe=v, w1=1 + v)
    _fake_run(tmp_path, "gan_ok", method="jsgan", loss="minimax", n=1000, pe=0.9, w1=3.0)
    _fake_run(tmp_path, "gan_div", method="jsgan", loss="minimax", n=1000, status="diverged",
              reason="non-finite loss_g at step 7")
    _fake_run(tmp_path, "sos_fail", method="sos", n=1000, status="failed", reason="SolverError: SCS failed")
    out = build_report(tmp_path)
    md = (out / "report.md").read_text()
    assert "12 runs: completed 10, diverged 1, failed 1" in md
    # mean and 95% t half-width over the three seeds at n = 1000
    v = np.array(pes[1000])
    half = stats.t.ppf(0.975, 2) * v.std(ddof=1) / math.sqrt(3)
    assert f"| moments | 1,000 | 3/3 | {sig3(v.mean())} ± {sig3(half)} |" in md
    assert "| moments | 1,000 | 3/3 | 0.250 ± 0.124 |" in md  # 3 significant digits
    assert "| jsgan-minimax | 1,000 | 1/2 | 0.900 |" in md  # completed of all runs in the cell
    # the budget table counts the failed SoS run (k/N) and says why it is left out
    assert "| sos | – | – [0/1] |" in md and "- sos, n = 1,000: **failed**: 1 run (`sos_fail`)" in md
    assert "| gan_div | jsgan-minimax | quadratic | diverged | 7 | non-finite loss_g at step 7 |" in md
    assert "| sos_fail | sos | quadratic | failed | 7 | SolverError: SCS failed |" in md
    head = (out / "headline.md").read_text()
    cells = []
    for vals in pes.values():  # median (mean ± half-width) and the estimator's fit time (train_time_s here,
        a = np.array(vals)  # 0.5 s; its wall time, 1 s, includes the start-up and is never shown)
        h = stats.t.ppf(0.975, 2) * a.std(ddof=1) / math.sqrt(3)
        cells.append(f"{sig3(np.median(a))} ({sig3(a.mean())} ± {sig3(h)}) · 0.500 s")
    assert "| moments | " + " | ".join(cells) + " |" in head
    assert "| jsgan-minimax | – [0/2] |" in head  # no periodic evaluations, one diverged
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 12 and {r["status"] for r in rows} == {"completed", "diverged", "failed"}
    assert (out / "param_error_vs_n.png").stat().st_size > 5000
    # the slope of the medians: log(0.027/0.25)/log(100) = -0.483
    assert abs(slope([1e3, 1e4, 1e5], [0.25, 0.08, 0.027]) - math.log(0.027 / 0.25) / math.log(100)) < 0.02
    # re-running as more runs finish picks them up
    _fake_run(tmp_path, "late", method="moments", n=1000, seed=9, pe=0.26, w1=1.2)
    assert "13 runs" in (build_report(tmp_path, figures=False) / "report.md").read_text()


def test_count_jobs_lets_command_line_replace_sweeper_params():
    assert count_jobs(["+model=a,b,c", "data=x,y", "seed=range(0,5)", "+model=a,b"]) == 20
    assert count_jobs(["seed=1"]) == 1


def test_rerunning_the_report_reuses_its_wandb_run(tmp_path):
    from pfbench.report import main as report_main

    _fake_run(tmp_path, "0_wgan", pe=0.3, w1=1.0)
    _fake_run(tmp_path, "1_wgan", pe=0.2, w1=0.8, seed=1)
    for _ in range(2):
        assert report_main([str(tmp_path), "--wandb", "offline", "--no-figures"]) == 0
    runs = sorted((tmp_path / "report" / "wandb").glob("offline-run-*"))
    # directory names are offline-run-<time>-<run id>[-k] (W&B adds -k when two share a second)
    ids = {m.group(0) for r in runs for m in [re.search(r"report-[0-9a-f]{12}", r.name)] if m}
    assert len(runs) == 2 and len(ids) == 1  # two offline records of one W&B run, synced into one

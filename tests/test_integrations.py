"""Integrations under faults: W&B without network, resumed W&B runs, sweep progress from any output
directory, SLURM without GPUs or without srun."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.runner import TINY, compose_cfg, run_inprocess

WANDB = ["+model=wgan", *[o for o in TINY if not o.startswith("logger")], "logger=wandb", "logger.mode=auto"]
FAKE_KEY = "0" * 40


def _warnings(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("pfbench: warning:")]


def _offline_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


def test_wandb_without_dns_logs_offline_at_once(tmp_path, monkeypatch, capsys):
    # a compute node: an API key, but the W&B host does not resolve
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", "http://pfbench-no-such-host.invalid")
    rec = run_inprocess(WANDB, tmp_path)
    assert rec["status"] == "completed"
    warn = _warnings(capsys.readouterr().err)
    assert warn == [f"pfbench: warning: W&B host pfbench-no-such-host.invalid does not resolve (no network?); "
                    f"logging offline to {tmp_path / 'wandb'} (upload later with wandb sync)"]
    assert len(_offline_runs(tmp_path)) == 1


def test_wandb_unreachable_service_falls_back_offline(tmp_path, monkeypatch, capsys):
    # the host resolves but nothing answers: wandb.init gives up after logger.init_timeout, the run goes on
    import pfbench.tracking

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # discard port: connection refused
    monkeypatch.setattr(pfbench.tracking, "host_resolves", lambda url, timeout=3.0: True)
    rec = run_inprocess([*WANDB, "logger.init_timeout=2"], tmp_path)
    assert rec["status"] == "completed"
    warn = _warnings(capsys.readouterr().err)
    assert len(warn) == 1 and warn[0].startswith("pfbench: warning: W&B did not start online (")
    assert warn[0].endswith(f"logging offline to {tmp_path / 'wandb'} (upload later with wandb sync)")
    assert len(_offline_runs(tmp_path)) == 1


def test_resumed_run_continues_its_wandb_run(tmp_path):
    ov = [*WANDB, "logger.mode=offline"]
    run_inprocess(ov, tmp_path)
    run_id = (tmp_path / "wandb/pfbench-run-id").read_text().strip()
    rec = run_inprocess([*ov, "model.train.steps=5", "resume=true"], tmp_path)
    assert rec["resumed_from"] == 3 and rec["steps"] == 5
    runs = _offline_runs(tmp_path)
    assert len(runs) == 2 and all(p.name.split("-")[-1] == run_id or p.name.split("-")[-2] == run_id
                                  for p in runs), runs
    run_inprocess([*ov, "overwrite=true"], tmp_path)  # a new run is a new W&B run
    assert (tmp_path / "wandb/pfbench-run-id").read_text().strip() != run_id
    assert len(_offline_runs(tmp_path)) == 1


def _multirun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PFBENCH_OUTPUT_DIR"}
    env.update(WANDB_MODE="offline", MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", "pfbench.train", "-m", *args], capture_output=True, text=True,
                          timeout=600, env=env, cwd=cwd)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["default_relative", "absolute"])
def test_sweep_progress_counts_jobs_from_any_output_directory(where, tmp_path):
    args = ["+model=wgan", *TINY, "seed=0,1"]
    if where == "absolute":
        args.append(f"hydra.sweep.dir={tmp_path / 'abs'}")
    p = _multirun(args, tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("pfbench sweep:")]
    sweep = tmp_path / "abs" if where == "absolute" else next((tmp_path / "multirun").glob("*/*"))
    assert lines == [f"pfbench sweep: 2 jobs -> {sweep}",
                     "pfbench sweep: 1/2 jobs finished (completed 1)",
                     "pfbench sweep: 2/2 jobs finished (completed 2)",
                     f"pfbench sweep: report with  python -m pfbench.report {sweep}"]


def test_sweep_progress_callback_inside_a_job_directory(tmp_path, monkeypatch, capsys):
    # on_job_end runs inside the job's directory (hydra.job.chdir): a relative sweep dir must not move
    import json

    from hydra.types import RunMode
    from omegaconf import read_write

    from pfbench.sweep import STATE, SweepProgress

    monkeypatch.chdir(tmp_path)
    cfg = compose_cfg(["+model=wgan", "hydra.sweep.dir=rel/sweep"])
    sweep = tmp_path / "rel/sweep"
    (sweep / "0_job").mkdir(parents=True)
    (sweep / STATE).write_text(json.dumps({"total": 1}))
    (sweep / "0_job/metrics.json").write_text(json.dumps({"status": "completed"}))
    with read_write(cfg.hydra):
        cfg.hydra.mode = RunMode.MULTIRUN
    cb = SweepProgress()
    monkeypatch.chdir(sweep / "0_job")  # where Hydra calls on_job_end
    cb.on_job_end(cfg, None)
    cb.on_multirun_end(cfg)  # the same line again would be a duplicate: only the report hint follows
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln]
    assert err == ["pfbench sweep: 1/1 jobs finished (completed 1)",
                   f"pfbench sweep: report with  python -m pfbench.report {sweep}"]


def _fake_srun(tmp_path, monkeypatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.parametrize("gpus,line", [(None, None), (1, "#SBATCH --gpus-per-node=1")])
def test_slurm_sbatch_asks_for_gpus_only_when_told(gpus, line, tmp_path, monkeypatch):
    import submitit
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
    from omegaconf import OmegaConf

    _fake_srun(tmp_path, monkeypatch)
    ov = ["+model=wgan", "hydra/launcher=slurm", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    cfg = compose_cfg(ov + ([] if gpus is None else [f"hydra.launcher.gpus_per_node={gpus}"]))
    params = {k: v for k, v in OmegaConf.to_container(cfg.hydra.launcher, resolve=True).items() if k != "_target_"}
    launcher = SlurmLauncher(**params)
    launcher.config = cfg
    seen = {}

    def map_array(self, fn, *args):
        seen["sbatch"] = self._executor._make_submission_file_text("python -m job", "0")
        return []

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", map_array)
    assert launcher.launch([["seed=0"]], 0) == []
    text = seen["sbatch"]
    assert "#SBATCH --cpus-per-task=1" in text
    if line is None:
        assert "gpus" not in text, text
    else:
        assert line in text


def test_slurm_without_srun_is_one_line(tmp_path, monkeypatch, capsys):
    from pfbench.train import cli

    monkeypatch.setenv("PATH", str(tmp_path))  # no srun here
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    monkeypatch.setattr(sys, "argv", ["pfbench.train", "-m", "+model=wgan", *TINY, "hydra/launcher=slurm",
                                      f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    with pytest.raises(SystemExit) as e:
        cli()
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert e.value.code == 2 and err == [
        "pfbench: error: hydra/launcher=slurm needs SLURM's srun on PATH (not found here); run the sweep on a SLURM "
        "login node, or use hydra/launcher=local_pool (or submitit_local) on this machine"]
    assert not (tmp_path / "sweep").exists()

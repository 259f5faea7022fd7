"""Run directories: no silent overwrite, nothing written by a refused run, a lock, stale temporaries,
file modes from the umask, identical history after resume, and advice that works."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch

import pfbench.training
from pfbench import ConfigError
from pfbench.io import write_json
from pfbench.rundir import LOCK_NAME, RunDirError, RunLock
from tests.runner import TINY, metrics, run_cli, run_inprocess

IGNORED = {LOCK_NAME, "train.log"}  # the lock, and Hydra's (empty) job log opened before the task
EST = ["+model=moments", *[o for o in TINY if not o.startswith("model.")], "data.n_train=500",
       "model.params.restarts=1"]  # estimators have no model.train


def snapshot(run_dir) -> dict[str, tuple[bytes, int]]:
    """Every file under run_dir (bar the lock and Hydra's job log) with its bytes and mtime."""
    out = {}
    for p in sorted(run_dir.rglob("*")):
        if p.is_file() and p.name not in IGNORED:
            out[str(p.relative_to(run_dir))] = (p.read_bytes(), p.stat().st_mtime_ns)
    return out


def one_error_line(p) -> str:
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("pfbench: error: "), p.stderr[-3000:]
    assert p.returncode == 2
    return lines[0]


def test_completed_run_is_not_replaced_by_another_method(tmp_path):
    run_inprocess(["+model=wgan", *TINY], tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(RunDirError, match=r"already holds a run \(metrics.json, config.yaml, checkpoint.pt"):
        run_inprocess(EST, tmp_path)
    assert snapshot(tmp_path) == before
    p = run_cli(EST, tmp_path)
    line = one_error_line(p)
    assert line.startswith(f"pfbench: error: run directory {tmp_path} already holds a run (")
    assert line.endswith("set resume=true to continue it, overwrite=true to replace it, or choose a new "
                         "hydra.run.dir")
    assert snapshot(tmp_path) == before

    # overwrite=true replaces the run: nothing of wgan's is left beside moments' results
    (tmp_path / "notes.txt").write_text("mine")
    rec = run_inprocess([*EST, "overwrite=true"], tmp_path)
    assert rec["status"] == "completed" and metrics(tmp_path)["method"] == "moments"
    for gone in ("checkpoint.pt", "history.json", "curves.png", "samples.png"):
        assert not (tmp_path / gone).exists(), gone
    assert "name: moments" in (tmp_path / "config.yaml").read_text()
    assert (tmp_path / "notes.txt").read_text() == "mine"  # not a result file: left alone


def test_refused_resume_writes_nothing(tmp_path):
    # a learned generator: the checkpoint's fingerprint refuses seed=1 (CLI: Hydra's .hydra/ included)
    p = run_cli(["+model=wgan", *TINY], tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    before = snapshot(tmp_path)
    assert ".hydra/config.yaml" in before and ".hydra/overrides.yaml" in before
    p = run_cli(["+model=wgan", *TINY, "seed=1", "resume=true"], tmp_path)
    assert one_error_line(p) == (
        f"pfbench: error: {tmp_path / 'checkpoint.pt'} was written by a different configuration (seed: 0 -> 1); "
        f"resume with the original overrides, set overwrite=true to replace that run, or choose a new hydra.run.dir")
    assert snapshot(tmp_path) == before
    # an estimator keeps no checkpoint: its config.yaml says which configuration made the run
    est = tmp_path / "est"
    run_inprocess(EST, est)
    before = snapshot(est)
    with pytest.raises(RunDirError, match=r"config.yaml was written by a different configuration \(seed: 0 -> 1\)"):
        run_inprocess([*EST, "seed=1", "resume=true"], est)
    assert snapshot(est) == before
    # the same configuration: resume=true recomputes the estimator run (nothing to continue)
    assert run_inprocess([*EST, "resume=true"], est)["status"] == "completed"


def test_second_run_into_a_locked_directory_is_refused(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunDirError, match=rf"run directory {tmp_path} is in use by another pfbench run "
                                              rf"\(pid {os.getpid()}\); wait for it to end"):
            run_inprocess(["+model=wgan", *TINY], tmp_path)
        p = run_cli(["+model=wgan", *TINY], tmp_path)
        assert one_error_line(p) == (f"pfbench: error: run directory {tmp_path} is in use by another pfbench run "
                                     f"(pid {os.getpid()}); wait for it to end, or choose another hydra.run.dir")
        assert snapshot(tmp_path) == {}
    assert run_inprocess(["+model=wgan", *TINY], tmp_path)["status"] == "completed"  # released with the holder


def test_stale_temporaries_are_removed_at_start(tmp_path):
    stale = [".checkpoint.pt.0a1b2c3d.tmp", ".metrics.json.deadbeef.tmp", ".pfbench-write-testk2j3h4"]
    mine = [".notes.0a1b2c3d.tmp", "data.tmp", ".checkpoint.pt.tmp"]
    for name in stale + mine:
        (tmp_path / name).write_bytes(b"")
    assert run_inprocess(["+model=wgan", *TINY], tmp_path)["status"] == "completed"
    names = {p.name for p in tmp_path.iterdir()}
    assert not names & set(stale) and set(mine) <= names
    # the usual case: a run killed while writing a checkpoint, then resumed
    (tmp_path / ".checkpoint.pt.00ff00ff.tmp").write_bytes(b"")
    assert run_inprocess(["+model=wgan", *TINY, "resume=true"], tmp_path)["status"] == "completed"
    assert not (tmp_path / ".checkpoint.pt.00ff00ff.tmp").exists()


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_result_files_honor_the_umask(umask, mode, tmp_path):
    old = os.umask(umask)
    try:
        write_json(tmp_path / "x.json", {"a": 1})
        assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == mode
        if umask == 0o002:
            run_inprocess(["+model=wgan", *TINY], tmp_path / "run")
            for name in ("metrics.json", "config.yaml", "checkpoint.pt", "generator.pt", "history.json",
                         ".hydra/config.yaml", LOCK_NAME):
                assert stat.S_IMODE((tmp_path / "run" / name).stat().st_mode) == mode, name
    finally:
        os.umask(old)


class Interrupted(BaseException):
    """Stands for a kill right after a checkpoint (not an Exception: a run does not record it)."""


def _interrupt_after_checkpoint(monkeypatch, at_step: int) -> None:
    real = pfbench.training.save_checkpoint

    def save(path, state):
        real(path, state)
        if state["step"] == at_step:
            raise Interrupted

    monkeypatch.setattr(pfbench.training, "save_checkpoint", save)


def test_history_identical_after_resume_between_log_steps(tmp_path, monkeypatch):
    # checkpoint_every=2 is not a multiple of log_every=3: the checkpoint at step 4 falls between records
    ov = ["+model=wgan", *TINY, "model.train.steps=7", "model.train.log_every=3", "model.train.checkpoint_every=2",
          "data.n_val=64", "model.train.eval_every=2", "model.train.ema=0.9"]
    run_inprocess(ov, tmp_path / "full")
    with monkeypatch.context() as m:
        _interrupt_after_checkpoint(m, 4)
        with pytest.raises(Interrupted):
            run_inprocess(ov, tmp_path / "part")
    assert torch.load(tmp_path / "part/checkpoint.pt", weights_only=True)["step"] == 4
    rec = run_inprocess([*ov, "resume=true"], tmp_path / "part")
    assert rec["resumed_from"] == 4 and rec["steps"] == 7
    full, part = (json.loads((tmp_path / d / "history.json").read_text()) for d in ("full", "part"))
    assert [h["step"] for h in full["train"]] == [3, 6, 7]
    assert part["train"] == full["train"]
    drop = lambda evals: [{k: v for k, v in e.items() if k != "elapsed_s"} for e in evals]  # noqa: E731
    assert drop(part["eval"]) == drop(full["eval"]) and len(full["eval"]) == 4
    a, b = (torch.load(tmp_path / d / "generator.pt", weights_only=True)["state_dict"] for d in ("full", "part"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_unreadable_checkpoint_advice_works(tmp_path):
    run_inprocess(["+model=wgan", *TINY], tmp_path)
    ck = tmp_path / "checkpoint.pt"
    ck.write_bytes(ck.read_bytes()[:100])
    with pytest.raises(ConfigError, match=r"is unreadable .*; delete it, or set overwrite=true to start the run over"):
        run_inprocess(["+model=wgan", *TINY, "resume=true"], tmp_path)
    rec = run_inprocess(["+model=wgan", *TINY, "overwrite=true"], tmp_path)  # the advice
    assert rec["status"] == "completed" and rec["resumed_from"] is None


def test_requeued_slurm_job_and_resume_auto_continue_a_matching_run(tmp_path, monkeypatch):
    ov = ["+model=wgan", *TINY, "model.train.steps=6", "model.train.checkpoint_every=2"]
    with monkeypatch.context() as m:
        _interrupt_after_checkpoint(m, 4)
        with pytest.raises(Interrupted):
            run_inprocess(ov, tmp_path / "a")
    # a job requeued after preemption runs the same command again, resume=false
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    rec = run_inprocess(ov, tmp_path / "a")
    assert rec["status"] == "completed" and rec["resumed_from"] == 4
    monkeypatch.delenv("SLURM_RESTART_COUNT")
    # resume=auto: a fresh directory starts fresh, a matching run continues, another configuration is refused
    assert run_inprocess([*ov, "resume=auto"], tmp_path / "b")["resumed_from"] is None
    assert run_inprocess([*ov, "resume=auto"], tmp_path / "b")["resumed_from"] == 6
    with pytest.raises(RunDirError, match=r"different configuration \(seed: 0 -> 2\)"):
        run_inprocess([*ov, "resume=auto", "seed=2"], tmp_path / "b")


def test_resume_and_overwrite_together_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="resume=true and overwrite=true contradict each other"):
        run_inprocess(["+model=wgan", *TINY, "resume=true", "overwrite=true"], tmp_path)
    assert snapshot(tmp_path) == {}


def test_hydras_own_record_is_not_a_previous_run(tmp_path):
    # with hydra.output_subdir=.hydra set by the user, Hydra writes .hydra/ before the run starts
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra/config.yaml").write_text("seed: 0\n")
    rec = run_inprocess(["+model=wgan", *TINY, "hydra.output_subdir=.hydra"], tmp_path)
    assert rec["status"] == "completed"
    assert (tmp_path / ".hydra/config.yaml").read_text() == "seed: 0\n"  # Hydra's file: not rewritten by pfbench

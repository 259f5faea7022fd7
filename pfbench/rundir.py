"""One run directory, one run: a lock, no silent overwrite, resume only into a matching run.

A run directory holds one run's results (:data:`RESULTS`). Starting a run where results already
exist is refused unless the user says what to do with them:

- ``resume=true`` continues the run whose checkpoint (or, without one, whose ``config.yaml``) has
  the same fingerprint (data, model bar the step budget, seed, threads); anything else is refused;
- ``resume=auto`` does the same when there is something to continue and starts fresh otherwise
  (a SLURM job requeued after preemption, ``SLURM_RESTART_COUNT`` > 0, runs as ``resume=auto``);
- ``overwrite=true`` clears the run's own result files (and nothing else) once every check passed.

:class:`RunLock` holds an exclusive ``flock`` on ``<run dir>/.pfbench.lock`` for the whole run, so a
second run started into the same directory is refused instead of racing the first.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from pfbench import ConfigError
from pfbench.io import TEMP_PATTERN, load_checkpoint

LOCK_NAME = ".pfbench.lock"
#: a run's own result files, as written by ``pfbench.train`` (and ``pfbench.runs``: downstream.json)
RESULT_FILES = ("metrics.json", "config.yaml", "checkpoint.pt", "generator.pt", "generator_selected.pt",
                "history.json", "samples.png", "curves.png", "error.log", "downstream.json")
#: directories that belong to the run: pfbench's copy of Hydra's record, W&B's files (and the run id)
RESULT_DIRS = (".hydra", "wandb")
RESULTS = RESULT_FILES + RESULT_DIRS
#: W&B run id of this run directory (reused when the run is resumed)
WANDB_ID_FILE = "wandb/pfbench-run-id"


class RunDirError(ConfigError):
    """A refusal about the run directory itself (in use, or holding another run): nothing may be written there."""


class RunLock:
    """Exclusive lock on a run directory (``flock`` on ``.pfbench.lock``, released when the process ends)."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.close(fd)
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise RunDirError(f"run directory {self.run_dir} is in use by another pfbench run{who}; wait for it "
                              f"to end, or choose another hydra.run.dir") from None
        except OSError as e:  # a filesystem without locks: go on unlocked, say so once
            print(f"pfbench: warning: cannot lock {self.path} ({e.strerror}); concurrent runs into "
                  f"{self.run_dir} are not detected", file=sys.stderr)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the only descriptor releases the flock
            self.fd = None


def remove_stale_temps(run_dir: str | Path) -> list[str]:
    """Delete temporaries a killed writer left (``.<result>.<hex>.tmp``, ``.pfbench-write-test*``).

    Only names of pfbench's own pattern are touched; call it while holding :class:`RunLock`.
    """
    removed = []
    for p in Path(run_dir).iterdir():
        m = TEMP_PATTERN.match(p.name)
        ours = (m is not None and m.group("target") in RESULT_FILES + ("pfbench-run-id",)) or \
            p.name.startswith(".pfbench-write-test")
        if ours and p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p.name)
    wandb_dir = Path(run_dir) / "wandb"
    if wandb_dir.is_dir():
        for p in wandb_dir.glob(".pfbench-run-id.*.tmp"):
            p.unlink(missing_ok=True)
            removed.append(f"wandb/{p.name}")
    return removed


def existing_results(run_dir: str | Path, ignore: tuple[str, ...] = ()) -> list[str]:
    """The result files and directories present in ``run_dir`` (empty for a fresh directory).

    ``ignore``: names not to count, e.g. ``.hydra`` when Hydra itself wrote it for this very run
    (a user's ``hydra.output_subdir=.hydra``).
    """
    run_dir = Path(run_dir)
    return [name for name in RESULTS if name not in ignore and (run_dir / name).exists()]


def clear_results(run_dir: str | Path) -> None:
    """Delete the run's own results (``overwrite=true``); files of other names are left alone."""
    run_dir = Path(run_dir)
    for name in RESULT_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for name in RESULT_DIRS:
        if (run_dir / name).is_dir():
            shutil.rmtree(run_dir / name)


def effective_resume(resume: Any) -> bool | str:
    """``resume`` as configured, except that a requeued SLURM job resumes whatever matches (auto)."""
    try:
        restarted = int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0
    except ValueError:
        restarted = False
    return "auto" if restarted and resume is not True else resume


def plan(run_dir: Path, resume: bool | str, overwrite: bool, ignore: tuple[str, ...] = ()) -> str:
    """``fresh``, ``resume`` (to be verified with :func:`verify_resume`) or ``overwrite``; or refuse."""
    found = existing_results(run_dir, ignore)
    if not found:
        return "fresh"
    if resume in (True, "auto"):
        return "resume"
    if overwrite:
        return "overwrite"
    raise RunDirError(f"run directory {run_dir} already holds a run ({', '.join(found)}); set resume=true to "
                      f"continue it, overwrite=true to replace it, or choose a new hydra.run.dir")


def fingerprint_fields(cfg: Any) -> dict:
    """What a run must agree on to be resumed: data, model (bar the step budget), seed and threads."""
    c = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    model = dict(c.get("model") or {})
    if isinstance(model.get("train"), dict):
        model["train"] = {k: v for k, v in model["train"].items() if k != "steps"}
    return {"data": c.get("data"), "model": model, "seed": c.get("seed"), "threads": c.get("threads")}


def fingerprint(cfg: Any) -> str:
    """A short hash of :func:`fingerprint_fields`, stored in every checkpoint."""
    return hashlib.sha256(json.dumps(fingerprint_fields(cfg), sort_keys=True).encode()).hexdigest()[:16]


def config_difference(old: Any, new: Any, limit: int = 3) -> str:
    """'seed: 0 -> 1, data.n_train: 100 -> 200' for the keys a fingerprint covers."""
    from pfbench.tracking import flatten  # tracking imports this module (the W&B run-id file)

    a, b = flatten(fingerprint_fields(old)), flatten(fingerprint_fields(new))
    diff = [f"{k}: {a.get(k)} -> {b.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    more = f" and {len(diff) - limit} more" if len(diff) > limit else ""
    return ", ".join(diff[:limit]) + more


def verify_resume(run_dir: Path, cfg: Any) -> dict | None:
    """Check that the run in ``run_dir`` was made by this configuration; return its checkpoint state.

    Returns the loaded checkpoint (a learned generator's training state) or None when there is no
    checkpoint but ``config.yaml`` matches (an estimator, or a run killed before its first checkpoint:
    it starts over). Raises :class:`RunDirError` for a different configuration, ConfigError for an
    unreadable checkpoint; nothing is written here.
    """
    ck, saved = run_dir / "checkpoint.pt", run_dir / "config.yaml"
    state = load_checkpoint(ck) if ck.is_file() else None
    if state is not None and not isinstance(state, dict):
        raise RunDirError(f"{ck} is not a pfbench checkpoint; delete it, or set overwrite=true to start the run over")
    old_cfg, old_fp = None, None
    if saved.is_file():
        try:
            old_cfg = OmegaConf.load(saved)
            old_fp = fingerprint(old_cfg)
        except Exception as e:
            if state is None:
                raise RunDirError(f"{saved} is unreadable ({type(e).__name__}); set overwrite=true to replace that "
                                  f"run, or choose a new hydra.run.dir") from None
            old_cfg = None
    theirs = state.get("fingerprint") if state is not None else old_fp
    if theirs is None:
        raise RunDirError(f"run directory {run_dir} holds results but no checkpoint.pt or config.yaml telling which "
                          f"configuration made them; set overwrite=true to replace them, or choose a new hydra.run.dir")
    if theirs != fingerprint(cfg):
        what = ck if state is not None else saved
        diff = f" ({config_difference(old_cfg, cfg)})" if old_cfg is not None else ""
        raise RunDirError(f"{what} was written by a different configuration{diff}; resume with the original "
                          f"overrides, set overwrite=true to replace that run, or choose a new hydra.run.dir")
    return state

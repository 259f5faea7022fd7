"""Hydra callback that makes long sweeps visible: jobs finished / total, and failures.

Registered in conf/config.yaml under ``hydra.callbacks``. The count is read from the sweep
directory (each job writes ``metrics.json`` with its status), so it is right whatever launcher
runs the jobs (local, joblib workers, submitit processes) and costs one directory scan a job.
A relative ``hydra.sweep.dir`` is taken from the directory the sweep was started in (a job's
callback runs inside the job's own directory, ``hydra.job.chdir``).

Before any job starts, a SLURM launcher without SLURM's ``srun`` on PATH and an unwritable sweep
directory are refused with one ``pfbench: error:`` line and exit code 2. (Hydra turns an exception
in a callback into a warning and goes on, so the callback exits itself.)
"""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from pfbench import ConfigError

STATE = ".pfbench_sweep.json"


def count_jobs(overrides: list[str]) -> int | None:
    """Number of jobs a basic-sweeper multirun launches for these overrides (None if unknown)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    total = 1
    try:
        by_key = {}  # a command-line override replaces the sweeper's param of the same key
        for o in OverridesParser.create().parse_overrides(overrides):
            by_key[o.key_or_group] = o
        for o in by_key.values():
            if o.is_sweep_override():
                total *= len(list(o.sweep_iterator()))
    except Exception:
        return None
    return total


def sweep_status(sweep_dir: Path) -> Counter:
    """Counter of job statuses from the ``metrics.json`` files directly under ``sweep_dir``."""
    c: Counter = Counter()
    for f in Path(sweep_dir).glob("*/metrics.json"):
        try:
            c[json.loads(f.read_text()).get("status", "unknown")] += 1
        except (OSError, json.JSONDecodeError):
            c["unreadable"] += 1
    return c


def progress_line(sweep_dir: Path) -> str:
    c = sweep_status(sweep_dir)
    try:
        total = json.loads((Path(sweep_dir) / STATE).read_text()).get("total")
    except (OSError, json.JSONDecodeError):
        total = None
    done = sum(c.values())
    parts = ", ".join(f"{k} {v}" for k, v in sorted(c.items()))
    return f"pfbench sweep: {done}/{total if total else '?'} jobs finished ({parts})"


def sweep_dir_of(config: DictConfig) -> Path:
    """The sweep directory as an absolute path: a relative one is relative to where the sweep started."""
    d = Path(str(config.hydra.sweep.dir))
    if d.is_absolute():
        return d
    cwd = config.hydra.runtime.get("cwd") if "runtime" in config.hydra else None
    return Path(str(cwd)) / d if cwd else d.resolve()


def check_launcher(config: DictConfig) -> None:
    """Refuse a launcher that cannot start here (SLURM without srun) before anything is submitted."""
    target = str(config.hydra.launcher.get("_target_", ""))
    if "submitit" in target.lower() and "slurm" in target.lower() and shutil.which("srun") is None:
        raise ConfigError("hydra/launcher=slurm needs SLURM's srun on PATH (not found here); run the sweep on a "
                          "SLURM login node, or use hydra/launcher=local_pool (or submitit_local) on this machine")


class SweepProgress(Callback):
    def __init__(self) -> None:
        self._last: str | None = None  # the last progress line this process printed

    def _print(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)
        self._last = line

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self._start(config)
        except ConfigError as e:
            print(f"pfbench: error: {e}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None

    def _start(self, config: DictConfig) -> None:
        check_launcher(config)
        params = config.hydra.sweeper.get("params") or {}
        overrides = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
        sweep_dir = sweep_dir_of(config)
        try:
            sweep_dir.mkdir(parents=True, exist_ok=True)
            n_trials = config.hydra.sweeper.get("n_trials")  # Optuna sweeper (hparams_search=...): one job a trial
            total = int(n_trials) if n_trials is not None else count_jobs(overrides)
            (sweep_dir / STATE).write_text(json.dumps({"total": total}))
        except OSError as e:
            raise ConfigError(f"cannot write the sweep directory {e.filename or sweep_dir} ({e.strerror}); choose a "
                              f"writable one with hydra.sweep.dir=... or set PFBENCH_OUTPUT_DIR") from None
        self._print(f"pfbench sweep: {total if total else '?'} jobs -> {sweep_dir}")

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if config.hydra.mode is not None and str(config.hydra.mode).endswith("MULTIRUN"):
            self._print(progress_line(sweep_dir_of(config)))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = sweep_dir_of(config)
        line = progress_line(sweep_dir)
        if line != self._last:  # the last job's own line (same process, local launcher) already says it
            self._print(line)
        print(f"pfbench sweep: report with  python -m pfbench.report {sweep_dir}", file=sys.stderr)

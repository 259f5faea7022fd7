"""Hydra callback that makes long sweeps visible: jobs finished / total, and failures.

Registered in conf/config.yaml under ``hydra.callbacks``. The count is read from the sweep
directory (each job writes ``metrics.json`` with its status), so it is right whatever launcher
runs the jobs (local, joblib workers, submitit processes) and costs one directory scan a job.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

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


class SweepProgress(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        params = config.hydra.sweeper.get("params") or {}
        overrides = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        n_trials = config.hydra.sweeper.get("n_trials")  # Optuna sweeper (hparams_search=...): one job a trial
        total = int(n_trials) if n_trials is not None else count_jobs(overrides)
        (sweep_dir / STATE).write_text(json.dumps({"total": total}))
        print(f"pfbench sweep: {total if total else '?'} jobs -> {sweep_dir}", file=sys.stderr, flush=True)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if config.hydra.mode is not None and str(config.hydra.mode).endswith("MULTIRUN"):
            print(progress_line(Path(config.hydra.sweep.dir)), file=sys.stderr, flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        print(progress_line(sweep_dir), file=sys.stderr)
        print(f"pfbench sweep: report with  python -m pfbench.report {sweep_dir}", file=sys.stderr)

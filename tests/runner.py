"""Run pfbench in-process (compose + run) or as a CLI subprocess, for tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

from pfbench import CONF_DIR

TINY = ["data.n_train=64", "data.n_test=64", "eval=fast", "logger=none", "plots=false", "progress=false",
        "model.train.steps=3", "model.train.batch_size=16", "model.train.log_every=1"]


def compose_cfg(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def run_inprocess(overrides: list[str], run_dir: Path) -> dict:
    from pfbench.train import run

    run_dir.mkdir(parents=True, exist_ok=True)
    return run(compose_cfg(overrides), run_dir)


def run_cli(overrides: list[str], run_dir: Path, timeout: float = 300, **popen) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "MPLBACKEND": "Agg"}
    cmd = [sys.executable, "-m", "pfbench.train", *overrides, f"hydra.run.dir={run_dir}"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, **popen)


def metrics(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "metrics.json").read_text())

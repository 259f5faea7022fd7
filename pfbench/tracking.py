"""W&B logging that never prompts and never waits for the network unless the user configured it.

``mode: auto`` resolves to ``online`` only when W&B credentials exist (WANDB_API_KEY, or a netrc
entry for api.wandb.ai) and WANDB_MODE does not say otherwise; everything else logs offline to
``<run dir>/wandb/offline-run-*`` (``wandb sync`` uploads it later). ``logger=none`` disables it.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf


def resolve_mode(mode: str) -> str:
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE")
    if env:
        return {"dryrun": "offline", "run": "online"}.get(env, env)
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        if netrc.netrc().authenticators("api.wandb.ai"):
            return "online"
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        pass
    return "offline"


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}: a flat config the W&B UI can filter and group by."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


class Tracker:
    """Thin wrapper over one W&B run (or nothing when disabled)."""

    def __init__(self, cfg: Any, run_dir: Path, *, name: str, group: str | None, job_type: str):
        self.run = None
        self.mode = resolve_mode(cfg.logger.mode) if cfg.logger.name != "none" else "disabled"
        if self.mode == "disabled":
            return
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb  # imported lazily: it is slow to import and unused with logger=none

        container = OmegaConf.to_container(cfg, resolve=True)
        self.run = wandb.init(
            project=cfg.logger.project, entity=cfg.logger.entity, group=cfg.logger.group or group,
            job_type=job_type, name=name, tags=list(cfg.logger.tags), dir=str(run_dir),
            config=flatten(container), mode=self.mode, reinit="finish_previous",
            settings=wandb.Settings(console="off", silent=True, x_disable_stats=True),
        )

    def log(self, step: int, values: dict[str, float]) -> None:
        if self.run is not None:
            self.run.log({f"train/{k}": v for k, v in values.items() if k != "step"}, step=step)

    def log_eval(self, step: int, values: dict[str, float]) -> None:
        """Periodic evaluations: ``val/*`` selection statistics and the parameter error for the record."""
        if self.run is not None:
            self.run.log({f"val/{k}": v for k, v in values.items() if k != "step"}, step=step)

    def log_images(self, paths: dict[str, Path]) -> None:
        if self.run is not None:
            import wandb

            self.run.log({f"plots/{k}": wandb.Image(str(p)) for k, p in paths.items() if Path(p).exists()})

    def finish(self, summary: dict[str, Any], exit_code: int = 0) -> None:
        if self.run is None:
            return
        for k, v in flatten(summary).items():
            if isinstance(v, (int, float, str, bool)) or v is None:
                self.run.summary[k] = v
        self.run.finish(exit_code=exit_code)
        self.run = None

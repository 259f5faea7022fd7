"""W&B logging that never prompts and never waits for the network unless the user configured it.

``mode: auto`` resolves to ``online`` only when W&B credentials exist (WANDB_API_KEY, or a netrc
entry for api.wandb.ai) and WANDB_MODE does not say otherwise; everything else logs offline to
``<run dir>/wandb/offline-run-*`` (``wandb sync`` uploads it later). ``logger=none`` disables it.

Online, nothing waits long for the network: when the W&B host does not resolve (a compute node
without network) the run logs offline at once; when it resolves but the service does not answer
within ``logger.init_timeout`` seconds (or refuses the key), it falls back to offline too. Either way
one ``pfbench: warning:`` line says so. The run id is kept in ``<run dir>/wandb/pfbench-run-id``, so a
resumed run continues the same W&B run (online or offline).
"""

from __future__ import annotations

import netrc
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from omegaconf import OmegaConf

from pfbench.io import write_text
from pfbench.rundir import WANDB_ID_FILE


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


def host_resolves(url: str, timeout: float = 3.0) -> bool:
    """Whether the host of ``url`` resolves within ``timeout`` seconds (True when a proxy is set:
    the proxy resolves it, not us)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    host = urlparse(url).hostname
    if not host:
        return True
    ok: list[bool] = []

    def lookup() -> None:
        try:
            socket.getaddrinfo(host, 443)
            ok.append(True)
        except OSError:
            ok.append(False)

    t = threading.Thread(target=lookup, daemon=True)
    t.start()
    t.join(timeout)
    return bool(ok and ok[0])


def _base_url(s: Any) -> str:
    """The W&B API address wandb.init will use: its default, the user's W&B settings, WANDB_BASE_URL."""
    for update in (s.update_from_system_settings, lambda: s.update_from_env_vars(dict(os.environ))):
        try:
            update()
        except Exception:
            pass
    return str(s.base_url)


def _warn(msg: str) -> None:
    print(f"pfbench: warning: {msg}", file=sys.stderr, flush=True)


class Tracker:
    """Thin wrapper over one W&B run (or nothing when disabled).

    ``resume``: continue the W&B run whose id this run directory stored (a resumed training run).
    """

    def __init__(self, cfg: Any, run_dir: Path, *, name: str, group: str | None, job_type: str,
                 resume: bool = False):
        self.run = None
        self.mode = resolve_mode(cfg.logger.mode) if cfg.logger.name != "none" else "disabled"
        if self.mode == "disabled":
            return
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb  # imported lazily: it is slow to import and unused with logger=none

        id_file = Path(run_dir) / WANDB_ID_FILE
        run_id = id_file.read_text().strip() if resume and id_file.is_file() else None
        if not run_id:
            from wandb.sdk.lib.runid import generate_id

            run_id = generate_id()
        id_file.parent.mkdir(exist_ok=True)
        write_text(id_file, run_id + "\n")
        timeout = float(cfg.logger.get("init_timeout") or 30)
        kwargs = dict(project=cfg.logger.project, entity=cfg.logger.entity, group=cfg.logger.group or group,
                      job_type=job_type, name=name, tags=list(cfg.logger.tags), dir=str(run_dir),
                      config=flatten(OmegaConf.to_container(cfg, resolve=True)), reinit="finish_previous",
                      id=run_id, resume="allow")

        def settings(**extra: Any):
            return wandb.Settings(console="off", silent=True, x_disable_stats=True, **extra)

        offline = f"logging offline to {Path(run_dir) / 'wandb'} (upload later with wandb sync)"
        if self.mode == "online":
            base = _base_url(settings())
            if not host_resolves(base):
                _warn(f"W&B host {urlparse(base).hostname} does not resolve (no network?); {offline}")
                self.mode = "offline"
            else:
                try:
                    self.run = wandb.init(mode="online", settings=settings(init_timeout=timeout), **kwargs)
                    return
                except Exception as e:  # unreachable service, refused key, timeout: the run goes on offline
                    _warn(f"W&B did not start online ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
                          f"{offline}")
                    self.mode = "offline"
                    try:
                        wandb.teardown()
                    except Exception:
                        pass
        try:
            self.run = wandb.init(mode=self.mode, settings=settings(), **kwargs)
        except Exception as e:  # tracking is a convenience: never the reason a run is lost
            _warn(f"W&B did not start ({type(e).__name__}: {str(e).splitlines()[0][:160]}); this run is not "
                  f"tracked (metrics.json has every number)")
            self.mode, self.run = "disabled", None

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

"""Experiment logging (W&B, CSV, TensorBoard or none) and the run's log lines (train.log).

``logger=wandb`` (default): ``mode: auto`` resolves to ``online`` only when W&B credentials exist
(WANDB_API_KEY, or a netrc entry for api.wandb.ai) and WANDB_MODE does not say otherwise; everything
else logs offline to ``<run dir>/wandb/offline-run-*`` (``wandb sync`` uploads it later).
``logger=csv`` writes ``<run dir>/metrics.csv`` and ``summary.csv``; ``logger=tensorboard`` event files
under ``<run dir>/tensorboard/`` (the optional ``tensorboard`` package); ``logger=none`` disables logging.
Every logger gets the same scalars (``train/*`` losses, ``val/*`` periodic evaluations) and the same
final record (the flattened ``metrics.json``), and the run's ``tags``.

Online, nothing waits long for the network: when the W&B host does not resolve (a compute node
without network) the run logs offline at once; when it resolves but the service does not answer
within ``logger.init_timeout`` seconds (or refuses the key), it falls back to offline too. Either way
one ``pfbench: warning:`` line says so. The run id is kept in ``<run dir>/wandb/pfbench-run-id``, so a
resumed run continues the same W&B run (online or offline).

:func:`log_stderr` (the entry point wraps each run in it) sends every line the run writes to stderr
through :mod:`logging`, so Hydra's job log ``<run dir>/train.log`` holds them too, and turns progress
bars into periodic plain lines when stderr is not a terminal.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import netrc
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from omegaconf import OmegaConf

from pfbench import ConfigError
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




LOGGERS = ("wandb", "csv", "tensorboard", "none")
TENSORBOARD_MISSING = ("logger=tensorboard needs the tensorboard package, an optional extra: pip install tensorboard; "
                       "or use logger=csv, logger=wandb or logger=none")
MAX_TAG = 64  # W&B refuses longer tags


def check_logger(logger: Any) -> None:
    """A known ``logger.name``; for logger=tensorboard, its package importable (checked before any work)."""
    if logger.name not in LOGGERS:
        raise ConfigError(f"logger.name='{logger.name}' must be one of {', '.join(LOGGERS)} (choose with "
                          f"logger=<name>)")
    if logger.name == "tensorboard":
        _summary_writer()


def _summary_writer() -> type:
    try:
        from torch.utils.tensorboard import SummaryWriter  # raises ImportError without the tensorboard package
    except ImportError:
        raise ConfigError(TENSORBOARD_MISSING) from None
    return SummaryWriter


def check_tags(value: Any, key: str = "tags") -> list[str]:
    """``tags`` as a list of distinct non-empty strings (a single string is one tag; numbers are written as
    text); ConfigError for anything else."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if OmegaConf.is_list(value):
        value = OmegaConf.to_container(value, resolve=True)
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{key}={value} must be a list of strings, e.g. {key}=[baseline,v2]")
    out: list[str] = []
    for t in value:
        if isinstance(t, bool) or not isinstance(t, (str, int, float)):
            raise ConfigError(f"{key}: {t!r} is not a tag; every tag is a string, e.g. {key}=[baseline,v2]")
        t = str(t).strip()
        if not 1 <= len(t) <= MAX_TAG:
            raise ConfigError(f"{key}: '{t}' must have 1 to {MAX_TAG} characters (W&B's limit)")
        if t not in out:
            out.append(t)
    return out


def run_tags(cfg: Any) -> list[str]:
    """The run's tags: ``logger.tags`` then the top-level ``tags``, each once."""
    tags = check_tags(cfg.logger.get("tags"), "logger.tags")
    return tags + [t for t in check_tags(cfg.get("tags")) if t not in tags]


def _scalar(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool)) or v is None


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class Tracker:
    """The run's logger (``logger.name``: wandb, csv, tensorboard or none) behind one interface.

    ``log``: training losses (``train/*``); ``log_eval``: periodic evaluations (``val/*``); ``log_images``:
    the plots; ``finish``: the final record (flattened, scalar values). ``resume``: continue what this run
    directory logged before (the W&B run whose id it stored, the CSV rows and TensorBoard events up to the
    checkpoint).
    """

    def __init__(self, cfg: Any, run_dir: Path, *, name: str, group: str | None, job_type: str,
                 resume: bool = False):
        self.run = None  # the W&B run (logger=wandb)
        self.mode = "disabled"  # logger=wandb: online | offline | disabled; else the logger's name
        self.step = 0
        self._sink: _CSVSink | _TensorBoardSink | None = None
        kind = cfg.logger.name
        if kind == "none":
            return
        tags = run_tags(cfg)
        if kind == "csv":
            self._sink, self.mode = _CSVSink(Path(run_dir), resume, tags), "csv"
        elif kind == "tensorboard":
            config = flatten(OmegaConf.to_container(cfg, resolve=True))
            self._sink, self.mode = _TensorBoardSink(Path(run_dir), resume, tags, config), "tensorboard"
        elif kind == "wandb":
            self._init_wandb(cfg, Path(run_dir), name=name, group=group, job_type=job_type, resume=resume,
                             tags=tags)
        else:
            check_logger(cfg.logger)

    def _init_wandb(self, cfg: Any, run_dir: Path, *, name: str, group: str | None, job_type: str, resume: bool,
                    tags: list[str]) -> None:
        self.mode = resolve_mode(cfg.logger.mode)
        if self.mode == "disabled":
            return
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb  # imported lazily: it is slow to import and unused with logger=none

        id_file = run_dir / WANDB_ID_FILE
        run_id = id_file.read_text().strip() if resume and id_file.is_file() else None
        if not run_id:
            from wandb.sdk.lib.runid import generate_id

            run_id = generate_id()
        id_file.parent.mkdir(exist_ok=True)
        write_text(id_file, run_id + "\n")
        timeout = float(cfg.logger.get("init_timeout") or 30)
        kwargs = dict(project=cfg.logger.project, entity=cfg.logger.entity, group=cfg.logger.group or group,
                      job_type=job_type, name=name, tags=tags, dir=str(run_dir),
                      config=flatten(OmegaConf.to_container(cfg, resolve=True)), reinit="finish_previous",
                      id=run_id, resume="allow")

        def settings(**extra: Any):
            return wandb.Settings(console="off", silent=True, x_disable_stats=True, **extra)

        offline = f"logging offline to {run_dir / 'wandb'} (upload later with wandb sync)"
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

    def _scalars(self, step: int, prefix: str, values: dict[str, Any]) -> None:
        self.step = max(self.step, int(step))
        scalars = {f"{prefix}/{k}": v for k, v in values.items() if k != "step"}
        if self.run is not None:
            self.run.log(scalars, step=step)
        if self._sink is not None:
            self._sink.scalars(int(step), scalars)

    def log(self, step: int, values: dict[str, float]) -> None:
        self._scalars(step, "train", values)

    def log_eval(self, step: int, values: dict[str, float]) -> None:
        """Periodic evaluations: ``val/*`` selection statistics and the parameter error for the record."""
        self._scalars(step, "val", values)

    def log_images(self, paths: dict[str, Path]) -> None:
        paths = {k: Path(p) for k, p in paths.items() if Path(p).exists()}
        if self.run is not None:
            import wandb

            self.run.log({f"plots/{k}": wandb.Image(str(p)) for k, p in paths.items()})
        if self._sink is not None:
            self._sink.images(self.step, paths)

    def finish(self, summary: dict[str, Any], exit_code: int = 0) -> None:
        """The final record: every scalar of the flattened ``summary`` (W&B's run summary, summary.csv,
        TensorBoard's summary/* scalars and HParams)."""
        flat = {k: v for k, v in flatten(summary).items() if _scalar(v)}
        if self.run is not None:
            for k, v in flat.items():
                self.run.summary[k] = v
            self.run.finish(exit_code=exit_code)
            self.run = None
        if self._sink is not None:
            self._sink.finish(self.step, flat)
            self._sink = None


class _CSVSink:
    """``metrics.csv``: one row per logged step (``step``, then one column per scalar, empty where a row has
    none); ``summary.csv``: ``key,value`` rows of the final record (``tags`` as a JSON list).

    Rows are appended as they come; the file is rewritten only when a new column appears or a row changes
    (an evaluation at a step that already logged losses), and, when a resumed run logs a step at or before
    the last row, from that step on (what was logged after the checkpoint is replaced).
    """

    def __init__(self, run_dir: Path, resume: bool, tags: list[str]):
        self.path, self.summary_path, self.tags = run_dir / "metrics.csv", run_dir / "summary.csv", tags
        self.columns: list[str] = ["step"]
        self.rows: list[dict[str, Any]] = []
        if resume and self.path.is_file():
            with open(self.path, newline="") as f:
                reader = csv.DictReader(f)
                self.columns = list(reader.fieldnames or ["step"])
                self.rows = [{k: v for k, v in r.items() if v not in ("", None)} for r in reader]
        else:  # a new run (or one replacing this directory's previous run): nothing of an earlier run stays
            self.path.unlink(missing_ok=True)
        self.summary_path.unlink(missing_ok=True)

    def scalars(self, step: int, values: dict[str, Any]) -> None:
        values = {k: v for k, v in values.items() if _scalar(v) and v is not None}
        rewrite = not self.path.is_file()
        if self.rows and step < int(self.rows[-1]["step"]):  # a resumed run replays steps after its checkpoint
            self.rows = [r for r in self.rows if int(r["step"]) < step]
            rewrite = True
        new = [k for k in values if k not in self.columns]
        if new:
            self.columns += new
            rewrite = True
        if self.rows and int(self.rows[-1]["step"]) == step:
            self.rows[-1].update(values)
            rewrite = True
        else:
            self.rows.append({"step": step, **values})
        if rewrite:
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=self.columns, lineterminator="\n")
            w.writeheader()
            w.writerows(self.rows)
            write_text(self.path, buf.getvalue())
        else:
            with open(self.path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.columns, lineterminator="\n").writerow(self.rows[-1])

    def images(self, step: int, paths: dict[str, Path]) -> None:
        pass  # the plots are files of the run directory already

    def finish(self, step: int, flat: dict[str, Any]) -> None:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["key", "value"])
        for k, v in flat.items():
            w.writerow([k, "" if v is None else str(v).lower() if isinstance(v, bool) else v])
        w.writerow(["tags", json.dumps(self.tags)])
        write_text(self.summary_path, buf.getvalue())


class _TensorBoardSink:
    """Event files under ``<run dir>/tensorboard/``: the scalars, the plots (``plots/*`` images), and the
    final record as ``summary/*`` scalars at the last step, a ``summary`` text table, the ``tags`` text and
    the HParams dashboard's session (flattened config against the summary scalars)."""

    def __init__(self, run_dir: Path, resume: bool, tags: list[str], config: dict[str, Any]):
        self.SummaryWriter = _summary_writer()
        self.dir, self.resume, self.tags, self.config = run_dir / "tensorboard", resume, tags, config
        self.w = None
        if not resume and self.dir.is_dir():  # replacing this directory's previous run: its curves go
            for f in self.dir.glob("events.out.tfevents.*"):
                f.unlink()

    def _writer(self, step: int):
        if self.w is None:
            # a resumed run drops what was logged after its checkpoint (TensorBoard's purge_step)
            self.w = self.SummaryWriter(log_dir=str(self.dir), purge_step=step if self.resume else None)
            if self.tags:
                self.w.add_text("tags", ", ".join(self.tags), step)
        return self.w

    def scalars(self, step: int, values: dict[str, Any]) -> None:
        w = self._writer(step)
        for k, v in values.items():
            if _number(v) or isinstance(v, bool):
                w.add_scalar(k, float(v), step)

    def images(self, step: int, paths: dict[str, Path]) -> None:
        import matplotlib.image
        import numpy as np

        w = self._writer(step)
        for k, p in paths.items():
            img = matplotlib.image.imread(str(p))
            if img.dtype != np.uint8:
                img = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
            w.add_image(f"plots/{k}", img[..., :3], step, dataformats="HWC")

    def finish(self, step: int, flat: dict[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        w = self._writer(step)
        metrics = {f"summary/{k}": float(v) for k, v in flat.items() if _number(v) or isinstance(v, bool)}
        for k, v in metrics.items():
            w.add_scalar(k, v, step)
        table = "| key | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in flat.items())
        w.add_text("summary", table, step)
        hp = {k: v if _scalar(v) and v is not None else json.dumps(v) for k, v in self.config.items()}
        for s in hparams(hp, metrics):
            w.file_writer.add_summary(s, step)
        w.close()
        self.w = None


# ---------------------------------------------------------------------------------------------
# The run's lines: stderr through logging (train.log), progress bars as periodic lines
# ---------------------------------------------------------------------------------------------

LOG = logging.getLogger("pfbench")
PROGRESS_EVERY_S = 30.0  # seconds between progress lines in a log (PFBENCH_PROGRESS_EVERY overrides)


def _level(line: str) -> int:
    if line.startswith("pfbench: error") or line.startswith("pfbench.runs: error"):
        return logging.ERROR
    if line.startswith("pfbench: warning") or re.search(r"\b\w*Warning: ", line):
        return logging.WARNING
    return logging.INFO


class _LogStream(io.TextIOBase):
    """Stands in for ``sys.stderr`` during a run: each line written to it goes to the ``pfbench`` logger
    (Hydra's job logging prints it on the real stderr, as it was, and appends it to ``train.log``).

    Progress bars (tqdm rewrites its line after ``\\r``) become plain lines: when stderr is a terminal the
    bar is shown live and ``train.log`` gets the lines; otherwise (a SLURM or nohup log) stderr and
    ``train.log`` both get its first state, one line every ``every`` seconds, and its last state.
    """

    def __init__(self, raw: Any, every: float):
        super().__init__()
        self.raw, self.every = raw, every
        try:
            self.tty = bool(raw.isatty())
        except Exception:
            self.tty = False
        self.buf = ""  # the current line, since the last \n or \r
        self.in_bar = False  # the current line followed a \r: a progress bar's state
        self.bar_open = False
        self.pending: str | None = None  # a bar state not written yet (throttled)
        self.last_text: str | None = None
        self.last_t = -math.inf
        self.lock = threading.RLock()
        self.local = threading.local()

    # what code that writes to sys.stderr may ask of it
    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.raw, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self.raw, "errors", None)

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.tty

    def fileno(self) -> int:
        return self.raw.fileno()

    def flush(self) -> None:
        try:
            self.raw.flush()
        except Exception:
            pass

    def write(self, s: str) -> int:
        if getattr(self.local, "busy", False):  # a log handler writing to this stream: straight through
            return self.raw.write(s)
        with self.lock:
            if self.in_bar and s and s[0] not in "\r\n":
                # text that is not the bar's (tqdm starts every state with \r): the bar's line ends here
                if self.buf.strip():
                    self._bar_state(self.buf, final=False)
                self.buf, self.in_bar = "", False
            if self.tty and (self.in_bar or s.startswith("\r")):
                self.raw.write(s)  # the live bar, as tqdm drew it
            for part in re.split(r"(\r|\n)", s):
                if part == "\n":
                    if self.in_bar:
                        self._bar_state(self.buf, final=True)
                    else:
                        self._line(self.buf)
                    self.buf, self.in_bar = "", False
                elif part == "\r":
                    if self.in_bar:
                        self._bar_state(self.buf, final=False)
                    elif self.buf.strip():
                        self._line(self.buf)
                    self.buf, self.in_bar = "", True
                else:
                    self.buf += part
        return len(s)

    def close_lines(self) -> None:
        """The end of the run: what is left of a line or a bar is written."""
        with self.lock:
            if self.in_bar:
                self._bar_state(self.buf, final=True)
            elif self.buf.strip():
                self._line(self.buf)
            self.buf, self.in_bar = "", False
            self.flush()

    def _line(self, text: str) -> None:
        text = text.rstrip()
        self._log(_level(text), text)

    def _bar_state(self, text: str, final: bool) -> None:
        text = text.strip()
        now = time.monotonic()
        if not text:  # the bar was cleared (tqdm's leave=False): its last state is the record
            if self.pending is not None:
                self._progress(self.pending)
            self.pending, self.bar_open = None, False
            return
        if final or not self.bar_open or now - self.last_t >= self.every:
            self._progress(text)
            self.pending, self.last_t = None, now
        else:
            self.pending = text
        self.bar_open = not final

    def _progress(self, text: str) -> None:
        if text == self.last_text:
            return
        self.last_text = text
        if self.tty:  # shown live on the terminal: the lines go to the log files only
            rec = LOG.makeRecord(LOG.name, logging.INFO, "(progress)", 0, text, None, None)
            for h in _handlers(LOG):
                if isinstance(h, logging.FileHandler) and rec.levelno >= h.level:
                    h.handle(rec)
        else:
            self._log(logging.INFO, text)

    def _log(self, level: int, text: str) -> None:
        self.local.busy = True
        try:
            if LOG.hasHandlers():
                LOG.log(level, text)
            else:
                self.raw.write(text + "\n")
        finally:
            self.local.busy = False


def _handlers(logger: logging.Logger) -> list[logging.Handler]:
    out: list[logging.Handler] = []
    node: logging.Logger | None = logger
    while node is not None:
        out += node.handlers
        node = node.parent if node.propagate else None
    return out


@contextmanager
def log_stderr(every: float | None = None) -> Iterator[None]:
    """While inside, ``sys.stderr`` is a :class:`_LogStream`: every line goes through the ``pfbench`` logger
    (stderr and ``train.log`` under Hydra's job logging) and progress bars write periodic plain lines where
    stderr is not a terminal. ``every``: seconds between them (default ``PFBENCH_PROGRESS_EVERY`` or 30)."""
    if isinstance(sys.stderr, _LogStream):
        yield
        return
    if every is None:
        try:
            every = float(os.environ.get("PFBENCH_PROGRESS_EVERY", PROGRESS_EVERY_S))
        except ValueError:
            every = PROGRESS_EVERY_S
    raw = sys.stderr
    stream = _LogStream(raw, every)
    sys.stderr = stream
    try:
        yield
    finally:
        try:
            stream.close_lines()
        finally:
            sys.stderr = raw

"""Atomic result files and safe checkpoints: a killed run leaves the old file or the new one, never half.

A write goes to ``.<name>.<8 hex>.tmp`` beside the target, is fsynced and renamed over it. The
temporary is created with mode 0666 minus the umask (as ``open`` would), so results are readable by
whoever the umask allows (a group's shared directory, a container volume read by another uid).
A temporary left by a killed writer matches :data:`TEMP_PATTERN`; :mod:`pfbench.rundir` removes
those at the start of the next run in that directory.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import tempfile
from pathlib import Path
from typing import Any

import torch

from pfbench import ConfigError

#: temporaries of :func:`_atomic_write`: ``.<target name>.<8 lowercase hex>.tmp``
TEMP_PATTERN = re.compile(r"^\.(?P<target>.+)\.[0-9a-f]{8}\.tmp$")


def _create_temp(path: Path) -> tuple[int, str]:
    """A new, exclusively created temporary beside ``path``; mode 0666 & ~umask (mkstemp would give 0600)."""
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _jsonable(obj.tolist())
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # JSON has no NaN/inf; a non-finite number is reported as null
    return obj


def write_text(path: str | Path, text: str) -> None:
    data = text.encode()
    _atomic_write(Path(path), lambda f: f.write(data))


def write_json(path: str | Path, obj: Any) -> None:
    data = json.dumps(_jsonable(obj), indent=2, sort_keys=False).encode() + b"\n"
    _atomic_write(Path(path), lambda f: f.write(data))


def save_checkpoint(path: str | Path, state: dict) -> None:
    _atomic_write(Path(path), lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path) -> dict:
    """Load with ``weights_only=True`` (a checkpoint cannot run code); a bad file is a clear error."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, corrupt or foreign file
        raise ConfigError(
            f"checkpoint {path} is unreadable ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
            f"delete it, or set overwrite=true to start the run over"
        ) from None


def check_writable(directory: str | Path, need_bytes: int = 1 << 20) -> None:
    """Fail before training when the output directory is read-only or nearly full."""
    directory = Path(directory)
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".pfbench-write-test") as f:
            f.write(b"0" * 1024)
            f.flush()
    except OSError as e:
        raise ConfigError(
            f"output directory {directory} is not writable ({e.strerror}); choose another with hydra.run.dir=..."
        ) from None
    st = os.statvfs(directory)
    if st.f_bavail * st.f_frsize < need_bytes:
        raise ConfigError(
            f"output directory {directory} has {st.f_bavail * st.f_frsize} bytes free, need {need_bytes}; "
            f"free space or choose another with hydra.run.dir=..."
        )

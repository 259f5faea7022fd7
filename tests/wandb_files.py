"""Read W&B offline run files (``run-*.wandb``) so tests can check what was logged.

Format (LevelDB-style log, see shared/NOTES.md): a 7-byte header (``:W&B`` + version), then 32 KiB
blocks of records, each with a 7-byte header (crc32: 4 bytes, length: 2 bytes little-endian,
type: 1 byte; 1 full, 2 first, 3 middle, 4 last) and a payload; joined payloads are serialized
``wandb_internal_pb2.Record`` messages.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32 * 1024


def records(path: str | Path):
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    pos, buf = 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - (pos % BLOCK)
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        payload = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        buf = payload if kind in (1, 2) else buf + payload
        if kind in (1, 4):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(buf)
            yield rec
            buf = b""


def wait_complete(path: str | Path, timeout: float = 20.0) -> None:
    """Wait until the run's ``exit`` record is on disk: W&B's service process writes the file
    asynchronously and may still be flushing after ``run.finish()`` returns."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if any(r.WhichOneof("record_type") == "exit" for r in records(path)):
                time.sleep(0.2)  # records after exit (final summary) follow immediately
                return
        except Exception:  # a record half-written right now
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{path}: no exit record after {timeout} s")


def summary_config_history(path: str | Path) -> tuple[dict, dict, list[dict]]:
    """Final summary values, config values (with run group and job type) and history rows."""
    wait_complete(path)
    summary: dict = {}
    config: dict = {}
    history: list[dict] = []
    for rec in records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            for item in rec.run.config.update:
                config[item.key] = json.loads(item.value_json)
            config["_run_group"], config["_job_type"] = rec.run.run_group, rec.run.job_type
        elif kind == "summary":
            for item in rec.summary.update:
                key = item.key or "/".join(item.nested_key)
                summary[key] = json.loads(item.value_json)
        elif kind == "config":
            for item in rec.config.update:
                config[item.key] = json.loads(item.value_json)
        elif kind == "history":
            history.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item})
    return summary, config, history

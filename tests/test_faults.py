"""Faults: corrupt checkpoints, unwritable output, atomic result files."""

from __future__ import annotations

import json
import os

import pytest
import torch

from pfbench import ConfigError
from pfbench.io import check_writable, load_checkpoint, write_json
from tests.runner import TINY, run_inprocess


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    run_inprocess(["+model=wgan", *TINY], tmp_path)
    ck = tmp_path / "checkpoint.pt"
    data = ck.read_bytes()
    ck.write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match=r"checkpoint .*checkpoint.pt is unreadable .*delete it"):
        run_inprocess(["+model=wgan", *TINY, "resume=true"], tmp_path)


def test_checkpoint_cannot_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"step": 1, "x": Evil()}, path)
    with pytest.raises(ConfigError, match="unreadable"):
        load_checkpoint(path)


def test_read_only_output_dir(tmp_path):
    # /proc refuses new files even for root (CI runs as root, so chmod alone would not test this).
    with pytest.raises(ConfigError, match=r"output directory /proc is not writable .*hydra.run.dir"):
        check_writable("/proc")
    if os.geteuid() != 0:
        tmp_path.chmod(0o500)
        try:
            with pytest.raises(ConfigError, match="is not writable"):
                check_writable(tmp_path)
        finally:
            tmp_path.chmod(0o700)


def test_write_json_is_atomic_under_failure(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"a": 1})

    class Boom:
        pass

    with pytest.raises(TypeError):
        write_json(path, {"a": Boom()})
    assert json.loads(path.read_text()) == {"a": 1}  # the previous complete file survives
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary left behind
    write_json(path, {"w": float("nan")})
    assert json.loads(path.read_text()) == {"w": None}


def test_full_output_dir_fails_before_training(tmp_path, monkeypatch):
    real = os.statvfs

    class Full:
        def __init__(self, st):
            self.f_bavail, self.f_frsize = 10, st.f_frsize

    monkeypatch.setattr(os, "statvfs", lambda p: Full(real(p)))
    with pytest.raises(ConfigError, match=r"has \d+ bytes free, need 1048576; free space or choose another"):
        run_inprocess(["+model=wgan", *TINY], tmp_path)
    assert not (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "metrics.json").exists()

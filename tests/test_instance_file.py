"""data.instance.kind=file: a bad or malicious parameter file is a bad input (one line, exit 2), not a failed run."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from pfbench import ConfigError
from tests.runner import TINY, run_cli, run_inprocess


class Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


CASES = {
    "pickle_code": (lambda p: torch.save({"Q": Evil()}, p / "inst.pt"), "inst.pt",
                    r"inst.pt is unreadable as .pt \(UnpicklingError: .*\); save the parameters with numpy.savez"),
    "garbage_npz": (lambda p: (p / "inst.npz").write_bytes(b"PK\x03\x04 not a zip"), "inst.npz",
                    r"inst.npz is unreadable as .npz \("),
    "object_npz": (lambda p: np.savez(p / "inst.npz", Q=np.array([{"a": 1}], dtype=object)), "inst.npz",
                   r"inst.npz is unreadable as .npz \(ValueError: Object arrays cannot be loaded"),
    "strings": (lambda p: np.savez(p / "inst.npz", Q=np.array(["a", "b"])), "inst.npz",
                r"parameter 'Q' holds <U1 values, not real numbers"),
    "wrong_shape": (lambda p: np.savez(p / "inst.npz", Q=np.zeros((2, 2))), "inst.npz",
                    r"parameter 'Q' has shape \(2, 2\), expected \(4, 2, 2\)"),
    "directory": (lambda p: (p / "inst.npz").mkdir(), "inst.npz", r"data.instance.path=.* is a directory"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_instance_file_is_a_bad_input(case, tmp_path, monkeypatch):
    make, name, message = CASES[case]
    make(tmp_path)
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    ov = ["+model=wgan", *TINY, "data.latent_dim=2", "data.out_dim=4", "data.instance.kind=file",
          f"data.instance.path={tmp_path / name}"]
    with pytest.raises(ConfigError, match=message) as e:
        run_inprocess(ov, run)
    assert "\n" not in str(e.value)
    assert {p.name for p in run.iterdir()} <= {".pfbench.lock"}  # no config.yaml, metrics.json or error.log
    assert not (tmp_path / "pwned").exists()


def test_bad_instance_file_from_the_command_line(tmp_path):
    torch.save({"Q": Evil()}, tmp_path / "inst.pt")
    p = run_cli(["+model=wgan", *TINY, "data.latent_dim=2", "data.out_dim=4", "data.instance.kind=file",
                 f"data.instance.path={tmp_path / 'inst.pt'}"], tmp_path / "run", cwd=tmp_path)
    err = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(err) == 1, p.stderr[-2000:]
    assert err[0].startswith(f"pfbench: error: instance parameter file {tmp_path / 'inst.pt'} is unreadable as .pt")
    assert not (tmp_path / "run" / "metrics.json").exists() and not (tmp_path / "pwned").exists()

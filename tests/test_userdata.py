"""data=file: the user's own samples, each bad input rejected with one line naming file, problem, place."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pfbench import ConfigError
from pfbench.userdata import load_samples
from tests.runner import TINY, metrics, run_inprocess


def _ok(n=300, d=4):
    return np.random.default_rng(0).normal(size=(n, d))


CASES = {
    "missing": (None, "does not exist; set data.path"),
    "empty_bytes": (lambda p: p.with_suffix(".npy").write_bytes(b""), r"is empty \(0 bytes\)"),
    "nan": (lambda p: np.save(p.with_suffix(".npy"), np.where(np.arange(1200).reshape(300, 4) % 97 == 5,
                                                              np.nan, _ok())),
            r"non-finite value\(s\) \(NaN/inf\), first in rows \[1, 25, 49"),
    "inf_csv": (lambda p: p.with_suffix(".csv").write_text("a,b\n1,2\n3,inf\n"),
                r"1 non-finite value\(s\) \(NaN/inf\), first in rows \[1\]"),
    "one_dim": (lambda p: np.save(p.with_suffix(".npy"), np.zeros(10)),
                r"expected a 2-D \(n x d\) sample matrix, got 1 dimension\(s\) with shape \(10,\)"),
    "three_dim": (lambda p: np.save(p.with_suffix(".npy"), np.zeros((2, 3, 4))), "got 3 dimension"),
    "zero_rows": (lambda p: np.save(p.with_suffix(".npy"), np.zeros((0, 3))), r"is empty: shape \(0, 3\)"),
    "text_csv": (lambda p: p.with_suffix(".csv").write_text("x,y\n1,2\n3,hello\n"),
                 "non-numeric value 'hello' on line 3"),
    "ragged_csv": (lambda p: p.with_suffix(".csv").write_text("1,2\n3,4,5\n"), "line 2 has 3 columns, line 1 has 2"),
    "header_only_csv": (lambda p: p.with_suffix(".csv").write_text("a,b\n"), "a header but no rows"),
    "garbage_npy": (lambda p: p.with_suffix(".npy").write_bytes(b"this is not numpy"), "is unreadable as .npy"),
    "bad_suffix": (lambda p: p.with_suffix(".txt").write_text("1 2"), "unsupported file type '.txt'"),
    "npz_ambiguous": (lambda p: np.savez(p.with_suffix(".npz"), a=_ok(), b=_ok()),
                      r"holds 2 arrays \['a', 'b'\]; choose one with data.key=NAME"),
    "strings_npy": (lambda p: np.save(p.with_suffix(".npy"), np.array([["a", "b"]])), "are not real numbers"),
    "pt_not_tensor": (lambda p: torch.save({"x": [1, 2]}, p.with_suffix(".pt")), "expected a tensor"),
    "beyond_float32": (lambda p: np.save(p.with_suffix(".npy"), np.where(np.arange(1200).reshape(300, 4) == 9,
                                                                         -1e39, _ok())),
                       r"1 value\(s\) beyond the float32 range \(largest \|x\| = 1e\+39 > 3.4e\+38\), first in "
                       r"rows \[2\]; rescale the samples"),
    "binary_csv": (lambda p: p.with_suffix(".csv").write_bytes(np.arange(64, dtype=np.float64).tobytes()),
                   r"is not a text CSV file \(binary content\); save the samples as .npy"),
    "latin1_csv": (lambda p: p.with_suffix(".csv").write_bytes(b"a,b\n1,caf\xe9\n"),
                   r"is not a text CSV file \(binary content\)"),
    "directory": (lambda p: p.with_suffix(".npy").mkdir(), r"data.path=.* is a directory; set data.path to the"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_file_is_one_clear_line(case, tmp_path):
    make, message = CASES[case]
    base = tmp_path / "samples"
    if make is not None:
        make(base)
    path = next(tmp_path.glob("samples.*"), base.with_suffix(".npy"))
    with pytest.raises(ConfigError, match=message) as e:
        load_samples(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    assert str(e.value).isascii() and str(e.value).isprintable()  # never the file's raw bytes


def test_n_train_beyond_the_file_is_refused(tmp_path):
    np.save(tmp_path / "x.npy", _ok(300, 4))
    ov = ["+model=wgan", "model.generator=mlp", "data=file", f"data.path={tmp_path / 'x.npy'}", *TINY]
    with pytest.raises(ConfigError, match=r"data.n_train=1000, but the file has 300 rows and 64 are held out "
                                          r"\(data.n_test=64 \+ data.n_val=0\), leaving 236; lower data.n_train "
                                          r"\(or set data.n_train=null to train on all 236\)"):
        run_inprocess([*ov, "data.n_train=1000"], tmp_path / "run")
    assert not any((tmp_path / "run").iterdir()) or {p.name for p in (tmp_path / "run").iterdir()} == {".pfbench.lock"}
    assert run_inprocess([*ov, "data.n_train=236"], tmp_path / "ok")["n_train"] == 236


def test_wrong_d_and_too_few_samples_fail_before_training(tmp_path):
    np.save(tmp_path / "x.npy", _ok(300, 4))
    base = ["+model=wgan", "model.generator=mlp", "data=file", f"data.path={tmp_path / 'x.npy'}", *TINY]
    with pytest.raises(ConfigError, match=r"samples have d=4 columns but data.out_dim=5; set data.out_dim=4"):
        run_inprocess([*base, "data.out_dim=5"], tmp_path / "a")
    with pytest.raises(ConfigError, match=r"300 samples, but the run needs at least 302 \(data.n_test=300"):
        run_inprocess([*base, "data.n_test=300"], tmp_path / "b")
    assert not (tmp_path / "a" / "checkpoint.pt").exists()
    with pytest.raises(ConfigError, match="data=file has no known family for model.generator=family"):
        run_inprocess([*base[:1], *base[2:]], tmp_path / "c")


@pytest.mark.parametrize("fmt", ["npy", "npz", "csv", "pt"])
def test_formats_load_identically(fmt, tmp_path):
    x = _ok(50, 3)
    p = tmp_path / f"x.{fmt}"
    {"npy": lambda: np.save(p, x), "npz": lambda: np.savez(p, samples=x),
     "csv": lambda: np.savetxt(p, x, delimiter=",", header="a,b,c", comments=""),
     "pt": lambda: torch.save(torch.from_numpy(x), p)}[fmt]()
    y = np.asarray(load_samples(p))
    assert y.shape == (50, 3)
    assert np.abs(y - x).max() <= (1e-15 if fmt != "csv" else 1e-12)


def test_large_npy_is_memory_mapped(tmp_path):
    np.save(tmp_path / "x.npy", _ok(1000, 3))
    assert isinstance(load_samples(tmp_path / "x.npy"), np.memmap)


def test_end_to_end_on_user_samples(tmp_path):
    # Samples from a known quadratic map, given to pfbench as a plain file: no truth inside the run.
    from pfbench.families import make_instance
    from pfbench.seeding import torch_generator

    f = make_instance("quadratic", 2, 4, generator=torch_generator(0, "instance"))
    np.save(tmp_path / "q.npy", f.sample(400, torch_generator(0, "x")).numpy())
    ov = ["+model=wgan", "data=file", f"data.path={tmp_path / 'q.npy'}", "data.family=quadratic",
          "data.latent_dim=2", *TINY, "data.n_train=null", "data.n_test=100"]
    rec = run_inprocess(ov, tmp_path / "run")
    assert rec["status"] == "completed" and rec["n_train"] == 300 and rec["out_dim"] == 4
    m = metrics(tmp_path / "run")["metrics"]
    assert m["param_error"] is None and "no true parameters" in m["param_error_status"].lower()
    assert m["w1"] > 0 and m["w1_floor"] > 0


def test_relative_data_path_is_relative_to_where_the_command_ran(tmp_path):
    # Hydra runs the job inside its run directory (hydra.job.chdir): x.npy must still mean ./x.npy
    from tests.runner import run_cli

    np.save(tmp_path / "x.npy", _ok(300, 4))
    p = run_cli(["+model=wgan", "model.generator=mlp", "data=file", "data.path=x.npy", *TINY], "run", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert f"path: {tmp_path / 'x.npy'}" in (tmp_path / "run/config.yaml").read_text()

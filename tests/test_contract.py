"""Contract tests, in the spirit of scikit-learn's check_estimator.

Every registered family passes the same family checks (shapes, seeded determinism, its symmetry
group: a random symmetry leaves every sample unchanged up to a latent rotation and has zero
aligned error, its architecture check, its arguments as config keys). Every method
(conf/model/*.yaml) on every data config (conf/data/*.yaml) it applies to runs at tiny size and
writes a valid metrics.json; the combinations it does not apply to are refused in one line.
A new family or method is checked here without editing this file.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pfbench import CONF_DIR, ConfigError
from pfbench.families import FAMILIES, build_family, make_instance
from pfbench.seeding import torch_generator
from tests.runner import TINY, compose_cfg, run_inprocess

K, D = 3, 7
MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
DATA = sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml"))


def small_args(name: str) -> dict:
    """The family's argument defaults, with hidden layers kept small."""
    args = FAMILIES[name].Args().given()
    if "hidden" in args:
        args["hidden"] = [5, 6]
    return args


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_shapes_determinism_and_arguments(name):
    kw = small_args(name)
    a = make_instance(name, K, D, generator=torch_generator(0, "instance"), **kw)
    b = make_instance(name, K, D, generator=torch_generator(0, "instance"), **kw)
    c = make_instance(name, K, D, generator=torch_generator(1, "instance"), **kw)
    assert a.family == name and a.latent_dim == K and a.out_dim == D
    x = a.sample(40, torch_generator(0, "x"))
    assert x.shape == (40, D) and x.dtype == torch.float64 and torch.isfinite(x).all()
    assert torch.equal(x, b.sample(40, torch_generator(0, "x")))
    assert sum(float((p - q).abs().sum()) for p, q in zip(a.parameters(), c.parameters())) > 1e-3
    # the family's arguments round-trip: a generator built from them has the same arguments and shapes
    g = build_family(name, K, D, dtype=torch.float32, **a.family_args().given())
    assert g.family_args() == a.family_args()
    assert {k: v.shape for k, v in g.params().items()} == {k: v.shape for k, v in a.params().items()}
    assert isinstance(FAMILIES[name].is_relu_net, bool)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_symmetry_is_a_symmetry_and_the_aligned_error_sees_through_it(name):
    truth = make_instance(name, K, D, generator=torch_generator(2, "instance"), **small_args(name))
    moved = copy.deepcopy(truth)
    rot = moved.random_symmetry_(torch_generator(3, "gauge"))
    assert rot.shape == (K, K)
    assert torch.allclose(rot @ rot.T, torch.eye(K, dtype=rot.dtype), atol=1e-12)
    # the parameters really moved, yet every sample is the same up to the latent rotation
    assert max(float((p - q).abs().max()) for p, q in zip(truth.parameters(), moved.parameters())) > 1e-2
    z = torch.randn(200, K, generator=torch_generator(4, "z"), dtype=torch.float64)
    assert torch.allclose(moved(z), truth(z @ rot.T), rtol=1e-9, atol=1e-9)
    own = truth.param_error(copy.deepcopy(truth), restarts=2, seed=0)
    assert 0.0 <= own["param_error"] <= 1e-10
    out = truth.param_error(moved, restarts=5, seed=0)
    assert 0.0 <= out["param_error"] <= 1e-7
    # and it is not blind: another instance of the family is far
    other = make_instance(name, K, D, generator=torch_generator(5, "instance"), **small_args(name))
    assert 0.1 <= truth.param_error(other, restarts=5, seed=0)["param_error"] < 10


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_architecture_check(name):
    a = build_family(name, K, D, **small_args(name))
    assert a.architecture_mismatch(build_family(name, K, D, **small_args(name))) is None
    assert "differ" in a.architecture_mismatch(build_family(name, K, D + 1, **small_args(name)))
    assert "differ" in a.architecture_mismatch(build_family(name, K + 1, D, **small_args(name)))
    other = next(n for n in FAMILIES if n != name)
    assert "not in the true family" in a.architecture_mismatch(build_family(other, K, D, **small_args(other)))


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_arguments_are_config_keys(name):
    from pfbench.config import validate

    assert name in DATA, f"family {name} has no conf/data/{name}.yaml"
    cfg = validate(compose_cfg(["+model=wgan", f"data={name}"]))
    for key in FAMILIES[name].Args.names():
        assert key in cfg.data, f"data.{key} is not validated for data={name}"
    with pytest.raises(ConfigError, match=r"unknown config key 'data\.no_such_arg'; valid keys under data: \["):
        validate(compose_cfg(["+model=wgan", f"data={name}", "+data.no_such_arg=1"]))


def _samples_file(tmp_path: Path) -> Path:
    f = make_instance("quadratic", 2, 4, generator=torch_generator(0, "instance"))
    path = tmp_path / "x.npy"
    np.save(path, f.sample(300, torch_generator(0, "file")).numpy())
    return path


def _applies(overrides: list[str]) -> bool:
    cfg = compose_cfg(overrides)
    if cfg.model.kind != "estimator":
        return True
    from pfbench.recovery import applies

    fam = cfg.data.family if cfg.data.name == "file" else cfg.data.name
    return applies(cfg.model.name, fam, has_truth=cfg.data.name != "file")


@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize("model", MODELS)
def test_every_method_on_every_data_config(model, data, tmp_path):
    tiny = [("++" + o) if o.startswith("model.train.") else o for o in TINY]  # estimators have no train block
    ov = [f"+model={model}", f"data={data}", *tiny, "data.latent_dim=2", "data.out_dim=4", "data.n_val=0",
          "++model.train.eval_every=null", "++model.train.patience=null", "++model.train.ema=null", "seed=0"]
    if data == "file":
        ov += [f"data.path={_samples_file(tmp_path)}", "data.family=quadratic"]
    if "hidden" in FAMILIES.get(data, FAMILIES["quadratic"]).Args.names():
        ov.append("data.hidden=[5]")
    if not _applies(ov):
        with pytest.raises(ConfigError, match="does not apply to data="):
            run_inprocess(ov, tmp_path / "run")
        return
    rec = run_inprocess(ov, tmp_path / "run")
    on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert on_disk["status"] == rec["status"] in ("completed", "not_converged"), rec.get("reason")
    assert on_disk["method"] == compose_cfg([f"+model={model}"]).model.name
    m = on_disk["metrics"]
    assert m["eval_status"] == "ok"
    for key in ("w1", "w1_floor", "sw", "sw_floor", "mmd", "mmd_floor"):
        assert isinstance(m[key], float) and math.isfinite(m[key]), key
    assert m["param_error_status"] in ("ok",) or m["param_error_status"].startswith("skipped")
    if m["param_error_status"] == "ok":
        assert 0.0 <= m["param_error"] < 100
    assert (tmp_path / "run" / "generator.pt").exists()

"""Errors Hydra catches (composition, overrides, output directory) are one `pfbench: error:` line, exit 2."""

from __future__ import annotations

import sys

import pytest

from pfbench import CONF_DIR
from tests.runner import TINY, run_cli


def _cli(argv: list[str], monkeypatch, capsys) -> tuple[int, list[str]]:
    """Run ``python -m pfbench.train argv`` in this process; (exit code, non-empty stderr lines)."""
    from pfbench.train import cli

    monkeypatch.setattr(sys, "argv", ["pfbench.train", *argv])
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    with pytest.raises(SystemExit) as e:
        cli()
    return e.value.code, [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


# every option of the group, as the files in conf/model/ name them (tuned configs included)
MODELS = ", ".join(sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml")))
DATA = ", ".join(sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml")))
CASES = {
    "readme_typo": (["+model=wgan", "data.n_tarin=5"],
                    "unknown config key 'data.n_tarin' (did you mean data.n_train?); valid keys under data: "
                    "['instance', 'latent_dim', 'n_test', 'n_train', 'n_val', 'name', 'out_dim']"),
    "unknown_model": (["+model=wgann"],
                      f"+model=wgann: there is no 'wgann' in config group 'model' (did you mean wgan?); "
                      f"valid choices: {MODELS}"),
    "unknown_eval": (["+model=wgan", "eval=quick"],
                     "eval=quick: there is no 'quick' in config group 'eval'; valid choices: default, fast, full"),
    "unknown_data": (["+model=wgan", "data=relu2"],
                     "data=relu2: there is no 'relu2' in config group 'data' (did you mean relu?); valid choices: "
                     f"{DATA}"),
    "key_the_model_lacks": (["+model=moments", "model.train.steps=50"],
                            "unknown config key 'model.train' (in model.train.steps=50); valid keys under model for "
                            "+model=moments: ['kind', 'name', 'params']"),
    "nested_typo": (["+model=wgan", "model.train.stepz=5"],
                    "unknown config key 'model.train.stepz' (did you mean model.train.steps?); valid keys under "
                    "model.train: ['batch_size', 'betas', 'checkpoint_every', 'clip', 'ema', 'eval_every', "
                    "'gp_weight', 'log_every', 'lr_d', 'lr_g', 'n_critic', 'optimizer', 'patience', 'select_by', "
                    "'steps']"),
    "unparsable": (["+model=wgan", "seed"],
                   "cannot parse the override 'seed' (missing EQUAL at '<EOF>'); write key=value, +key=value or "
                   "group=option"),
    "swept_group_key": (["-m", "+model=wgan,vae", "model.train.stepz=5"],
                        "model.train.stepz=5: 'model' does not exist when a multirun applies its common overrides "
                        "(the group is chosen per job); write ++model.train.stepz=5 so that each job sets it"),
    "unknown_launcher": (["+model=wgan", "hydra/launcher=slurmm"],
                         "hydra/launcher=slurmm: there is no 'slurmm' in config group 'hydra/launcher' (did you mean "
                         "slurm?); valid choices: basic, joblib, local_pool, slurm, submitit_local, submitit_slurm"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_composition_error_is_one_line(case, tmp_path, monkeypatch, capsys):
    argv, message = CASES[case]
    code, err = _cli([*argv, f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                     monkeypatch, capsys)
    assert code == 2 and err == [f"pfbench: error: {message}"]
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()  # before any work


def test_readme_typo_from_the_command_line(tmp_path):
    p = run_cli(["+model=wgan", "data.n_tarin=5"], tmp_path / "run")
    assert p.returncode == 2, p.stderr[-2000:]
    assert [ln for ln in p.stderr.splitlines() if ln.strip()] == [f"pfbench: error: {CASES['readme_typo'][1]}"]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("where", ["missing_parent", "read_only"])
def test_unwritable_output_directory_is_one_line(where, tmp_path, monkeypatch, capsys):
    # /proc refuses new directories and files even for root (chmod would not stop root)
    run_dir, bad = {"missing_parent": ("/proc/pfbench-no/run", "/proc/pfbench-no"),
                    "read_only": ("/proc/self", "/proc/self/train.log")}[where]
    code, err = _cli(["+model=wgan", *TINY, f"hydra.run.dir={run_dir}"], monkeypatch, capsys)
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"pfbench: error: cannot write to {bad} (")
    assert err[0].endswith("; choose a writable output directory with hydra.run.dir=... (hydra.sweep.dir=... for "
                           "-m), or set PFBENCH_OUTPUT_DIR")


def test_unwritable_sweep_directory_is_one_line(monkeypatch, capsys):
    code, err = _cli(["-m", "+model=wgan", *TINY, "seed=0,1", "hydra.sweep.dir=/proc/pfbench-no/sweep"],
                     monkeypatch, capsys)
    assert code == 2 and len(err) == 1
    assert err[0].startswith("pfbench: error: cannot write the sweep directory /proc/pfbench-no")


def test_hydra_full_error_keeps_hydras_report(tmp_path, monkeypatch, capsys):
    from hydra.errors import ConfigCompositionException

    from pfbench.train import cli

    monkeypatch.setattr(sys, "argv", ["pfbench.train", "+model=wgan", "data.n_tarin=5"])
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ConfigCompositionException):
        cli()

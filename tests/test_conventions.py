"""Conventions of Hydra and lightning-hydra-template users (issue 15): experiment= and debug= without the +,
debug=fast / debug=profile, logger=csv / logger=tensorboard, top-level tags, console scripts with shell
completion, train.log holding the run's lines, progress bars as plain lines in a log, and ckpt_path=."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import pstats
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pfbench import ConfigError
from pfbench.config import validate
from pfbench.hydra_errors import conventional_argv
from pfbench.tracking import LOG, _CSVSink, check_tags, flatten, log_stderr
from tests.runner import TINY, compose_cfg, metrics, run_cli, run_inprocess

BIN = Path(sys.executable).parent
NO_LOGGER = [o for o in TINY if not o.startswith("logger=")]


def _cli_stdout(argv: list[str], monkeypatch, capsys) -> str:
    """``pfbench-train argv`` in this process (for --cfg / -sc, which print and return)."""
    from pfbench.train import cli

    monkeypatch.setattr(sys, "argv", ["pfbench-train", *argv])
    cli()
    return capsys.readouterr().out


def _scalars(d: dict) -> dict:
    return {k: v for k, v in flatten(d).items() if isinstance(v, (int, float, str, bool)) or v is None}


# ---------------------------------------------------------------------------------------------
# experiment=, debug=, hparams_search= without the +
# ---------------------------------------------------------------------------------------------

def test_plain_group_spelling_is_rewritten_and_debug_goes_last():
    argv = ["-m", "debug=fast", "experiment=smoke", "+model=wgan", "hparams_search=wgan", "seed=1", "--cfg", "job"]
    assert conventional_argv(argv) == ["-m", "+experiment=smoke", "+model=wgan", "+hparams_search=wgan", "seed=1",
                                       "+debug=fast", "--cfg", "job"]
    assert conventional_argv(["+debug=fast", "+model=wgan"]) == ["+model=wgan", "+debug=fast"]
    assert conventional_argv(["--cfg", "job", "debug=fast"]) == ["--cfg", "job", "+debug=fast"]
    # flags' values and other overrides are left alone
    assert conventional_argv(["-sc", "install=bash"]) == ["-sc", "install=bash"]
    assert conventional_argv(["+model=wgan", "data=relu", "model.train.steps=5"]) == \
        ["+model=wgan", "data=relu", "model.train.steps=5"]


def test_ckpt_path_is_resume_in_the_run_dir(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"")
    expected = ["+model=wgan", "resume=true", f"hydra.run.dir={run.resolve()}", "seed=1"]
    assert conventional_argv(["+model=wgan", f"ckpt_path={run}/checkpoint.pt", "seed=1"]) == expected
    assert conventional_argv(["+model=wgan", f"ckpt_path={run}", "seed=1"]) == expected
    refusals = {
        f"ckpt_path={tmp_path}/nope": f"ckpt_path={tmp_path}/nope: no such file or directory; give an earlier "
                                      "run's directory or its checkpoint.pt",
        f"ckpt_path={tmp_path}": f"ckpt_path={tmp_path}: {tmp_path} holds no checkpoint.pt to continue from",
    }
    for arg, message in refusals.items():
        with pytest.raises(ConfigError) as e:
            conventional_argv(["+model=wgan", arg])
        assert str(e.value) == message
    with pytest.raises(ConfigError, match="does not combine with -m/--multirun"):
        conventional_argv(["-m", "+model=wgan", f"ckpt_path={run}"])
    with pytest.raises(ConfigError, match="already sets resume=true and hydra.run.dir"):
        conventional_argv(["+model=wgan", f"ckpt_path={run}", "hydra.run.dir=elsewhere"])


def test_ckpt_path_continues_a_run_from_the_command_line(tmp_path):
    run = tmp_path / "run"
    first = run_inprocess(["+model=wgan", *TINY], run)
    assert first["status"] == "completed" and first["resumed_from"] is None
    env_cmd = [sys.executable, "-m", "pfbench.train", "+model=wgan", *TINY, f"ckpt_path={run / 'checkpoint.pt'}"]
    res = subprocess.run(env_cmd, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "WANDB_MODE": "offline", "MPLBACKEND": "Agg"})
    assert res.returncode == 0, res.stderr[-2000:]
    again = metrics(run)
    assert again["resumed_from"] == 3 and again["status"] == "completed"
    assert again["metrics"]["param_error"] == pytest.approx(first["metrics"]["param_error"], rel=1e-9)
    res = subprocess.run([sys.executable, "-m", "pfbench.train", "+model=wgan", f"ckpt_path={tmp_path}/nope"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1] == (f"pfbench: error: ckpt_path={tmp_path}/nope: no such file or "
                                                   "directory; give an earlier run's directory or its checkpoint.pt")


@pytest.mark.parametrize("plain", ["experiment=smoke", "experiment=gan_vs_moments_quick", "hparams_search=wgan"])
def test_both_spellings_compose_the_same_config(plain, monkeypatch, capsys):
    a = _cli_stdout([plain, "+model=wgan", "--cfg", "all"], monkeypatch, capsys)
    b = _cli_stdout([f"+{plain}", "+model=wgan", "--cfg", "all"], monkeypatch, capsys)
    assert a == b and "sweeper" in a
    cfg = OmegaConf.create(a)
    assert cfg.hydra.runtime.choices[plain.split("=")[0]] == plain.split("=")[1]
    if plain == "experiment=smoke":  # the experiment's own defaults (override /eval, /logger) still apply
        assert cfg.eval.name == "fast" and cfg.logger.name == "none" and cfg.data.n_train == 128


# ---------------------------------------------------------------------------------------------
# debug=fast, debug=profile
# ---------------------------------------------------------------------------------------------

def test_debug_fast_wins_over_the_model_file_in_any_order_and_user_values_win_over_it(monkeypatch, capsys):
    before = _cli_stdout(["debug=fast", "+model=wgan", "--cfg", "job"], monkeypatch, capsys)
    after = _cli_stdout(["+model=wgan", "debug=fast", "--cfg", "job"], monkeypatch, capsys)
    assert before == after
    cfg = OmegaConf.create(before)
    assert cfg.model.name == "wgan" and cfg.model.train.steps == 20 and cfg.model.train.batch_size == 32
    assert cfg.eval.name == "fast" and cfg.logger.name == "none" and cfg.plots is False
    assert cfg.data.n_train == 256 and cfg.data.n_val == 256
    mine = OmegaConf.create(_cli_stdout(["model.train.steps=7", "debug=fast", "+model=wgan", "data.n_train=100",
                                         "--cfg", "job"], monkeypatch, capsys))
    assert mine.model.train.steps == 7 and mine.data.n_train == 100


@pytest.mark.slow
def test_debug_fast_runs_the_pipeline(tmp_path):
    p = run_cli(["debug=fast", "+model=wgan"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    m = metrics(tmp_path)
    assert m["status"] == "completed" and m["steps"] == 20 and m["n_train"] == 256
    assert (tmp_path / "generator.pt").is_file() and (tmp_path / "history.json").is_file()
    assert not (tmp_path / "wandb").exists() and not (tmp_path / "samples.png").exists()  # no logger, no plots
    p = run_cli(["debug=fast"], tmp_path / "nomodel")  # debug's model.* values do not make a method
    assert p.returncode == 2 and "pfbench: error: no method chosen: add +model=<name>" in p.stderr


def test_debug_options_and_typos(tmp_path, monkeypatch, capsys):
    cfg = OmegaConf.create(_cli_stdout(["+model=wgan", "debug=profile", "--cfg", "job"], monkeypatch, capsys))
    assert cfg.profile is True and cfg.model.train.steps == 2000  # profile: the configured run, unchanged
    from pfbench.train import cli

    monkeypatch.setattr(sys, "argv", ["pfbench-train", "+model=wgan", "debug=fsat", f"hydra.run.dir={tmp_path}"])
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    with pytest.raises(SystemExit) as e:
        cli()
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert e.value.code == 2 and err == ["pfbench: error: debug=fsat: there is no 'fsat' in config group 'debug' "
                                         "(did you mean fast?); valid choices: fast, profile"]
    monkeypatch.setattr(sys, "argv", ["pfbench-train", "experiment=smoke", "+model=wgan", "data.n_tarin=5",
                                      f"hydra.run.dir={tmp_path}"])
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")  # cli() sets it to 1 for Hydra
    with pytest.raises(SystemExit) as e:
        cli()
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert e.value.code == 2 and err == ["pfbench: error: unknown config key 'data.n_tarin' (did you mean "
                                         "data.n_train?); valid keys under data: ['instance', 'latent_dim', "
                                         "'n_test', 'n_train', 'n_val', 'name', 'out_dim']"]


# ---------------------------------------------------------------------------------------------
# train.log, progress lines, debug=profile (one command-line run)
# ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_train_log_progress_lines_and_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("PFBENCH_PROGRESS_EVERY", "0")  # every bar state a line (default: one every 30 s)
    p = run_cli(["+model=wgan", *TINY, "progress=true", "model.train.steps=12", "debug=profile"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    log = (tmp_path / "train.log").read_text()
    # stderr is a pipe here (a SLURM or nohup log): plain lines, no carriage returns, all in train.log too
    assert "\r" not in p.stderr and "\r" not in log
    for line in p.stderr.splitlines():
        assert line in log, line
    assert "12/12" in p.stderr and "wgan/quadratic:   0%" in p.stderr
    assert f"pfbench: completed: wgan on quadratic -> {tmp_path}" in log.splitlines()[-1]
    assert "[pfbench][INFO] - pfbench: profile: " in log
    text = (tmp_path / "profile.txt").read_text()
    assert "by cumulative time" in text and "by own time" in text and "(run)" in text
    stats = pstats.Stats(str(tmp_path / "profile.prof"))
    assert any(fn[2] == "train" and fn[0].endswith("training.py") for fn in stats.stats)  # the training loop


def _log_handlers(tmp_path, monkeypatch) -> tuple[io.StringIO, Path]:
    """The pfbench logger as Hydra's job logging sets it up: a console stream and train.log."""
    console, path = io.StringIO(), tmp_path / "train.log"
    h1 = logging.StreamHandler(console)
    h1.setFormatter(logging.Formatter("%(message)s"))
    h2 = logging.FileHandler(path)
    h2.setFormatter(logging.Formatter("[%(name)s][%(levelname)s] - %(message)s"))
    monkeypatch.setattr(LOG, "handlers", [h1, h2])
    monkeypatch.setattr(LOG, "propagate", False)
    monkeypatch.setattr(LOG, "level", logging.INFO)
    return console, path


def test_progress_bar_in_a_log_is_periodic_plain_lines(tmp_path, monkeypatch):
    from tqdm import tqdm

    console, path = _log_handlers(tmp_path, monkeypatch)
    raw = io.StringIO()  # not a terminal
    monkeypatch.setattr(sys, "stderr", raw)
    with log_stderr(every=3600):
        bar = tqdm(total=500, desc="train", file=sys.stderr, mininterval=0, unit="step")
        for _ in range(500):
            bar.update(1)
        print("pfbench: warning: something to see", file=sys.stderr)
        bar.close()
        print("pfbench: completed: wgan", file=sys.stderr)
    assert sys.stderr is raw
    out = console.getvalue()
    lines = out.splitlines()
    assert "\r" not in out and raw.getvalue() == ""
    # the bar's first and last states (not 500 updates joined by \r), the other lines as they came
    assert len(lines) == 4 and lines[0].startswith("train:   0%|          | 0/500 [")
    assert lines[1] == "pfbench: warning: something to see" and lines[3] == "pfbench: completed: wgan"
    assert lines[2].startswith("train: 100%") and "| 500/500 [" in lines[2]
    log = path.read_text()
    assert "[pfbench][WARNING] - pfbench: warning: something to see" in log
    assert "[pfbench][INFO] - pfbench: completed: wgan" in log and "500/500" in log


def test_progress_bar_on_a_terminal_stays_live_and_train_log_gets_lines(tmp_path, monkeypatch):
    from tqdm import tqdm

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    console, path = _log_handlers(tmp_path, monkeypatch)
    raw = Terminal()
    monkeypatch.setattr(sys, "stderr", raw)
    with log_stderr(every=0):
        with tqdm(total=3, desc="evaluate", file=sys.stderr, mininterval=0, leave=False) as bar:
            for _ in range(3):
                bar.update(1)
        print("pfbench: completed: x", file=sys.stderr)
    assert raw.getvalue().count("\r") >= 4 and "3/3" in raw.getvalue()  # the bar as tqdm drew it
    assert console.getvalue() == "pfbench: completed: x\n"  # progress lines are not repeated on the terminal
    log = path.read_text()
    assert "\r" not in log and "evaluate:   0%" in log and "3/3" in log and "pfbench: completed: x" in log


# ---------------------------------------------------------------------------------------------
# logger=csv, logger=tensorboard: the same scalars and final record as W&B
# ---------------------------------------------------------------------------------------------

EVAL = ["data.n_val=64", "model.train.eval_every=2", "model.train.steps=4"]


def _history(run_dir: Path) -> tuple[dict[tuple[int, str], float], dict[str, object]]:
    """(step, train/* or val/* key) -> value from history.json, and the final record's scalars."""
    h = json.loads((run_dir / "history.json").read_text())
    want = {}
    for prefix, rows in (("train", h["train"]), ("val", h["eval"])):
        for r in rows:
            want.update({(r["step"], f"{prefix}/{k}"): v for k, v in r.items() if k != "step" and v is not None})
    return want, _scalars(metrics(run_dir))


def test_logger_csv_writes_the_scalars_and_final_record(tmp_path):
    rec = run_inprocess(["+model=wgan", *NO_LOGGER, "logger=csv", *EVAL, "tags=[csv,t2]"], tmp_path)
    assert rec["status"] == "completed"
    want, final = _history(tmp_path)
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    got = {(int(r["step"]), k): float(v) for r in rows for k, v in r.items() if k != "step" and v != ""}
    assert got.keys() == want.keys()
    assert all(math.isclose(got[k], want[k], rel_tol=1e-12) for k in want)
    with open(tmp_path / "summary.csv", newline="") as f:
        summary = dict(csv.reader(f))
    assert summary.pop("key") == "value" and json.loads(summary.pop("tags")) == ["csv", "t2"]
    assert summary.keys() == final.keys()
    for k, v in final.items():
        assert summary[k] == ("" if v is None else str(v).lower() if isinstance(v, bool) else str(v)), k


def test_csv_of_a_resumed_run_replaces_what_followed_its_checkpoint(tmp_path):
    sink = _CSVSink(tmp_path, resume=False, tags=[])
    for step in (1, 2, 3, 4):
        sink.scalars(step, {"train/loss": float(step)})
    sink.scalars(4, {"val/stat": 0.5})  # an evaluation at a logged step: the same row
    sink = _CSVSink(tmp_path, resume=True, tags=[])  # killed after step 4, resumed from a checkpoint at 2
    sink.scalars(3, {"train/loss": 30.0})
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv", newline="")))
    assert rows == [{"step": "1", "train/loss": "1.0", "val/stat": ""},
                    {"step": "2", "train/loss": "2.0", "val/stat": ""},
                    {"step": "3", "train/loss": "30.0", "val/stat": ""}]
    _CSVSink(tmp_path, resume=False, tags=[])  # a new run in this directory starts a new file
    assert not (tmp_path / "metrics.csv").exists()


def test_logger_tensorboard_writes_the_scalars_and_final_record(tmp_path):
    pytest.importorskip("tensorboard", reason="optional extra: pip install tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rec = run_inprocess(["+model=wgan", *NO_LOGGER, "logger=tensorboard", "plots=true", *EVAL, "tags=[tb]"],
                        tmp_path)
    assert rec["status"] == "completed"
    want, final = _history(tmp_path)
    ea = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    ea.Reload()
    got = {(e.step, tag): e.value for tag in ea.Tags()["scalars"] if not tag.startswith("summary/")
           for e in ea.Scalars(tag)}
    assert got.keys() == want.keys()
    assert all(math.isclose(got[k], want[k], rel_tol=1e-6) for k in want)
    numbers = {k: float(v) for k, v in final.items() if isinstance(v, (int, float))}
    summary = {tag[len("summary/"):]: ea.Scalars(tag)[-1] for tag in ea.Tags()["scalars"] if tag.startswith("summary/")}
    assert summary.keys() == numbers.keys()
    assert all(e.step == 4 and (math.isclose(e.value, numbers[k], rel_tol=1e-6)
                                or (math.isnan(e.value) and math.isnan(numbers[k]))) for k, e in summary.items())
    assert set(ea.Tags()["images"]) == {"plots/samples", "plots/curves"}
    assert ea.Tensors("tags/text_summary")[0].tensor_proto.string_val == [b"tb"]
    # HParams: the flattened config against the summary scalars (n_train vs param_error across a sweep)
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    content = ea.PluginTagToContent("hparams")
    start = HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["data.n_train"].number_value == 64 and start.hparams["model.name"].string_value == "wgan"
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} == {f"summary/{k}" for k in numbers}


def test_logger_tensorboard_without_its_package_is_one_line_before_any_work(tmp_path, monkeypatch):
    for mod in list(sys.modules):
        if mod == "tensorboard" or mod.startswith(("tensorboard.", "torch.utils.tensorboard")):
            monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard -> ImportError
    with pytest.raises(ConfigError, match=r"^logger=tensorboard needs the tensorboard package, an optional extra: "
                                          r"pip install tensorboard"):
        run_inprocess(["+model=wgan", *NO_LOGGER, "logger=tensorboard"], tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("logger", ["wandb", "csv", "tensorboard", "none"])
def test_every_logger_option_validates(logger):
    if logger == "tensorboard":
        pytest.importorskip("tensorboard")
    cfg = validate(compose_cfg(["+model=wgan", f"logger={logger}"]))
    assert cfg.logger.name == logger
    with pytest.raises(ConfigError, match="logger.name='tensorbord' must be one of wandb, csv, tensorboard, none"):
        validate(compose_cfg(["+model=wgan", "logger.name=tensorbord"]))


# ---------------------------------------------------------------------------------------------
# tags; W&B: tags, and the dashboard recipe's numbers in the offline files
# ---------------------------------------------------------------------------------------------

def test_tags_are_validated():
    assert validate(compose_cfg(["+model=wgan", "tags=[a,b,a]"])).tags == ["a", "b"]
    assert validate(compose_cfg(["+model=wgan", "tags=baseline"])).tags == ["baseline"]
    assert validate(compose_cfg(["+model=wgan", "tags=[v1,2024]"])).tags == ["v1", "2024"]
    assert validate(compose_cfg(["+model=wgan"])).tags == []
    for bad, msg in (("tags=[[a]]", "is not a tag"), ("tags=[a,null]", "is not a tag"),
                     (f"tags=[{'x' * 65}]", "1 to 64 characters")):
        with pytest.raises(ConfigError, match=msg):
            validate(compose_cfg(["+model=wgan", bad]))
    assert check_tags(OmegaConf.create(["x", 3])) == ["x", "3"]
    with pytest.raises(ConfigError, match=r"tags=\{'a': 1\} must be a list of strings, e.g. tags=\[baseline,v2\]"):
        check_tags(OmegaConf.create({"a": 1}))


@pytest.mark.slow
def test_tags_and_the_dashboard_recipe_in_wandb_offline_files(tmp_path, monkeypatch):
    from pfbench.report import load_runs
    from tests.wandb_files import records, summary_config_history

    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = tmp_path / "sweep" / "0_wgan"
    rec = run_inprocess(["+model=wgan", *NO_LOGGER, "logger=wandb", "tags=[alpha,beta]", "logger.tags=[gamma,alpha]"],
                        run_dir)
    assert rec["tags"] == ["alpha", "beta"] and metrics(run_dir)["tags"] == ["alpha", "beta"]
    (path,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    summary, config, _ = summary_config_history(path)  # waits for W&B to finish writing the file
    runs = [r.run for r in records(path) if r.WhichOneof("record_type") == "run"]
    assert runs and list(runs[-1].tags) == ["gamma", "alpha", "beta"]
    # the README's scatter plot: x = config data.n_train, y = summary metrics.param_error (numbers), one
    # colour per job type (the method); every scalar of metrics.json is in the summary with its value
    assert config["data.n_train"] == 64 and isinstance(config["data.n_train"], int)
    assert config["_job_type"] == "wgan" and config["tags"] == ["alpha", "beta"]
    final = _scalars(metrics(run_dir))
    assert isinstance(summary["metrics.param_error"], float) and isinstance(summary["timing.wall_time_s"], float)
    for k, v in final.items():
        assert summary[k] == v or (isinstance(v, float) and math.isnan(v) and math.isnan(summary[k])), k
    (row,) = load_runs(tmp_path / "sweep")  # the report reads the tags from metrics.json
    assert row["tags"] == ["alpha", "beta"] and json.loads(row["cfg.tags"]) == ["alpha", "beta"]


# ---------------------------------------------------------------------------------------------
# console scripts and Hydra's shell completion
# ---------------------------------------------------------------------------------------------

def _script(name: str) -> str:
    path = BIN / name
    assert path.is_file(), f"{path} is missing: reinstall the package (make install, or pip install --no-deps -e .)"
    return str(path)


def test_console_scripts_and_shell_completion(tmp_path):
    install = subprocess.run([_script("pfbench-train"), "-sc", "install=bash"], capture_output=True, text=True,
                             timeout=120, cwd=tmp_path)
    assert install.returncode == 0, install.stderr
    assert install.stdout.rstrip().endswith("complete -o nospace -o default -F hydra_bash_completion pfbench-train")
    env = {"COMP_LINE": "pfbench-train +model=wgan experiment=sm", "PATH": str(BIN)}
    query = subprocess.run([_script("pfbench-train"), "-sc", "query=bash"], capture_output=True, text=True,
                           timeout=120, cwd=tmp_path, env=env)
    assert query.stdout.split() == ["experiment=smoke"], query.stderr
    report = subprocess.run([_script("pfbench-report"), str(tmp_path / "nothing-here"), "--wandb", "disabled"],
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 2 and report.stderr.startswith("pfbench report: error: ")

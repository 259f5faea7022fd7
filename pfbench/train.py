"""Entry point: ``python -m pfbench.train +model=<method> [data=<family>] [overrides...]``.

Wires config -> true instance and samples -> method (learned generator or estimator) -> shared
evaluation -> run directory (config, metrics.json, checkpoint, generator, plots) and W&B. No math here.
"""

from __future__ import annotations

from pfbench import limit_blas_threads

limit_blas_threads()  # before numpy loads

import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, NamedTuple

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from pfbench import CONF_DIR, ConfigError
from pfbench.config import validate
from pfbench.data import Data, family_kwargs, family_of, make_data
from pfbench.io import check_writable, save_checkpoint, write_json, write_text
from pfbench.rundir import (
    RunDirError,
    RunLock,
    clear_results,
    effective_resume,
    existing_results,
    fingerprint,
    plan,
    remove_stale_temps,
    verify_resume,
)
from pfbench.seeding import torch_generator


def generator_record(g, family_name: str | None, kwargs: dict, mlp: dict | None = None) -> dict:
    """What ``pfbench.runs.load_generator`` needs to rebuild the fitted generator."""
    if hasattr(g, "constructor_kwargs"):  # the reference methods (pfbench.baselines)
        kwargs = g.constructor_kwargs()
    return {"family": g.family, "data_family": family_name, "latent_dim": g.latent_dim, "out_dim": g.out_dim,
            "kwargs": kwargs if g.family != "mlp" else dict(mlp or {}),
            "state_dict": {k: v.detach().cpu() for k, v in g.state_dict().items()}}


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """One (data, method) run inside ``run_dir``; returns the metrics record (also written to disk).

    Every check comes before the first write: configuration, output directory, the run directory's
    lock and its previous results (see :mod:`pfbench.rundir`), the data and the true instance, and
    the resumed checkpoint's fingerprint. A refused run leaves the directory as it found it (bar the
    lock file and Hydra's empty job log).
    """
    t_start = time.perf_counter()
    raw = cfg
    cfg = _absolute_paths(validate(cfg))  # eval typos / oversized exact W fail here too, not after training
    check_writable(run_dir)
    with RunLock(run_dir):
        remove_stale_temps(run_dir)
        mode = plan(run_dir, effective_resume(cfg.resume), bool(cfg.overwrite), _hydra_wrote())
        return _run_locked(cfg, raw, run_dir, mode, t_start)


def _absolute_paths(cfg: DictConfig) -> DictConfig:
    """data.path and data.instance.path relative to where the command was started, not to the run
    directory Hydra changes into (hydra.job.chdir); config.yaml then records absolute paths."""
    try:
        base = HydraConfig.get().runtime.cwd
    except ValueError:
        base = os.getcwd()
    for key in ("data.path", "data.instance.path"):
        v = OmegaConf.select(cfg, key)
        if isinstance(v, str) and v:
            v = os.path.expanduser(v)
            OmegaConf.update(cfg, key, v if os.path.isabs(v) else os.path.join(base, v))
    return cfg


def _run_locked(cfg: DictConfig, raw: DictConfig, run_dir: Path, mode: str, t_start: float) -> dict:
    m, d = cfg.model, cfg.data
    skipped = _not_applicable(cfg)
    if skipped is not None:  # a sweep's product hits it: recorded, not an error there
        _start_writing(cfg, raw, run_dir, mode)
        write_json(run_dir / "metrics.json", skipped)
        return skipped
    torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is visible; use device=cpu")
    record: dict[str, Any] = {
        "method": m.name, "loss": m.loss, "generator": m.generator if m.kind != "estimator" else "estimator",
        "tuned": m.get("tuned"), "data": d.name, "latent_dim": d.latent_dim, "out_dim": d.out_dim,
        "n_train": d.n_train, "n_val": d.n_val, "seed": cfg.seed, "status": "running", "reason": None, "steps": 0,
        "tags": list(cfg.get("tags") or []),
    }
    est, data, failure = _prepare(cfg, mode)
    state = None
    if mode == "resume":
        state = verify_resume(run_dir, cfg)
        if state is None:  # nothing to continue (an estimator, or killed before its first checkpoint)
            mode = "overwrite"
    # Every check passed: from here on the run directory is written.
    _start_writing(cfg, raw, run_dir, mode)
    from pfbench.tracking import Tracker

    sweep = Path(HydraConfig.get().sweep.dir).name if _is_multirun() else None
    tracker = Tracker(cfg, run_dir, name=run_dir.name, group=sweep, job_type=m.name, resume=state is not None)
    timing: dict[str, float] = {}
    try:
        if failure is not None:
            raise failure
        record["out_dim"], record["n_train"] = d.out_dim, int(data.x_train.shape[0])
        if m.kind == "estimator":
            fitted, t = _fit_estimator(cfg, est, data, record, run_dir)
        else:
            fitted, t = _train_generator(cfg, data, record, run_dir, device, tracker, state)
        timing.update(t)
        timing.update(_evaluate_all(cfg, fitted, data, record))
        if fitted.history or fitted.evals:
            write_json(run_dir / "history.json", {"train": fitted.history, "eval": fitted.evals})
        if cfg.plots:
            _plots(cfg, run_dir, fitted.model, data.x_test, fitted.history, fitted.evals, record, tracker)
    except ConfigError:
        tracker.finish({"status": "failed"}, exit_code=1)
        raise
    except Exception as e:  # a solver or numerical failure: recorded, the sweep goes on
        record.update(status="failed", reason=f"{type(e).__name__}: {e}".splitlines()[0])
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        write_text(run_dir / "error.log", tb)
    timing["wall_time_s"] = time.perf_counter() - t_start
    record["timing"] = timing
    write_json(run_dir / "metrics.json", record)
    tracker.finish({k: v for k, v in record.items() if k != "timing"} | {"timing": timing},
                   exit_code=0 if record["status"] != "failed" else 1)
    return record


def _not_applicable(cfg: DictConfig) -> dict | None:
    """The skipped record of an estimator on a family it does not apply to, inside a sweep (else None:
    a single run with that combination is a configuration error, raised when the estimator is made)."""
    m = cfg.model
    if m.kind != "estimator" or not _is_multirun():
        return None
    from pfbench.recovery import applies

    fam = family_of(cfg.data)
    if applies(m.name, fam, has_truth=cfg.data.name != "file"):
        return None
    return {"method": m.name, "data": cfg.data.name, "seed": cfg.seed, "status": "skipped",
            "reason": f"+model={m.name} does not apply to data={fam}"}


def _prepare(cfg: DictConfig, mode: str) -> tuple[Any, Data | None, Exception | None]:
    """The estimator (checked before any sampling) and the data; a numerical failure while sampling is
    returned, to be recorded once the run directory may be written (a resumed run re-raises it)."""
    est = data = None
    try:
        # Identifiability and problem-size refusals (est.validate()) come before any sampling
        # whenever out_dim is known up front (data=file learns it from the file).
        if cfg.model.kind == "estimator" and cfg.data.out_dim is not None:
            est = _make_estimator(cfg)
        data = make_data(cfg)
        if cfg.model.kind == "estimator" and est is None:
            est = _make_estimator(cfg)
    except ConfigError:
        raise
    except Exception as e:
        if mode == "resume":
            raise  # the previous run's fingerprint cannot be checked: leave its directory alone
        return est, data, e
    return est, data, None


def _start_writing(cfg: DictConfig, raw: DictConfig, run_dir: Path, mode: str) -> None:
    """The first writes of a run that passed every check: clear what it replaces, then its config records."""
    if mode == "overwrite":
        clear_results(run_dir)
    else:
        (run_dir / "error.log").unlink(missing_ok=True)  # a resumed run's earlier failure is history
    write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg))
    _write_hydra_record(raw, run_dir)


def _hydra_wrote() -> tuple[str, ...]:
    """(".hydra",) when Hydra wrote this run's record itself before the task (hydra.output_subdir set)."""
    try:
        sub = HydraConfig.get().output_subdir
    except ValueError:
        return ()
    return (str(sub),) if sub is not None else ()


def _write_hydra_record(raw: DictConfig, run_dir: Path) -> None:
    """``<run dir>/.hydra/{config,hydra,overrides}.yaml`` as Hydra writes them (it is told not to:
    ``hydra.output_subdir: null``, so that a refused run cannot rewrite a previous run's record)."""
    try:
        hydra_cfg = HydraConfig.instance().cfg
        if hydra_cfg is None or HydraConfig.get().output_subdir is not None:
            return  # no Hydra (a direct call), or Hydra wrote its record itself
    except ValueError:
        return
    out = run_dir / ".hydra"
    out.mkdir(exist_ok=True)
    task = OmegaConf.masked_copy(raw, [k for k in raw.keys() if k != "hydra"]) if "hydra" in raw else raw
    write_text(out / "config.yaml", OmegaConf.to_yaml(task))
    write_text(out / "hydra.yaml", OmegaConf.to_yaml(hydra_cfg))
    write_text(out / "overrides.yaml", OmegaConf.to_yaml(HydraConfig.get().overrides.task))


class Fitted(NamedTuple):
    """What a method hands to the evaluation: its final model and, for learned generators, the rest."""

    model: Any
    history: list[dict]  # training losses
    evals: list[dict]  # periodic evaluations (eval_every)
    selected: Any = None  # best-by-validation checkpoint (a generator), if any
    ema: Any = None  # averaged generator, if model.train.ema
    monitor: Any = None


def _make_estimator(cfg: DictConfig):
    """The configured estimator, its refusals (identifiability, problem size) already checked."""
    from pfbench.recovery import make_estimator

    m, d = cfg.model, cfg.data
    est = make_estimator(m.name, family_of(d) or "file", latent_dim=d.latent_dim, out_dim=d.out_dim, seed=cfg.seed,
                         family_kwargs=family_kwargs(d), params=OmegaConf.to_container(m.params, resolve=True),
                         has_truth=d.name != "file")
    est.validate()
    return est


def _fit_estimator(cfg: DictConfig, est, data: Data, record: dict, run_dir: Path) -> tuple[Fitted, dict]:
    """Fit an estimator; its info_ goes to record["fit"] and the returned timings (``fit_*_time_s``)."""
    if getattr(est, "needs_truth", False):
        est.truth_ = data.truth
    t0 = time.perf_counter()
    est.fit(data.x_train.numpy())
    timing = {"fit_time_s": time.perf_counter() - t0}
    info, est_timing = pop_timings(dict(est.info_))
    timing.update({(k if k.startswith("fit") else f"fit_{k}"): v for k, v in est_timing.items()})
    record["fit"] = info
    if hasattr(est, "extra_metrics") and data.truth is not None:
        record["fit"].update(est.extra_metrics(data.truth, data.x_train.numpy()))
    if "converged" not in info:
        record["status"] = "not_converged"
        record["reason"] = f"{type(est).__name__} does not report convergence (no 'converged' in its info_)"
    elif info["converged"]:
        record["status"] = "completed"
    else:
        record["status"] = "not_converged"
        record["reason"] = str(info.get("warning") or info.get("convergence") or "the estimator did not converge")
    save_checkpoint(run_dir / "generator.pt", generator_record(est.pushforward_, family_of(cfg.data),
                                                               family_kwargs(cfg.data)))
    return Fitted(est.pushforward_, [], []), timing


def pop_timings(d: dict[str, Any]) -> tuple[dict[str, Any], dict[str, float]]:
    """Split a result dict into its values and its durations: the keys ending in ``_time_s`` (the
    naming rule of estimators' ``info_``, of :func:`pfbench.metrics.evaluate.evaluate` and of the
    downstream tasks), which belong in metrics.json's ``timing``, not beside the results."""
    times = {k: d[k] for k in d if k.endswith("_time_s")}
    return {k: v for k, v in d.items() if k not in times}, times


def _param_error_recorder(cfg: DictConfig, truth):
    """The parameter error against the truth, for the record of periodic evaluations (never selection)."""
    if truth is None:
        return None
    from pfbench.metrics.evaluate import _param_error_block

    pe_cfg = cfg.eval.param_error  # validated with the config
    if not pe_cfg["enabled"]:
        return None

    def record(model) -> dict[str, Any]:
        out = _param_error_block(model, truth, pe_cfg, cfg.seed)
        return {"param_error": out.get("param_error")}

    return record


def _train_generator(cfg: DictConfig, data: Data, record: dict, run_dir: Path, device, tracker,
                     state: dict | None = None) -> tuple[Fitted, dict]:
    """Train a learned generator (with periodic evaluation and selection when configured)."""
    from pfbench.models import build_trainer
    from pfbench.selection import Monitor, ValidationStatistics
    from pfbench.training import train

    m, d = cfg.model, cfg.data
    fam, fkw, t = family_of(d), family_kwargs(d), m.train
    trainer = build_trainer(m, family=fam, latent_dim=d.latent_dim, out_dim=d.out_dim, family_kwargs=fkw,
                            seed=cfg.seed)
    for mod in trainer.modules().values():
        mod.to(device)
    monitor = None
    if t.eval_every is not None or t.ema is not None:
        stats = ValidationStatistics(data.x_val, cfg.seed) if t.eval_every is not None else None
        monitor = Monitor(trainer.generator, stats=stats, eval_every=t.eval_every, select_by=t.select_by,
                          patience=t.patience, ema=t.ema, record=_param_error_recorder(cfg, data.truth))
    res = train(trainer, data.x_train.float().to(device), steps=t.steps,
                seed_rng=torch_generator(cfg.seed, "batches", device=device),
                log_every=t.log_every, checkpoint_every=t.checkpoint_every,
                checkpoint_path=run_dir / "checkpoint.pt", fingerprint=fingerprint(cfg),
                resume=state is not None, state=state, progress=cfg.progress, desc=f"{m.name}/{d.name}",
                on_log=tracker.log, monitor=monitor, on_eval=tracker.log_eval)
    model = trainer.generator.cpu()
    timing = {"train_time_s": res.train_time_s}
    if monitor is not None:
        timing["periodic_eval_time_s"] = monitor.eval_time_s
    record.update(status=res.status, steps=res.steps, reason=res.reason,
                  diverged_step=res.diverged_step, resumed_from=res.resumed_from)
    mlp = OmegaConf.to_container(m.generator_mlp, resolve=True)
    selected = ema = None
    if monitor is not None:
        selected = monitor.selected_generator()
        ema = None if monitor.ema_generator is None else monitor.ema_generator.cpu()
    if res.status == "completed":
        save_checkpoint(run_dir / "generator.pt", generator_record(model, fam, fkw, mlp))
        if selected is not None:
            save_checkpoint(run_dir / "generator_selected.pt", generator_record(selected, fam, fkw, mlp))
    return Fitted(model, res.history, res.evals, selected, ema, monitor), timing


def _evaluate_all(cfg: DictConfig, fitted: Fitted, data: Data, record: dict) -> dict[str, float]:
    """The shared evaluation on the test split (read here only) of the final, selected and EMA models;
    returns the timings.

    ``objective`` (what the entry point returns to a hyperparameter search) is the validation
    statistic of the selected checkpoint, or of the final model when there is no selection.
    """
    from pfbench.metrics.evaluate import evaluate
    from pfbench.selection import ValidationStatistics

    timing: dict[str, float] = {}
    if fitted.monitor is not None and fitted.monitor.eval_every is not None:
        record["selection"] = fitted.monitor.summary()
        record["objective"] = record["selection"]["value"]
    elif data.x_val is not None and record["status"] != "diverged":
        vals = ValidationStatistics(data.x_val, cfg.seed)(fitted.model)
        record["validation"] = vals
        record["objective"] = vals[cfg.model.train.select_by]
    if record["status"] == "diverged":
        record["metrics"] = {"eval_status": f"skipped: run diverged ({record['reason']})"}
        return timing
    # the selected checkpoint is often the final generator itself (raw, last step): the same parameters
    # give the same numbers, so it is not evaluated twice
    best = fitted.monitor.best if fitted.monitor is not None else None
    selected_is_final = best is not None and best["variant"] == "raw" and best["step"] == record["steps"]
    memo: dict[str, Any] = {}  # floors, references and fresh-draw nulls: the same for every generator here
    for key, model in (("metrics", fitted.model), ("metrics_selected", fitted.selected), ("metrics_ema", fitted.ema)):
        if model is None:
            continue
        if key == "metrics_selected" and selected_is_final:
            record[key] = {k: v for k, v in record["metrics"].items() if not k.startswith(("inversion_", "cs_"))}
            continue
        t0 = time.perf_counter()
        metrics, eval_timing = pop_timings(evaluate(model, data.x_test, truth=data.truth, cfg=cfg.eval, seed=cfg.seed,
                                                    progress=cfg.progress, x_train=data.x_train, memo=memo))
        suffix = "" if key == "metrics" else key[len("metrics"):]
        timing[f"eval{suffix}_time_s"] = time.perf_counter() - t0
        if key == "metrics":
            timing.update(eval_timing)
            tasks, task_timing = run_tasks(cfg, model, data.truth)
            metrics.update(tasks)
            timing.update(task_timing)
        record[key] = metrics
    return timing


def run_tasks(cfg: DictConfig, model, truth) -> tuple[dict[str, Any], dict[str, float]]:
    """Downstream tasks (tasks.*) on the fitted generator: its inversion (the task itself says when the
    generator is not a ReLU net) and compressed sensing through it. Returns (results, timings)."""
    out: dict[str, Any] = {}
    timing: dict[str, float] = {}
    inv, cs = cfg.tasks.inversion, cfg.tasks.compressed_sensing
    if inv.enabled:
        from pfbench.tasks.inversion import inversion_task

        t0 = time.perf_counter()
        res, _ = pop_timings(inversion_task(model, n=inv.n, seed=cfg.seed, noise_std=inv.noise_std,
                                            method=inv.method))
        out.update(res)
        if not str(res.get("inversion_status", "")).startswith("skipped"):
            timing["inversion_time_s"] = time.perf_counter() - t0
    if cs.enabled:
        if truth is None:
            out["cs_status"] = "skipped: no true distribution to draw signals from (data=file)"
        else:
            from pfbench.tasks.compressed_sensing import compressed_sensing_task

            res, task_timing = pop_timings(compressed_sensing_task(
                model, truth, ms=list(cs.ms), n=cs.n, seed=cfg.seed, noise_std=cs.noise_std,
                restarts=cs.restarts, steps=cs.steps))
            out.update(res)
            timing.update(task_timing)
    return out, timing


def _plots(cfg, run_dir: Path, model, x_test, history, evals, record, tracker) -> None:
    from pfbench.plots import plot_curves, plot_samples

    with torch.no_grad():
        fake = model.sample_batched(min(2000, len(x_test)), torch_generator(cfg.seed, "plot")).double()
    fake_np = fake.numpy() if torch.isfinite(fake).all() else None
    title = f"{record['method']} on {record['data']} (seed {record['seed']})"
    paths = {"samples": plot_samples(x_test.numpy(), fake_np, run_dir / "samples.png", title)}
    curves = plot_curves(history, run_dir / "curves.png", title, evals=evals,
                         selected_step=(record.get("selection") or {}).get("step"))
    if curves:
        paths["curves"] = curves
    tracker.log_images(paths)


def _is_multirun() -> bool:
    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


def objective(record: dict) -> float:
    """The float a hyperparameter search minimizes: the validation statistic of the selected model.

    ``inf`` for a run without one (failed, diverged, skipped, or no validation split), so a search
    ranks such trials last instead of stopping.
    """
    v = record.get("objective")
    if record.get("status") not in ("completed", "not_converged") or v is None:
        return math.inf
    v = float(v)
    return v if math.isfinite(v) else math.inf


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """One job. Every line it writes to stderr also goes to Hydra's job log ``<run dir>/train.log``, and
    progress bars write periodic plain lines where stderr is not a terminal (:func:`pfbench.tracking.log_stderr`)."""
    from pfbench.tracking import log_stderr

    with log_stderr():
        return _job(cfg)


def _job(cfg: DictConfig) -> float:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        if "model" in cfg and HydraConfig.get().runtime.choices.get("model") is None:
            # model.* values (debug=fast's) without a method: there is no run to shorten
            raise ConfigError("no method chosen: add +model=<name>, e.g. +model=wgan (see conf/model/)")
        record = _profiled(cfg, run_dir) if cfg.get("profile") is True else run(cfg, run_dir)
    except ConfigError as e:
        print(f"pfbench: error: {e}", file=sys.stderr)
        if _is_multirun():
            # the sweep's progress and report count the job as failed, but a refused job must not
            # write where another run's results (or another run) already are
            if not isinstance(e, RunDirError) and not existing_results(run_dir, _hydra_wrote()):
                write_json(run_dir / "metrics.json", {"status": "failed", "reason": f"config error: {e}"})
            return math.inf
        sys.exit(2)
    status = record["status"]
    if status == "skipped":
        print(f"pfbench: skipped: {record['reason']}", file=sys.stderr)
        return math.inf
    line = f"pfbench: {status}: {record['method']} on {record['data']} -> {run_dir}"
    print(line if record.get("reason") is None else f"{line} ({record['reason']})", file=sys.stderr)
    if status == "failed" and not _is_multirun():
        sys.exit(1)
    return objective(record)


PROFILE_TOP = 40  # functions listed in profile.txt, by cumulative and by own time


def _profiled(cfg: DictConfig, run_dir: Path) -> dict:
    """``profile=true`` (debug=profile): the run under cProfile; ``<run dir>/profile.txt`` lists the top
    functions by cumulative and by own time, ``profile.prof`` keeps every number (``python -m pstats``,
    snakeviz). A refused run (ConfigError) writes no profile, like nothing else."""
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    record = prof.runcall(run, cfg, run_dir)
    prof.dump_stats(str(run_dir / "profile.prof"))
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf).strip_dirs()
    buf.write(f"cProfile of this run (pfbench profile=true): {stats.total_calls} calls, {stats.total_tt:.2f} s of "
              f"profiled time, main thread only. Every function: python -m pstats profile.prof (or snakeviz).\n\n"
              f"Top {PROFILE_TOP} by cumulative time:\n")
    stats.sort_stats("cumulative").print_stats(PROFILE_TOP)
    buf.write(f"Top {PROFILE_TOP} by own time:\n")
    stats.sort_stats("tottime").print_stats(PROFILE_TOP)
    write_text(run_dir / "profile.txt", buf.getvalue())
    print(f"pfbench: profile: {run_dir / 'profile.txt'}", file=sys.stderr)
    return record


def cli(argv: list[str] | None = None) -> None:
    """``python -m pfbench.train`` and the ``pfbench-train`` console script: Hydra's main, with its
    composition and output-directory errors (unknown keys, options and groups, unparsable overrides, an
    unwritable output directory) turned into one ``pfbench: error:`` line and exit code 2 before any
    work. ``HYDRA_FULL_ERROR=1`` keeps Hydra's own report. ``experiment=``, ``debug=`` and
    ``hparams_search=`` are taken without the +, and ``ckpt_path=`` continues a run
    (:func:`pfbench.hydra_errors.conventional_argv`)."""
    from pfbench.hydra_errors import conventional_argv, explain

    argv = sys.argv[1:] if argv is None else argv
    try:
        hydra_argv = conventional_argv(argv)
    except ConfigError as e:
        print(f"pfbench: error: {e}", file=sys.stderr)
        sys.exit(2)
    if hydra_argv != argv:
        sys.argv[1:] = hydra_argv  # what hydra.main parses
    user_full = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises instead of printing, so the error is ours to report
    try:
        main()
    except Exception as e:
        msg = None if user_full else explain(e, argv, task_code=getattr(main, "__wrapped__", main).__code__)
        if msg is None:
            raise
        print(f"pfbench: error: {' '.join(msg.split())}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli()

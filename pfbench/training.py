"""The training loop shared by every learned generator: progress, checkpoints, resume, divergence.

Exact resume: a checkpoint holds module and optimizer states, the batch generator's RNG state,
the step, the loss history and the losses summed since the last history record (a checkpoint
between two records). Training draws every batch and latent from that one generator, so a run
resumed from step s replays steps s+1.. exactly as an uninterrupted run would (same seed, same
thread count): the same parameters and the same history.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from pfbench import ConfigError
from pfbench.io import load_checkpoint, save_checkpoint


@dataclass
class TrainResult:
    status: str  # completed | diverged
    steps: int
    history: list[dict] = field(default_factory=list)
    reason: str | None = None
    diverged_step: int | None = None
    resumed_from: int | None = None
    train_time_s: float = 0.0
    evals: list[dict] = field(default_factory=list)  # the monitor's periodic evaluations


def _state(trainer, rng: torch.Generator, step: int, history: list, fingerprint: str, monitor=None,
           elapsed_s: float = 0.0, pending: tuple[dict, int] = ({}, 0)) -> dict:
    sums, count = pending
    return {
        "step": step,
        "fingerprint": fingerprint,
        "modules": {k: m.state_dict() for k, m in trainer.modules().items()},
        "optimizers": {k: o.state_dict() for k, o in trainer.optimizers().items()},
        "rng": rng.get_state(),
        "history": history,
        "monitor": None if monitor is None else monitor.state_dict(),
        "elapsed_s": elapsed_s,
        # losses summed since the last history record: the next record averages over all of them
        "pending_losses": {k: v.detach().cpu() for k, v in sums.items()},
        "pending_count": count,
    }


def _restore(trainer, rng: torch.Generator, state: dict, path: Path, fingerprint: str) -> None:
    if state.get("fingerprint") != fingerprint:
        raise ConfigError(
            f"checkpoint {path} was written by a different configuration (data, model or seed changed); "
            f"resume with the original overrides, or set overwrite=true to start over"
        )
    try:
        for k, m in trainer.modules().items():
            m.load_state_dict(state["modules"][k])
        for k, o in trainer.optimizers().items():
            o.load_state_dict(state["optimizers"][k])
        rng.set_state(state["rng"])
    except (KeyError, RuntimeError, ValueError) as e:
        raise ConfigError(f"checkpoint {path} does not match this model ({e}); set overwrite=true to start "
                          f"over") from None


def _non_finite(trainer) -> str | None:
    for name, mod in trainer.modules().items():
        for pname, p in mod.named_parameters():
            if not torch.isfinite(p).all():
                return f"{name}.{pname}"
    return None


def train(trainer, x_train: torch.Tensor, *, steps: int, seed_rng: torch.Generator, log_every: int,
          checkpoint_every: int, checkpoint_path: str | Path, fingerprint: str, resume: bool = False,
          progress: bool = True, desc: str = "train", on_log: Callable[[int, dict], None] | None = None,
          monitor=None, on_eval: Callable[[int, dict], None] | None = None, state: dict | None = None
          ) -> TrainResult:
    """Run ``steps`` trainer steps on ``x_train`` with checkpoints every ``checkpoint_every``.

    A non-finite loss (checked every step) or parameter (checked every ``log_every`` steps) ends
    the run with ``status='diverged'`` and the step; the last checkpoint is kept, not overwritten.
    ``monitor`` (:class:`pfbench.selection.Monitor`) updates its EMA after every step, evaluates
    when due (its records carry ``elapsed_s``: training time so far, evaluations excluded) and may
    stop the run early; its state is part of the checkpoint, so a resumed run selects exactly as an
    uninterrupted one. ``state``: the checkpoint already loaded (and its fingerprint checked) by the
    caller, to resume from instead of reading ``checkpoint_path`` again.
    """
    path = Path(checkpoint_path)
    rng = seed_rng
    history: list[dict] = []
    start = 0
    resumed_from = None
    sums: dict[str, torch.Tensor] = {}
    count = 0
    if state is not None or path.exists():
        if not resume:
            raise ConfigError(
                f"{path} already exists; set resume=true to continue that run, or use a new hydra.run.dir"
            )
        state = load_checkpoint(path) if state is None else state
        _restore(trainer, rng, state, path, fingerprint)
        start, history = int(state["step"]), list(state["history"])
        resumed_from = start
        if monitor is not None:
            monitor.load_state_dict(state.get("monitor") or {})
        elapsed0 = float(state.get("elapsed_s") or 0.0)
        sums = {k: v.to(x_train.device) for k, v in (state.get("pending_losses") or {}).items()}
        count = int(state.get("pending_count") or 0)
    else:
        elapsed0 = 0.0

    t0 = time.perf_counter()

    def elapsed() -> float:
        """Training seconds so far, the monitor's evaluations excluded (continued across a resume)."""
        return elapsed0 + time.perf_counter() - t0 - (monitor.eval_time_s if monitor is not None else 0.0)

    bar = tqdm(total=steps, initial=start, desc=desc, disable=not progress, file=sys.stderr,
               dynamic_ncols=True, mininterval=0.5, unit="step")
    result = TrainResult("completed", start, history, resumed_from=resumed_from)
    try:
        for step in range(start + 1, steps + 1):
            out = trainer.step(x_train, rng)
            bad = [k for k, v in out.items() if not bool(torch.isfinite(v))]
            if bad:
                result = TrainResult("diverged", step, history, f"non-finite {', '.join(bad)} at step {step}",
                                     step, resumed_from)
                break
            for k, v in out.items():
                sums[k] = sums[k] + v if k in sums else v.clone()
            count += 1
            if monitor is not None:
                monitor.after_step(step)
            if step % log_every == 0 or step == steps:
                nan_param = _non_finite(trainer)
                if nan_param:
                    result = TrainResult("diverged", step, history,
                                         f"non-finite parameter {nan_param} at step {step}", step, resumed_from)
                    break
                rec = {"step": step, **{k: float(v) / count for k, v in sums.items()}}
                history.append(rec)
                sums, count = {}, 0
                bar.set_postfix({k: f"{v:.4g}" for k, v in rec.items() if k != "step"}, refresh=False)
                if on_log is not None:
                    on_log(step, rec)
            stop = False
            if monitor is not None and monitor.due(step, steps):
                rec, stop = monitor.evaluate(step, elapsed())
                if on_eval is not None:
                    on_eval(step, rec)
            if step % checkpoint_every == 0 or step == steps or stop:
                save_checkpoint(path, _state(trainer, rng, step, history, fingerprint, monitor, elapsed(),
                                             (sums, count)))
            bar.update(1)
            result.steps = step
            if stop:
                break
    finally:
        bar.close()
    result.train_time_s = time.perf_counter() - t0
    if monitor is not None:
        result.evals = monitor.history
    return result

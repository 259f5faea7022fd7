"""Hydra's composition errors (and its output-directory failures) as one ``pfbench: error:`` line, and the
plain spelling of the groups that are added on the command line (:func:`conventional_argv`).

Hydra reports a typo such as ``data.n_tarin=5`` or ``+model=wgann`` in 5-17 lines with exit code 1.
:func:`explain` turns such an exception into one line that names the key or option and lists the
valid ones: options by scanning ``conf/<group>/*.yaml``, keys from the composed configuration (the
chosen model's own keys) or, failing that, from the schemas in :mod:`pfbench.config`.
"""

from __future__ import annotations

import difflib
import os
import re
import traceback
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pfbench import CONF_DIR, ConfigError


def _overrides(argv: list[str]) -> list[str]:
    try:
        from hydra._internal.utils import get_args_parser

        return list(get_args_parser().parse_args(argv).overrides)
    except BaseException:  # argparse exits on bad flags; Hydra then reports them itself
        return [a for a in argv if not a.startswith("-")]


#: config groups outside the root defaults list that lightning-hydra-template's users write without a +
PLAIN_GROUPS = ("experiment", "debug", "hparams_search")


def _ckpt_path(value: str, argv: list[str], overrides: set[str]) -> list[str]:
    """lightning-hydra-template's ``ckpt_path=<checkpoint or run dir>`` as pfbench's own spelling of the
    same thing, ``resume=true hydra.run.dir=<run dir>`` (the rest of the command must be the run's own)."""
    if any(a in ("-m", "--multirun") for a in argv):
        raise ConfigError(f"ckpt_path={value} continues one run; it does not combine with -m/--multirun "
                          "(each job of a sweep resumes with resume=auto)")
    if any(_key_of(o) in ("hydra.run.dir", "resume") for o in overrides):
        raise ConfigError(f"ckpt_path={value} already sets resume=true and hydra.run.dir; give one or the other")
    path = Path(value).expanduser()
    if not value or not path.exists():
        raise ConfigError(f"ckpt_path={value}: no such file or directory; give an earlier run's directory "
                          "or its checkpoint.pt")
    run_dir = path if path.is_dir() else path.parent
    if not (run_dir / "checkpoint.pt").is_file():
        raise ConfigError(f"ckpt_path={value}: {run_dir} holds no checkpoint.pt to continue from")
    return ["resume=true", f"hydra.run.dir={run_dir.resolve()}"]


def conventional_argv(argv: list[str]) -> list[str]:
    """``experiment=X``, ``debug=X`` and ``hparams_search=X`` as ``+experiment=X`` etc. (the groups are added,
    not in the defaults list, so both spellings compose the same config), and ``+debug=X`` moved after the
    other overrides, so that debug's settings win over the chosen ``+model``'s file whatever the order
    (value overrides such as ``model.train.steps=50`` still win over both). ``ckpt_path=P`` becomes
    ``resume=true hydra.run.dir=<P's run dir>``; a bad one raises :class:`ConfigError`."""
    overrides = set(_overrides(argv))
    out: list[str] = []
    last: list[str] = []
    end = 0  # after the last override (the overrides are one run of positional arguments, flags around them)
    for a in argv:
        if a in overrides and a.startswith("ckpt_path="):
            out += _ckpt_path(a.split("=", 1)[1], argv, overrides)
            end = len(out)
            continue
        m = re.match(r"(\+?)(\w+)=", a) if a in overrides else None
        if m and m.group(2) in PLAIN_GROUPS:
            a = a if m.group(1) else f"+{a}"
            if m.group(2) == "debug":
                last.append(a)
                end = len(out)
                continue
        out.append(a)
        if a in overrides or a.lstrip("+") in overrides:
            end = len(out)
    return out[:end] + last + out[end:]


def _key_of(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~").split("@", 1)[0]


def _options(group: str, hydra_msg: str) -> list[str]:
    """Valid choices of a config group: conf/<group>/*.yaml, and those Hydra's plugins add (its message lists them)."""
    d = Path(CONF_DIR) / group
    opts = {p.stem for p in d.glob("*.yaml")} if d.is_dir() else set()
    m = re.search(r"Available options in '[^']*':\n((?:\t.*\n?)+)", hydra_msg)
    if m:
        opts |= {ln.strip() for ln in m.group(1).splitlines() if ln.strip()}
    return sorted(opts)


def _close(word: str, choices: list[str]) -> str:
    hit = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {hit[0]}?)" if hit else ""


def _missing_option(e: Exception, argv: list[str]) -> str | None:
    msg = str(e)
    m = re.search(r"Could not find '([^']+)'", msg)
    if not m:
        return None
    path = m.group(1)
    group, _, option = path.rpartition("/")
    if not group:
        return None
    opts = _options(group, msg)
    given = next((o for o in _overrides(argv) if _key_of(o) == group), f"{group}={option}")
    return (f"{given}: there is no '{option}' in config group '{group}'{_close(option, opts)}; "
            f"valid choices: {', '.join(opts) if opts else '(none found)'}")


def _composed(overrides: list[str]) -> DictConfig | None:
    """The configuration these overrides compose to (None if they do not compose)."""
    overrides = conventional_argv(overrides)
    try:
        from hydra import compose, initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=overrides, return_hydra_config=True)
    except Exception:
        return None


def _valid_keys(parent: str, overrides: list[str], bad_key: str) -> list[str] | None:
    cfg = _composed([o for o in overrides if _key_of(o) != bad_key])
    node: Any = None
    if cfg is not None:
        node = OmegaConf.select(cfg, parent) if parent else cfg
    if isinstance(node, DictConfig):
        return sorted(str(k) for k in node.keys())
    from pfbench.config import SCHEMAS, TOP_LEVEL
    from pfbench.config import _valid_keys as schema_keys

    head, *rest = parent.split(".") if parent else [""]
    if not parent:
        return sorted(TOP_LEVEL)
    if head in SCHEMAS:
        try:
            return schema_keys(SCHEMAS[head], rest) or None
        except Exception:
            return None
    return None


def _unknown_key(e: Exception, argv: list[str]) -> str | None:
    m = re.match(r"Could not override '([^']+)'", str(e))
    cause = e.__cause__
    if not m or not isinstance(cause, OmegaConfBaseException) or not str(cause).startswith("Key '"):
        return None
    bad_key = m.group(1)
    missing = str(getattr(cause, "full_key", None) or bad_key)
    parent, _, leaf = missing.rpartition(".")
    overrides = _overrides(argv)
    valid = _valid_keys(parent, overrides, bad_key)
    given = next((o for o in overrides if _key_of(o) == bad_key), bad_key)
    where = f" (in {given})" if missing != bad_key else ""
    model = next((o.split("=", 1)[1] for o in overrides if _key_of(o) == "model" and "=" in o), None)
    chosen = f" for +model={model}" if parent == "model" and model else ""
    if valid is not None and leaf in valid and _has_sweep(overrides):
        return (f"{given}: '{missing}' does not exist when a multirun applies its common overrides (the "
                f"group is chosen per job); write ++{given.lstrip('+')} so that each job sets it")
    hint = _close(leaf, valid or [])
    if hint:
        hint = hint.replace("mean ", f"mean {parent}." if parent else "mean ")
    return (f"unknown config key '{missing}'{where}{hint}; valid keys under {parent or 'the top level'}{chosen}: "
            f"{valid if valid is not None else '(see conf/)'}")


def _has_sweep(overrides: list[str]) -> bool:
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        return any(o.is_sweep_override() for o in OverridesParser.create().parse_overrides(overrides))
    except Exception:
        return False


def _parse_error(e: Exception) -> str:
    lines = [ln for ln in str(e).splitlines() if ln.strip() and not ln.startswith("See https")]
    m = re.match(r"Error parsing override '(.*)'", lines[0]) if lines else None
    if m:
        detail = "; ".join(lines[1:])
        return (f"cannot parse the override '{m.group(1)}'{f' ({detail})' if detail else ''}; write key=value, "
                f"+key=value or group=option")
    return f"cannot parse the overrides ({'; '.join(lines)}); write key=value, +key=value or group=option"


def _oserror(e: BaseException) -> OSError | None:
    if isinstance(e, OSError):
        return e
    if isinstance(e.__cause__, OSError):  # logging's "Unable to configure handler 'file'"
        return e.__cause__
    return None


def _one_line(e: BaseException) -> str:
    text = "; ".join(ln.strip() for ln in str(e).splitlines()
                     if ln.strip() and not ln.startswith(("See https", "Config search path", "\tprovider=")))
    if isinstance(e.__cause__, OmegaConfBaseException):
        text += f" ({str(e.__cause__).splitlines()[0]})"
    return text or type(e).__name__


def explain(e: BaseException, argv: list[str], task_code=None) -> str | None:
    """One line for an error Hydra raised before (or around) the task, or None to let it propagate.

    ``task_code`` is the code object of the task function: an OSError raised inside it is the run's
    own (reported by the run), one raised outside it is Hydra creating the output directory or job log.
    """
    from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException, OverrideParseException

    if isinstance(e, ConfigError):
        return str(e)
    if isinstance(e, MissingConfigException):
        return _missing_option(e, argv) or _one_line(e)
    if isinstance(e, OverrideParseException):
        return _parse_error(e)
    if isinstance(e, ConfigCompositionException):
        return _unknown_key(e, argv) or _one_line(e)
    if isinstance(e, (HydraException, OmegaConfBaseException)):
        return _one_line(e)
    if isinstance(e, RuntimeError) and 'Could not detect "srun"' in str(e):
        return ("hydra/launcher=slurm needs SLURM's srun on PATH (not found here); run the sweep on a SLURM login "
                "node, or use hydra/launcher=local_pool (or submitit_local) on this machine")
    os_err = _oserror(e)
    in_task = task_code is not None and any(f.f_code is task_code for f, _ in traceback.walk_tb(e.__traceback__))
    if os_err is not None and not in_task:
        where = os_err.filename or "the output directory"
        if Path("/.dockerenv").exists() and str(where).startswith("/outputs"):  # the images' volume
            return (f"cannot write to {where} ({os_err.strerror or type(os_err).__name__}): the directory mounted "
                    f"at /outputs is not writable by uid {os.getuid()}; run with --user \"$(id -u):$(id -g)\" "
                    "(docker/README.md), or mount a named volume there")
        return (f"cannot write to {where} ({os_err.strerror or type(os_err).__name__}); choose a writable output "
                f"directory with hydra.run.dir=... (hydra.sweep.dir=... for -m), or set PFBENCH_OUTPUT_DIR")
    return None

"""Turn a finished Optuna search into a model config: conf/model/<method>_tuned.yaml.

    python scripts/apply_tuning.py multirun/<date>/<time>            # the search's sweep directory
    python scripts/apply_tuning.py <sweep dir> --out /elsewhere/wgan_gp_tuned.yaml

Reads ``<sweep dir>/optimization_results.yaml`` (written by Hydra's Optuna sweeper when the search
ends) and the trials' ``.hydra/`` records beside it (which method, which search config, which
budget), and writes a config that composes as ``+model=<method>_tuned``:

    defaults: [<method>, _self_]     # the method's own config, then the searched values over it
    tuned: "<search, trials, budget, best objective, sweep>"
    train: {lr_g: ..., lr_d: ...}

Only the searched values are written; everything else (steps, eval_every, ...) stays the method's
default or whatever the run sets. Re-run the tuned method on fresh seeds (the searches use seed
1000, the experiments seeds 0..4). Any problem with the search (missing or malformed results, no
trial records, a multi-objective study, no finite best value) is one line on stderr, exit 2, and
nothing is written; the file is replaced atomically.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from pfbench import CONF_DIR

RESULTS = "optimization_results.yaml"


class TuningError(Exception):
    """A problem with the search's files: reported as one line, nothing written."""


def _load_yaml(path: Path, what: str) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise TuningError(f"{path}: not found ({what})") from None
    except OSError as e:
        raise TuningError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise TuningError(f"{path}: malformed YAML{where}: {problem}") from None


def _get(d: Any, dotted: str, default: Any = None) -> Any:
    for k in dotted.split("."):
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def read_results(sweep: Path) -> tuple[Path, float, dict[str, Any], list[str]]:
    """(sweep dir, best value, {model.* key: typed value}, the best trial's override strings)."""
    path = sweep if sweep.is_file() else sweep / RESULTS
    if not path.exists():
        if not sweep.exists():
            raise TuningError(f"{sweep}: no such directory")
        raise TuningError(f"{path}: not found (the search has not finished, or {sweep} is not an Optuna sweep "
                          "directory; run one with: python -m pfbench.train -m +hparams_search=<method>)")
    res = _load_yaml(path, "the Optuna sweeper's results")
    if not isinstance(res, dict):
        raise TuningError(f"{path}: malformed: expected a mapping with best_params and best_value")
    if "solutions" in res and "best_params" not in res:
        raise TuningError(f"{path}: a multi-objective study (Pareto solutions); only a single objective can be applied")
    params, value = res.get("best_params"), res.get("best_value")
    if not isinstance(params, dict) or not params:
        raise TuningError(f"{path}: malformed: best_params must be a non-empty mapping, got {params!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TuningError(f"{path}: malformed: best_value must be a number, got {value!r}")
    if not math.isfinite(value):
        raise TuningError(f"{path}: best_value is {value}: every trial failed or diverged; nothing to apply")

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    typed: dict[str, Any] = {}
    strings: list[str] = []
    for key, val in params.items():
        s = f"{key}={val}"  # exactly the override the sweeper gave the trial
        try:
            o = parser.parse_override(s)
        except HydraException as e:
            raise TuningError(f"{path}: malformed best_params entry {s!r}: {str(e).splitlines()[0]}") from None
        name = o.key_or_group
        if o.is_sweep_override() or o.is_delete() or o.package is not None:
            raise TuningError(f"{path}: best_params entry {s!r} is not a plain value")
        if not name.startswith("model."):
            raise TuningError(f"{path}: best_params key {key!r} is not a model.* setting; a model config can only "
                              "hold model settings (search data or seed keys in the experiment instead)")
        typed[name[len("model."):]] = o.value()
        strings.append(s)
    return path.parent, float(value), typed, strings


def read_trials(sweep: Path, best: list[str]) -> tuple[dict, dict, int, int]:
    """(best trial's Hydra record, its composed config, its job number, number of trials found)."""
    trials = {}
    for hy in sorted(sweep.glob("*/.hydra/hydra.yaml")):
        rec = _load_yaml(hy, "a trial's Hydra record")
        if not isinstance(rec, dict) or not isinstance(rec.get("hydra"), dict):
            raise TuningError(f"{hy}: malformed: no hydra mapping")
        trials[hy.parent.parent] = rec["hydra"]
    if not trials:
        raise TuningError(f"{sweep}: no trial records (<n>_<model>_.../.hydra/hydra.yaml) beside {RESULTS}")
    models = sorted({str(_get(h, "runtime.choices.model")) for h in trials.values()})
    if len(models) != 1 or models[0] == "None":
        raise TuningError(f"{sweep}: the trials ran +model={','.join(models)}; a search must tune one method")
    matches = [(int(_get(h, "job.num", 10**9)), d, h) for d, h in trials.items()
               if set(best) <= set(_get(h, "overrides.task", []) or [])]
    if not matches:
        raise TuningError(f"{sweep}: no trial directory ran the best parameters {best} (files from another search?)")
    num, trial_dir, hy = min(matches, key=lambda t: t[0])
    cfg = _load_yaml(trial_dir / ".hydra" / "config.yaml", "the best trial's composed config")
    if not isinstance(cfg, dict):
        raise TuningError(f"{trial_dir / '.hydra' / 'config.yaml'}: malformed: expected a mapping")
    return hy, cfg, num, len(trials)


def describe(sweep: Path, hy: dict, cfg: dict, num: int, n_found: int, value: float) -> str:
    """The provenance string: search config, trials, budget, best objective, sweep directory."""
    sw = hy.get("sweeper") or {}
    search = _get(hy, "runtime.choices.hparams_search")
    sampler = str(_get(sw, "sampler._target_", "?")).rsplit(".", 1)[-1].replace("Sampler", "")
    seed = _get(sw, "sampler.seed")
    head = f"hparams_search={search}" if search else f"optuna study {sw.get('study_name')}"
    n_trials = sw.get("n_trials", n_found)
    t, d = _get(cfg, "model.train", {}) or {}, cfg.get("data") or {}
    select_by = t.get("select_by", "objective")
    return (f"{head} ({sampler}{f' seed {seed}' if seed is not None else ''}, {n_trials} trials, batches of "
            f"{sw.get('n_jobs', '?')}); data={d.get('name')} n_train={d.get('n_train')} n_val={d.get('n_val')} "
            f"seed={cfg.get('seed')}; {t.get('steps')} steps x batch {t.get('batch_size')}, "
            f"eval_every={t.get('eval_every')}; best {select_by}={value:.6g} (trial {num}); "
            f"sweep {sweep.parent.name}/{sweep.name}")


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, val in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise TuningError(f"best_params set both model.{p} and keys under it")
        node[leaf] = val
    return out


class _Dumper(yaml.SafeDumper):
    """Block mappings, flow lists (``betas: [0.5, 0.9]``), as in the model configs."""


_Dumper.add_representer(list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))


def render(method: str, desc: str, values: dict[str, Any], results: Path) -> str:
    body = yaml.dump(nest(values), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1000)
    return (f"# {method}, tuned: {desc}\n"
            f"# Written by scripts/apply_tuning.py from {results}; only the searched values are set here.\n"
            f"# Use it as +model={method}_tuned, on fresh seeds (the experiments use seeds 0..4, searches seed 1000).\n"
            f"defaults:\n  - {method}\n  - _self_\n\n"
            f"tuned: {json.dumps(desc)}\n"
            f"{body}")


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # a config file like the others, not mkstemp's 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def apply(sweep: Path, out: Path | None = None) -> Path:
    sweep_dir, value, values, strings = read_results(sweep)
    hy, cfg, num, n_found = read_trials(sweep_dir, strings)
    method = str(_get(hy, "runtime.choices.model"))
    desc = describe(sweep_dir.resolve(), hy, cfg, num, n_found, value)
    out = out or CONF_DIR / "model" / f"{method}_tuned.yaml"
    if out.resolve() == (CONF_DIR / "model" / f"{method}.yaml").resolve():
        raise TuningError(f"{out}: refusing to overwrite the method's own config")
    text = render(method, desc, values, sweep_dir / RESULTS)
    back = yaml.safe_load(text)  # what Hydra will read must be what was searched
    flat = dict(_flatten({k: v for k, v in back.items() if k not in ("defaults", "tuned")}))
    if back.get("defaults") != [method, "_self_"] or back.get("tuned") != desc or flat != values:
        raise TuningError(f"{out}: the rendered YAML does not read back as the best parameters {values}")
    write_atomic(out, text)
    return out


def _flatten(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep", type=Path, help=f"the search's sweep directory (or its {RESULTS})")
    ap.add_argument("--out", type=Path, default=None,
                    help="where to write (default: conf/model/<method>_tuned.yaml of this repository)")
    args = ap.parse_args(argv)
    try:
        out = apply(args.sweep, args.out)
    except TuningError as e:
        print(f"apply_tuning: error: {e}", file=sys.stderr)
        return 2
    name = out.stem
    print(f"apply_tuning: wrote {out}  (use +model={name}" +
          (")" if out.parent.resolve() == (CONF_DIR / "model").resolve()
           else f" with hydra.searchpath=[file://{out.parent.parent.resolve()}])"))
    print(out.read_text().split("\n", 1)[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m pfbench.report <sweep dir> [--budgets 1500,5000,15000]``: runs -> results.csv, report.md, figures.

Reads every ``metrics.json`` under the directory (with the run's ``config.yaml`` and ``history.json``),
so it can be re-run while a sweep is still going, and shows failed, diverged and excluded runs with
their reasons.

Budgets. A learned method is trained once per (method, n_train, seed) with periodic evaluation
(``model.train.eval_every``); its result at a budget of B generator steps is the checkpoint that the
validation statistic selects among the evaluations at steps <= B (:func:`budget_selection`: the
selection reads validation numbers only), and its parameter error is the one recorded in
``history.json`` for that evaluation. Estimators have no steps: one result per run, with its fit time.

Every table cell says when runs are missing, ``[k/N]``: k usable of the N runs of that method and
n_train; the runs left out (failed, diverged, skipped, a null/non-finite metric, ...) are listed under
the table with the reason, never dropped silently. Numbers have 3 significant digits; cells are
median (mean ± 95% t half-width) over seeds; times are training seconds (periodic evaluations
excluded) or fit time, never the worker's start-up.

Method labels are words joined by ``-`` (``wgan-gp``, ``jsgan-minimax``, ``jsgan-nonsat``), with
``-tuned`` and ``+mlp`` for the variants (:func:`method_label`), the same in tables, legends and
``results.csv``; config names (``+model=jsgan_minimax_tuned``) are unchanged.

Outputs (in ``<sweep dir>/report`` unless ``--out``):

- ``results.csv``: one row per run; flat columns (``cfg.*`` config, ``metrics.*``, ``fit.*``, ``timing.*``,
  ``budget_<B>.*`` the selected checkpoint at each budget);
- ``report.md``: the headline; per data family, the selected-checkpoint parameter error by budget and
  n_train, the final / selected / EMA checkpoints, the rank correlation of each validation statistic
  with the parameter error, all test metrics of the final models with the noise floors in their own
  rows, the calibrated verdicts; the skipped, failed and diverged runs with their reasons;
- ``headline.md``: the headline block (caption and tables) that ``scripts/update_readme_headline.py``
  puts in the README;
- ``tables/*.tex``: the same tables as LaTeX booktabs ``tabular``s (``headline_by_n``,
  ``headline_by_budget``, ``<family>_budgets``, ``<family>_checkpoints``, ``<family>_metrics``,
  ``<family>_verdicts``);
- ``param_error_vs_steps.png``, ``param_error_vs_time.png`` (time to accuracy), ``param_error_vs_n.png``,
  ``distance_vs_n.png`` (medians over seeds, interquartile bars, log-log slopes, noise floors),
  ``time_to_accuracy.png`` (one point per run) and ``samples_<family>.png``; one fixed color and
  marker per method in every figure (:func:`method_style`), one legend per figure beside the panels.
"""

from __future__ import annotations

import argparse
import colorsys
import csv
import functools
import hashlib
import json
import math
import re
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import yaml
from scipy import stats

from pfbench import CONF_DIR
from pfbench.metrics.evaluate import REGISTRY
from pfbench.recovery import REFERENCE_METHODS  # the registry itself (no torch, no numerics imported)
from pfbench.tracking import flatten

DISTANCES = tuple(d.key for d in REGISTRY if d.compare_in_report)  # w1, sw, mmd, nn_dist: the metric tables
STATISTICS = ("val_moments", "val_sw")  # as pfbench.selection.STATISTICS (not imported: that needs torch)
ESTIMATOR_METHODS = ("moments", "sos", "relu_moments", *REFERENCE_METHODS)
DEFAULT_BUDGETS = (1500, 5000)
HEADLINE_FAMILY = "quadratic"
HEADLINE_DETAIL_N = 10000


class ReportError(Exception):
    """Nothing to report on (or a bad argument): one line on stderr, exit status 2."""


# ---------------------------------------------------------------------------------------------
# Method labels, and one fixed color and marker per method in every figure
# ---------------------------------------------------------------------------------------------
#
# A method label is lowercase words joined by "-" (``wgan-gp``, ``jsgan-nonsat``, ``relu-moments``),
# with ``-tuned`` for tuned hyperparameters and ``+mlp`` for the generic MLP generator
# (``jsgan-minimax-tuned+mlp``); the config names (``+model=jsgan_minimax_tuned``) are unchanged.

#: loss names shortened in labels (jsgan's default loss)
LOSS_LABELS = {"non_saturating": "nonsat"}
#: base method label -> color; ``+mlp`` and ``-tuned`` variants keep their base method's color
METHOD_COLORS: dict[str, str] = {
    "wgan": "#1f77b4",
    "wgan-gp": "#ff7f0e",
    "jsgan-nonsat": "#2ca02c",
    "jsgan-minimax": "#d62728",
    "vae": "#9467bd",
    "moments": "#000000",
    "sos": "#8c564b",
    "relu-moments": "#e377c2",
    # reference methods (pfbench.baselines): greys, so they read as a backdrop in every figure
    "truth": "#7f7f7f",
    "memorize": "#b0b0b0",
    "gaussian": "#c7c7c7",
}
#: base method label -> marker, so that points of different methods at the same place stay visible
METHOD_MARKERS: dict[str, str] = {
    "wgan": "o", "wgan-gp": "s", "jsgan-nonsat": "v", "jsgan-minimax": "^", "vae": "D",
    "moments": "*", "sos": "P", "relu-moments": "X", "truth": "h", "memorize": "p", "gaussian": "d",
}
_SPARE_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "<", ">", "h")
#: variant -> (line style, marker fill): ``+mlp`` dash-dotted, default (untuned) hyperparameters hollow
VARIANT_STYLES: dict[tuple[bool, bool], tuple[str, str]] = {  # (tuned, mlp)
    (False, False): ("-", "none"),
    (True, False): ("-", "full"),
    (False, True): ("-.", "none"),
    (True, True): ("-.", "full"),
}


class Style(NamedTuple):
    color: str
    linestyle: str
    marker: str
    fill: str  # "full" or "none" (hollow)

    def marker_kw(self) -> dict[str, Any]:
        """Keyword arguments of ``ax.plot`` / ``ax.errorbar`` for this style's markers."""
        return {"color": self.color, "marker": self.marker, "markeredgecolor": self.color,
                "markerfacecolor": self.color if self.fill == "full" else "white"}


def _word(name: Any) -> str:
    return str(name).replace("_", "-")


def split_label(label: str) -> tuple[str, bool, bool]:
    """``jsgan-minimax-tuned+mlp`` -> (``jsgan-minimax``, tuned, mlp)."""
    mlp = label.endswith("+mlp")
    base = label[: -len("+mlp")] if mlp else label
    tuned = base.endswith("-tuned")
    return (base[: -len("-tuned")] if tuned else base), tuned, mlp


ESTIMATOR_LABELS = frozenset(map(_word, ESTIMATOR_METHODS))
REFERENCE_LABELS = frozenset(map(_word, REFERENCE_METHODS))


def _hash(name: str) -> int:
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)


def _hash_color(name: str) -> str:
    h = _hash(name)
    r, g, b = colorsys.hsv_to_rgb((h % 360) / 360.0, 0.55 + (h >> 9) % 4 * 0.1, 0.55 + (h >> 11) % 3 * 0.12)
    return "#{:02x}{:02x}{:02x}".format(*(round(255 * c) for c in (r, g, b)))


@functools.cache
def method_style(label: str) -> Style:
    """The style of a method label in every figure (the same object for the same label).

    Color and marker are the base method's (:data:`METHOD_COLORS`, :data:`METHOD_MARKERS`; an
    unknown method gets both from a hash of its name, the same in every report); variants differ by
    line style (``+mlp`` dash-dotted) and marker fill (default hyperparameters hollow, ``-tuned``
    and estimators filled).
    """
    base, tuned, mlp = split_label(label)
    color = METHOD_COLORS.get(base) or _hash_color(base)
    marker = METHOD_MARKERS.get(base) or _SPARE_MARKERS[_hash(base) % len(_SPARE_MARKERS)]
    ls, fill = VARIANT_STYLES[(tuned or base in ESTIMATOR_LABELS, mlp)]
    return Style(color, ls, marker, fill)


def legend_order(label: str) -> tuple:
    """Learned methods, then estimators, then the reference methods; alphabetical within each."""
    base = split_label(label)[0]
    return (base in REFERENCE_LABELS, base in ESTIMATOR_LABELS, label)


# ---------------------------------------------------------------------------------------------
# Loading runs
# ---------------------------------------------------------------------------------------------


def base_label(method: Any, loss: Any = None) -> str:
    """A method's label: ``wgan_gp`` -> ``wgan-gp``; ``jsgan`` with loss ``non_saturating`` -> ``jsgan-nonsat``."""
    name = _word(method)
    if name == "jsgan" and loss:
        name = f"jsgan-{LOSS_LABELS.get(str(loss), _word(loss))}"
    return name


def method_label(rec: dict) -> str:
    """wgan, wgan-gp, jsgan-minimax, jsgan-nonsat, vae, moments, ...; ``-tuned`` marks tuned
    hyperparameters and ``+mlp`` a generic MLP generator."""
    name = base_label(rec.get("method") or "?", rec.get("loss"))
    if rec.get("tuned") and not name.endswith("-tuned"):
        name += "-tuned"
    if rec.get("generator") == "mlp":
        name += "+mlp"
    return name


def label_from_choice(choice: str) -> str:
    """The method label of a ``+model=<choice>`` config option (``jsgan_minimax_tuned`` -> ``jsgan-minimax-tuned``,
    ``jsgan`` -> ``jsgan-nonsat``)."""
    tuned = choice.endswith("_tuned")
    base = choice[: -len("_tuned")] if tuned else choice
    base = base_label("jsgan", "non_saturating") if base == "jsgan" else _word(base)
    return base + ("-tuned" if tuned else "")


def _data_names() -> list[str]:
    names = {p.stem for p in (CONF_DIR / "data").glob("*.yaml")} | {"quadratic", "polynomial", "relu", "relu_deep"}
    return sorted(names, key=len, reverse=True)  # relu_deep before relu


def parse_run_dir_name(name: str) -> dict[str, Any]:
    """``3_wgan_gp_quadratic_s2`` (sweep job) or ``10-42-07-123456_vae_relu_s0`` (single run) ->
    {"choice", "data", "seed"}; {} when the name has another form."""
    fams = "|".join(re.escape(f) for f in _data_names())
    m = re.fullmatch(rf"[\d-]+_(?P<choice>.+)_(?P<data>{fams})_s(?P<seed>-?\d+)", name)
    if not m:
        return {}
    return {"choice": m["choice"], "data": m["data"], "seed": int(m["seed"])}


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text()) if path.exists() else None
    except (OSError, yaml.YAMLError):
        return None


def recover_identity(run_dir: Path) -> dict[str, Any]:
    """Method label, data, n_train, seed and kind of a job whose metrics.json does not name them
    (a config error, an unreadable file): from Hydra's ``.hydra/config.yaml``, then
    ``.hydra/overrides.yaml`` (``+model=...``), then the directory name."""
    out: dict[str, Any] = {}
    cfg = _read_yaml(run_dir / ".hydra" / "config.yaml")
    if isinstance(cfg, dict):
        m, d = cfg.get("model") or {}, cfg.get("data") or {}
        if isinstance(m, dict) and m.get("name"):
            out["label"] = method_label({"method": m.get("name"), "loss": m.get("loss"), "tuned": m.get("tuned"),
                                         "generator": m.get("generator")})
            out["kind"] = m.get("kind")
        if isinstance(d, dict):
            out.update({k: v for k, v in (("data", d.get("name")), ("n_train", d.get("n_train"))) if v is not None})
        if isinstance(cfg.get("seed"), int):
            out["seed"] = cfg["seed"]
    overrides = _read_yaml(run_dir / ".hydra" / "overrides.yaml")
    if isinstance(overrides, list):
        for o in map(str, overrides):
            key, _, val = o.partition("=")
            key = key.lstrip("+~")
            if key == "model" and val:
                out.setdefault("label", label_from_choice(val))
            elif key == "data" and val:
                out.setdefault("data", val)
            elif key == "data.n_train" and _num(val) is not None:
                out.setdefault("n_train", int(float(val)))
            elif key == "seed" and _num(val) is not None:
                out.setdefault("seed", int(float(val)))
    parsed = parse_run_dir_name(run_dir.name)
    if parsed:
        out.setdefault("label", label_from_choice(parsed["choice"]))
        out.setdefault("data", parsed["data"])
        out.setdefault("seed", parsed["seed"])
    return out


def load_history(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """(training loss records, periodic evaluations) of a run's history.json.

    history.json is ``{"train": [...], "eval": [...]}``; older runs wrote a plain list of loss
    records (no evaluations). A missing or unreadable file gives ([], []).
    """
    try:
        h = json.loads((Path(run_dir) / "history.json").read_text())
    except (OSError, json.JSONDecodeError):
        return [], []
    if isinstance(h, list):
        return [r for r in h if isinstance(r, dict)], []
    if isinstance(h, dict):
        train, evals = h.get("train") or [], h.get("eval") or []
        return ([r for r in train if isinstance(r, dict)],
                sorted((r for r in evals if isinstance(r, dict) and _num(r.get("step")) is not None),
                       key=lambda r: float(r["step"])))
    return [], []


def _int_or(v: Any) -> Any:
    f = _num(v)
    return int(f) if f is not None and f == int(f) else v


def load_runs(root: Path) -> list[dict]:
    """One flat dict per run directory under ``root`` holding a metrics.json.

    Private keys (not written to results.csv) start with ``_``: ``_evals`` (the periodic
    evaluations of history.json), ``_blocks`` (the metrics.json sections present), ``_kind``.
    """
    root = Path(root)
    rows = []
    for mpath in sorted(root.rglob("metrics.json")):
        rel = mpath.parent.relative_to(root)
        if "report" in rel.parts or ".hydra" in rel.parts:
            continue
        row: dict[str, Any] = {"run_dir": str(rel)}
        try:
            rec = json.loads(mpath.read_text())
            if not isinstance(rec, dict):
                raise ValueError(f"metrics.json holds a {type(rec).__name__}, not an object")
        except (OSError, ValueError) as e:  # JSONDecodeError is a ValueError
            rec = {"status": "unreadable", "reason": f"{type(e).__name__}: {e}".splitlines()[0]}
        cfg = _read_yaml(mpath.parent / "config.yaml")
        if not isinstance(cfg, dict):
            cfg = _read_yaml(mpath.parent / ".hydra" / "config.yaml")
        for k, v in flatten(cfg if isinstance(cfg, dict) else {}).items():
            row[f"cfg.{k}"] = json.dumps(v) if isinstance(v, (list, dict)) else v
        for k, v in rec.items():
            if isinstance(v, dict):
                row.update({f"{k}.{k2}": v2 for k2, v2 in flatten(v).items()})
            else:
                row[k] = v
        row["_blocks"] = {k for k, v in rec.items() if isinstance(v, dict)}
        if rec.get("method"):
            row["label"] = method_label(rec)
        ident = recover_identity(mpath.parent) if not rec.get("method") or rec.get("n_train") is None else {}
        row.setdefault("label", ident.get("label", "?"))
        if not rec.get("method") and row["label"] != "?":
            row["label_recovered"] = True
        for k, ck in (("data", "cfg.data.name"), ("n_train", "cfg.data.n_train"), ("seed", "cfg.seed")):
            if row.get(k) is None:
                row[k] = row.get(ck) if row.get(ck) is not None else ident.get(k, "?" if k == "data" else None)
        row["n_train"] = _int_or(row.get("n_train"))
        kind = row.get("cfg.model.kind") or ident.get("kind")
        if rec.get("generator") == "estimator" or kind == "estimator" or \
                split_label(row["label"])[0] in ESTIMATOR_LABELS:
            row["_kind"] = "estimator"
        else:
            row["_kind"] = "learned"
        row["_evals"] = load_history(mpath.parent)[1]
        rows.append(row)
    return rows


def write_csv(rows: list[dict], path: Path) -> None:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols and not k.startswith("_")]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def mean_ci(values: list[float]) -> tuple[float, float] | None:
    """Mean and half-width of the 95% t-interval (0 for a single value)."""
    v = [x for x in values if x is not None]
    if not v:
        return None
    if len(v) == 1:
        return v[0], 0.0
    a = np.asarray(v)
    return float(a.mean()), float(stats.t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / math.sqrt(len(a)))


def sig3(x: float | None) -> str:
    """A number with 3 significant digits, as every table writes it: ``0.100``, ``0.0431``, ``179``,
    ``1230``, ``6.07e-04``, ``1.23e+05``; ``–`` for None or a non-finite number."""
    x = _num(x)
    if x is None:
        return "–"
    if x == 0:
        return "0"
    mant, exp = f"{x:.2e}".split("e")
    e = int(exp)
    if e < -3 or e >= 5:
        return f"{mant}e{e:+03d}"
    if e >= 2:
        return f"{round(x, 2 - e):.0f}"
    return f"{x:.{2 - e}f}"


def fmt(mc: tuple[float, float] | None) -> str:
    """``mean ± half-width`` (3 significant digits each); the mean alone when the half-width is 0."""
    if mc is None:
        return "–"
    m, h = mc
    return sig3(m) if h == 0 else f"{sig3(m)} ± {sig3(h)}"


def summary(values: list[float]) -> str:
    """``median (mean ± 95% t half-width)``, or the value alone for a single run."""
    if len(values) == 1:
        return sig3(values[0])
    return f"{sig3(float(np.median(values)))} ({fmt(mean_ci(values))})"


def _ok(r: dict) -> bool:
    return r.get("status") in ("completed", "not_converged")


def is_estimator(r: dict) -> bool:
    return r.get("_kind") == "estimator"


# ---------------------------------------------------------------------------------------------
# Budgets: the checkpoint the validation statistic selects among the evaluations at steps <= B
# ---------------------------------------------------------------------------------------------


def budget_selection(evals: list[dict], statistic: str = "val_moments", budgets: Iterable[float] = (),
                     ema: bool | None = None) -> dict[Any, dict[str, Any] | None]:
    """The checkpoint selected at each budget: ``{B: {"step", "param_error", "value", "elapsed_s", ...}}``.

    At budget B, among the evaluations with ``step <= B``, the one with the lowest finite
    ``statistic`` (a validation number; ``param_error`` is never read for the choice); ties go to
    the earlier step, and at one step to the raw generator before the EMA one, as the run's own
    selection (:class:`pfbench.selection.Monitor`) does. With ``ema`` (default: when the evaluations
    carry ``ema_<statistic>``) the EMA generator's evaluations compete too, as in the run.

    Each value: ``step`` and ``variant`` ("raw"/"ema") of the selected checkpoint, its ``value``
    and its recorded ``param_error`` (None if not recorded or non-finite); ``elapsed_s``: the
    training seconds spent to reach the budget (at the last evaluation <= B, evaluations excluded),
    ``budget_step`` that evaluation's step, ``selected_elapsed_s`` the seconds at the selected step.
    A budget larger than the last evaluated step uses all evaluations; a budget below the first
    evaluation, or with no finite statistic up to it, gives None.
    """
    evs = sorted((e for e in evals if _num(e.get("step")) is not None), key=lambda e: float(e["step"]))
    if ema is None:
        ema = any(f"ema_{statistic}" in e for e in evs)
    variants = [("", "raw")] + ([("ema_", "ema")] if ema else [])
    out: dict[Any, dict[str, Any] | None] = {}
    for b in budgets:
        best: dict[str, Any] | None = None
        last = None
        for e in evs:
            if float(e["step"]) > float(b):
                break
            last = e
            for prefix, variant in variants:
                v = _num(e.get(prefix + statistic))
                if v is not None and (best is None or v < best["value"]):
                    best = {"step": e["step"], "variant": variant, "value": v,
                            "param_error": _num(e.get(prefix + "param_error")),
                            "selected_elapsed_s": _num(e.get("elapsed_s"))}
        if best is not None and last is not None:
            best["elapsed_s"] = _num(last.get("elapsed_s"))
            best["budget_step"] = last["step"]
        out[b] = best
    return out


def run_statistic(r: dict, statistic: str | None = None) -> str:
    """The selection statistic for a run: ``statistic`` if given, else the run's own ``select_by``."""
    return statistic or r.get("selection.statistic") or r.get("cfg.model.train.select_by") or "val_moments"


def _status_reason(r: dict) -> str:
    st = r.get("status") or "unknown"
    return {"unreadable": "unreadable metrics.json"}.get(st, st)


def budget_outcome(r: dict, budget: float | None, statistic: str | None = None
                   ) -> tuple[dict[str, Any] | None, str | None]:
    """(result, None) when the run gives a selected-checkpoint param_error at ``budget``, else (None, reason).

    Estimators: their final model at any budget (``elapsed_s`` = fit time). Learned methods:
    :func:`budget_selection` on the run's evaluations. A run that diverged at step D still counts at
    budgets below D (its evaluations up to B are those of a run of B steps); one that stopped at
    fewer than B steps without early stopping does not count at B.
    """
    st = r.get("status")
    if is_estimator(r):
        if not _ok(r):
            return None, _status_reason(r)
        pe = _num(r.get("metrics.param_error"))
        if pe is None:
            return None, "non-finite/null param_error"
        return {"step": None, "param_error": pe, "value": _num(r.get("objective")),
                "elapsed_s": _fit_time(r)}, None
    if st == "diverged":
        ds = _num(r.get("diverged_step"))
        if budget is None or ds is None or float(budget) >= ds:
            return None, "diverged"
    elif not _ok(r):
        return None, _status_reason(r)
    evals = r.get("_evals") or []
    if not evals:
        return None, "no periodic evaluations (eval_every unset)"
    if budget is None:
        budget = max(float(e["step"]) for e in evals)
    steps = _num(r.get("steps"))
    if st != "diverged" and r.get("selection.early_stopped_step") is None and steps is not None and steps < budget:
        return None, f"trained {int(steps):,} < {int(budget):,} steps"
    sel = budget_selection(evals, run_statistic(r, statistic), [budget])[budget]
    if sel is None:
        return None, "no finite validation statistic"
    if sel["param_error"] is None:
        return None, "non-finite/null param_error"
    return sel, None


def metric_outcome(r: dict, key: str = "metrics.param_error") -> tuple[float | None, str | None]:
    """(value, None), (None, reason), or (None, None) when the run has no such block (not counted)."""
    block = key.split(".", 1)[0]
    if block != "metrics" and is_estimator(r):
        return None, None
    if block != "metrics" and block not in (r.get("_blocks") or ()):
        applies = (block == "metrics_selected" and _num(r.get("cfg.model.train.eval_every")) is not None) or \
                  (block == "metrics_ema" and _num(r.get("cfg.model.train.ema")) is not None)
        if not applies:
            return None, None
        if _ok(r):
            return None, f"no {block} in metrics.json"
    if not _ok(r):
        return None, _status_reason(r)
    v = _num(r.get(key))
    if v is None:
        return None, f"non-finite/null {key.split('.', 1)[1]}"
    return v, None


def default_budgets(rows: list[dict]) -> list[int]:
    """1500, 5000 and the largest evaluated step present (those above it dropped), sorted."""
    steps = [float(e["step"]) for r in rows if not is_estimator(r) for e in r.get("_evals") or []]
    if not steps:
        return []
    top = int(max(steps))
    return sorted({b for b in DEFAULT_BUDGETS if b <= top} | {top})


def parse_budgets(text: str) -> list[int]:
    try:
        out = sorted({int(float(b.strip().lower().replace("k", "e3"))) for b in text.split(",") if b.strip()})
    except ValueError:
        raise ReportError(f"--budgets={text!r}: give generator steps as a comma list, e.g. 1500,5000,15000") from None
    if not out or min(out) <= 0:
        raise ReportError(f"--budgets={text!r}: give positive generator steps, e.g. 1500,5000,15000")
    return out


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


def group(rows: list[dict]) -> dict[str, dict[tuple[str, Any], list[dict]]]:
    """family -> (method label, n_train) -> completed runs."""
    out: dict[str, dict] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if _ok(r):
            out[str(r.get("data"))][(r["label"], r.get("n_train"))].append(r)
    return out


def group_all(rows: list[dict]) -> dict[str, dict[tuple[str, Any], list[dict]]]:
    """family -> (method label, n_train) -> every run (any status); a method skipped on a whole
    family (not applicable there) is left out."""
    out: dict[str, dict] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        out[str(r.get("data"))][(r.get("label", "?"), r.get("n_train"))].append(r)
    for fam in list(out):
        by_label = defaultdict(list)
        for (label, _), runs in out[fam].items():
            by_label[label] += runs
        for label, runs in by_label.items():
            if all(r.get("status") == "skipped" for r in runs):
                for k in [k for k in out[fam] if k[0] == label]:
                    del out[fam][k]
        if not out[fam]:
            del out[fam]
    return out


def _nsort(n: Any) -> tuple:
    f = _num(n)
    return (0, f, "") if f is not None else (1, 0.0, str(n))


def is_reference(label: str) -> bool:
    """A reference method's label (``+model=memorize``, ``gaussian``, ``truth``): listed after the methods."""
    return split_label(label)[0] in REFERENCE_LABELS


def _label_sort(cells: dict, label: str) -> tuple:
    est = any(is_estimator(r) for (lb, _), runs in cells.items() if lb == label for r in runs)
    return (is_reference(label), est, label)


def _fmt_n(n: Any) -> str:
    if n is None:
        return "?"
    f = _num(n)
    return f"{int(f):,}" if f is not None and f == int(f) else str(n)


def _fmt_s(t: float | None) -> str:
    return "–" if _num(t) is None else f"{sig3(t)} s"


def _signed(x: float) -> str:
    return ("+" if x > 0 else "") + sig3(x)


def _k_of_n(k: int, n: int) -> str:
    """`` [k/N]`` when only k of the N runs are usable, else ''."""
    return f" [{k}/{n}]" if k < n else ""


def stat_cell(values: list[float], n_all: int) -> str:
    """``median (mean ± 95% t half-width)`` over the usable runs, ``[k/N]`` when only k of the N runs are usable."""
    if not values:
        return f"– [0/{n_all}]"
    return summary(values) + _k_of_n(len(values), n_all)


# ---------------------------------------------------------------------------------------------
# One table, two renderings: markdown (report.md) and LaTeX booktabs (tables/*.tex)
# ---------------------------------------------------------------------------------------------


class Table(NamedTuple):
    columns: list[str]
    rows: list[list[str]]
    left: int = 1  # leading label columns (left-aligned; the others are numbers, right-aligned)
    rules: tuple[int, ...] = ()  # rows a LaTeX \midrule goes before (the reference rows, the noise floors)


def _first_rule(rows: list[list[str]]) -> tuple[int, ...]:
    """The \\midrule before the first reference row (:func:`_row_name`), unless it is the first row."""
    i = next((i for i, r in enumerate(rows) if r[0].endswith(_REFERENCE_MARK)), None)
    return () if i is None or i == 0 else (i,)


def to_markdown(t: Table) -> list[str]:
    return ["| " + " | ".join(t.columns) + " |", "|" + "---|" * len(t.columns),
            *("| " + " | ".join(r) + " |" for r in t.rows)]


_TEX_CHARS = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$", "{": r"\{",
              "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "`": "", "±": r"$\pm$",
              "·": r"$\cdot$", "″": "$''$", "–": "--", "×": r"$\times$", "≤": r"$\le$", "…": r"\dots{}"}


def tex_escape(text: str) -> str:
    """A table cell as LaTeX text: special characters escaped, ``1.20e-04`` as ``$1.20\\times10^{-4}$``."""
    s = "".join(_TEX_CHARS.get(c, c) for c in str(text))
    return re.sub(r"(-?\d\.\d+)e([+-])0*(\d+)",
                  lambda m: rf"${m[1]}\times10^{{{'-' if m[2] == '-' else ''}{m[3]}}}$", s)


def to_latex(t: Table, comment: str = "") -> str:
    """A booktabs ``tabular`` (\\toprule, \\midrule, \\bottomrule; needs ``\\usepackage{booktabs}``)."""
    spec = "l" * t.left + "r" * (len(t.columns) - t.left)
    out = [f"% {line}" for line in comment.splitlines()]
    out += ["% generated by pfbench.report; needs \\usepackage{booktabs}", f"\\begin{{tabular}}{{{spec}}}",
            "\\toprule", " & ".join(map(tex_escape, t.columns)) + r" \\", "\\midrule"]
    for i, row in enumerate(t.rows):
        if i in t.rules:
            out.append("\\midrule")
        out.append(" & ".join(map(tex_escape, row)) + r" \\")
    out += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(out)


class Exclusions:
    """Runs left out of table cells, grouped as (method, n_train, reason) -> budgets and runs."""

    def __init__(self) -> None:
        self._by: dict[tuple, tuple[set, set]] = defaultdict(lambda: (set(), set()))

    def add(self, label: str, n: Any, reason: str, run_dir: str, column: Any = None) -> None:
        cols, runs = self._by[(label, n, reason)]
        if column is not None:
            cols.add(column)
        runs.add(run_dir)

    def __bool__(self) -> bool:
        return bool(self._by)

    def lines(self, what: str = "budget") -> list[str]:
        out = []
        for (label, n, reason), (cols, runs) in sorted(self._by.items(), key=lambda kv: (kv[0][0], _nsort(kv[0][1]),
                                                                                         kv[0][2])):
            where = f"{label}, n = {_fmt_n(n)}"
            if cols:
                where += f", {what} " + " / ".join(c if isinstance(c, str) else f"{int(c):,}"
                                                   for c in sorted(cols, key=lambda c: (isinstance(c, str), c)))
            out.append(f"- {where}: **{reason}**: {_run_list(runs)}")
        return out


def _run_list(runs: Iterable[str], shown: int = 4) -> str:
    names = sorted(runs)
    listed = ", ".join(f"`{x}`" for x in names[:shown]) + (f", … (+{len(names) - shown})" if len(names) > shown
                                                             else "")
    return f"{len(names)} run{'s' * (len(names) != 1)} ({listed})"


def _unknown_n(cells: dict[tuple[str, Any], list[dict]]) -> Exclusions:
    """Runs whose n_train is unknown (a job that failed before writing it): no column, listed as excluded."""
    exc = Exclusions()
    for (label, n), runs in cells.items():
        if n is None:
            for r in runs:
                exc.add(label, n, _status_reason(r) if not _ok(r) else "n_train unknown", r["run_dir"])
    return exc


_REFERENCE_MARK = "(reference)"  # ends a reference method's row name; _first_rule finds it


def _row_name(label: str) -> str:
    return f"{label} {_REFERENCE_MARK}" if is_reference(label) else label


def budget_table(cells: dict[tuple[str, Any], list[dict]], budgets: list[int],
                 statistic: str | None = None) -> tuple[Table, Exclusions]:
    """Selected-checkpoint param_error: one row per (method, budget B), one column per n_train; an
    estimator has one row (no steps; its fit time in the cell)."""
    exc = _unknown_n(cells)
    ns = sorted({n for (_, n) in cells if n is not None}, key=_nsort)
    labels = sorted({lb for (lb, n) in cells if n is not None}, key=lambda lb: _label_sort(cells, lb))
    bs: list[int | None] = list(budgets) or [None]
    rows = []
    for label in labels:
        est = any(is_estimator(r) for n in ns for r in cells.get((label, n), []))
        for b in bs[:1] if est else bs:
            row = [_row_name(label), "–" if est or b is None else f"{int(b):,}"]
            for n in ns:
                runs = cells.get((label, n), [])
                if not runs:
                    row.append("")
                    continue
                vals, times = [], []
                for r in runs:
                    res, why = budget_outcome(r, b, statistic)
                    if res is None:
                        exc.add(label, n, why or "?", r["run_dir"], None if est else b)
                    else:
                        vals.append(res["param_error"])
                        if res.get("elapsed_s") is not None:
                            times.append(res["elapsed_s"])
                cell = stat_cell(vals, len(runs))
                if est and times:
                    cell += f" · fit {_fmt_s(float(np.median(times)))}"
                row.append(cell)
            rows.append(row)
    head = ["method", "B (steps)", *(f"n = {_fmt_n(n)}" for n in ns)]
    return Table(head, rows, left=2, rules=_first_rule(rows)), exc


CHECKPOINTS = (("final", "metrics.param_error"), ("selected (whole run)", "metrics_selected.param_error"),
               ("EMA (final)", "metrics_ema.param_error"))


def checkpoint_table(cells: dict[tuple[str, Any], list[dict]]) -> tuple[Table, Exclusions]:
    """Test-split param_error of the final, selected (over the whole run) and EMA generators."""
    exc = _unknown_n(cells)
    ns = sorted({n for (_, n) in cells if n is not None}, key=_nsort)
    labels = sorted({lb for (lb, n) in cells if n is not None}, key=lambda lb: _label_sort(cells, lb))
    rows = []
    for label in labels:
        for name, key in CHECKPOINTS:
            vals_row, any_counted = [], False
            for n in ns:
                vals, counted = [], 0
                for r in cells.get((label, n), []):
                    v, why = metric_outcome(r, key)
                    if v is None and why is None:
                        continue
                    counted += 1
                    if v is None:
                        exc.add(label, n, why or "?", r["run_dir"], name)
                    else:
                        vals.append(v)
                any_counted |= counted > 0
                vals_row.append(stat_cell(vals, counted) if counted else "")
            if any_counted:
                rows.append([_row_name(label), name, *vals_row])
    table = Table(["method", "checkpoint", *(f"n = {_fmt_n(n)}" for n in ns)], rows, left=2,
                  rules=_first_rule(rows))
    return table, exc


def rank_corr_table(cells: dict[tuple[str, Any], list[dict]]) -> Table | None:
    """Median over runs of the Spearman correlation of each validation statistic with param_error."""
    by_label: dict[str, list[dict]] = defaultdict(list)
    for (label, _), runs in cells.items():
        by_label[label] += [r for r in runs if _ok(r) and not is_estimator(r)]
    rows = []
    for label in sorted(by_label, key=legend_order):
        runs = by_label[label]
        vals = []
        for s in STATISTICS:
            rho = [x for x in (_num(r.get(f"selection.rank_corr_with_param_error.{s}")) for r in runs)
                   if x is not None]
            vals.append(_signed(float(np.median(rho))) + _k_of_n(len(rho), len(runs)) if rho else f"– [0/{len(runs)}]")
        if any(not v.startswith("–") for v in vals):
            rows.append([label, *vals])
    return Table(["method", *STATISTICS], rows) if rows else None


def _dedup_by_seed(runs: list[dict], get: Callable[[dict], float | None]) -> list[float]:
    """One value per seed: a noise floor is a property of the family and sample sizes (every method's run of
    the same seed draws the same true samples), so counting it once per method would shrink its interval."""
    by_seed: dict[Any, float] = {}
    for r in runs:
        v = get(r)
        if v is not None:
            by_seed.setdefault(r.get("seed", r.get("run_dir")), v)
    return list(by_seed.values())


def family_table(cells: dict[tuple[str, Any], list[dict]]) -> Table | None:
    """All test metrics of the final models: mean ± 95% t half-width over the completed runs (``[k]``: the
    number of runs with a finite value, where some but fewer than the completed runs have one), training
    or fit seconds, and the noise floor of each distance in its own row(s) at the end."""
    present = [d for d in DISTANCES if any(_num(r.get(f"metrics.{d}")) is not None
                                           for runs in cells.values() for r in runs)]  # columns with a value
    cols = ["method", "n_train", "runs", "param_error", *present, "train/fit (s)"]

    def cell(runs: list[dict], get: Callable[[dict], float | None]) -> str:
        v = [x for x in map(get, runs) if x is not None]
        return fmt(mean_ci(v)) + (f" [{len(v)}]" if 0 < len(v) < len(runs) else "")

    rows = []
    floors: dict[Any, list[dict]] = defaultdict(list)
    for (label, n), all_runs in sorted(cells.items(), key=lambda kv: (_label_sort(cells, kv[0][0]),
                                                                      _nsort(kv[0][1]))):
        runs = [r for r in all_runs if _ok(r)]
        if not runs:
            continue
        floors[n] += runs
        row = [_row_name(label), _fmt_n(n), f"{len(runs)}/{len(all_runs)}",
               cell(runs, lambda r: _num(r.get("metrics.param_error")))]
        row += [cell(runs, lambda r, d=d: _num(r.get(f"metrics.{d}"))) for d in present]
        row.append(cell(runs, train_seconds))
        rows.append(row)
    if not rows:
        return None
    floor_rows = []
    for n in sorted(floors, key=_nsort):
        vals = [fmt(mean_ci(_dedup_by_seed(floors[n], lambda r, d=d: _num(r.get(f"metrics.{d}_floor")))))
                for d in present]
        if any(v != "–" for v in vals):
            floor_rows.append(["noise floor (true vs true)", _fmt_n(n), "", "", *vals, ""])
    if len(floor_rows) > 1 and len({tuple(r[4:]) for r in floor_rows}) == 1:  # the same at every n_train
        floor_rows = [[floor_rows[0][0], "all", *floor_rows[0][2:]]]
    rules = _first_rule(rows)
    if floor_rows:
        rules += (len(rows),)
    return Table(cols, rows + floor_rows, left=2, rules=rules)


def _verdict_cell(runs: list[dict], key: str, bad: str) -> str:
    """'k/N' runs whose verdict for ``key`` starts with ``bad``, with the median p-value; '' when none has one."""
    verdicts = [str(r.get(f"metrics.{key}_verdict")) for r in runs if r.get(f"metrics.{key}_verdict") is not None]
    if not verdicts:
        return ""
    k = sum(v.startswith(bad) for v in verdicts)
    ps = [p for p in (_num(r.get(f"metrics.{key}_pvalue")) for r in runs) if p is not None]
    return f"{k}/{len(verdicts)}" + (f" (p {sig3(float(np.median(ps)))})" if ps else "")


def verdict_table(cells: dict[tuple[str, Any], list[dict]]) -> Table | None:
    """Per method and n_train: in how many runs each calibrated verdict says "different from the truth"
    (median p-value beside it), and in how many the memorization checks flag the generator. Reference
    methods (``truth``, ``memorize``, ``gaussian``) close the table: ``truth`` shows the false-positive
    rate, ``memorize`` what only the copying test can catch, ``gaussian`` what second moments buy."""
    keys = [k for k in (*DISTANCES, "moments") if any(r.get(f"metrics.{k}_verdict") is not None
                                                      for runs in cells.values() for r in runs)]
    mem = [k for k in ("copying", "support") if any(r.get(f"metrics.{k}_verdict") is not None
                                                     for runs in cells.values() for r in runs)]
    if not keys and not mem:
        return None
    cols = ["method", "n_train", *[f"{k}: different" for k in keys], *[f"{k}: flagged" for k in mem]]
    rows = []
    order = sorted(cells.items(), key=lambda kv: (_label_sort(cells, kv[0][0]), _nsort(kv[0][1])))
    for (label, n), all_runs in order:
        runs = [r for r in all_runs if _ok(r)]
        if not runs:
            continue
        vals = [_row_name(label), _fmt_n(n), *[_verdict_cell(runs, k, "different") for k in keys]]
        vals += [_verdict_cell(runs, "copying", "copying suspected") if k == "copying"
                 else _verdict_cell(runs, k, "different") for k in mem]
        if any(vals[2:]):  # runs evaluated before verdicts existed have none: no empty row
            rows.append(vals)
    if not rows:
        return None
    return Table(cols, rows, left=2, rules=_first_rule(rows))


def _fit_time(r: dict) -> float | None:
    t = _num(r.get("timing.train_time_s"))
    return t if t is not None else _num(r.get("timing.fit_time_s"))


def train_seconds(r: dict) -> float | None:
    """The seconds a run spent producing its final model, never the worker's start-up (``wall_time_s``):
    an estimator's fit time; a learned run's training seconds at its last periodic evaluation when that
    is its last step (the evaluations themselves excluded), else its training time."""
    if not is_estimator(r):
        evals = r.get("_evals") or []
        steps = _num(r.get("steps"))
        if evals and steps is not None and _num(evals[-1].get("step")) == steps:
            t = _num(evals[-1].get("elapsed_s"))
            if t is not None:
                return t
    return _fit_time(r)


# ---------------------------------------------------------------------------------------------
# Headline
# ---------------------------------------------------------------------------------------------


def headline_family(rows: list[dict], family: str | None = None) -> str | None:
    cells = group_all(rows)
    if family is not None:
        return family if family in cells else None
    if HEADLINE_FAMILY in cells:
        return HEADLINE_FAMILY
    return max(cells, key=lambda f: sum(len(v) for v in cells[f].values()), default=None)


def _headline_cell(runs: list[dict], budget: int | None, statistic: str | None, with_time: bool = True) -> str:
    if runs and all(is_reference(r.get("label", "")) and r.get("metrics.param_error") is None
                    and str(r.get("metrics.param_error_status", "")).startswith("skipped") for r in runs):
        return "n/a (not of the family's form: see the verdicts)"
    vals, times = [], []
    for r in runs:
        res, _ = budget_outcome(r, budget, statistic)
        if res is not None:
            vals.append(res["param_error"])
            if res.get("elapsed_s") is not None:
                times.append(res["elapsed_s"])
    if not vals:
        return f"– [0/{len(runs)}]"
    s = summary(vals)
    if with_time:
        s += f" · {_fmt_s(float(np.median(times)) if times else None)}"
    return s + _k_of_n(len(vals), len(runs))


class Headline(NamedTuple):
    by_n: Table | None  # method x n_train at the largest budget
    detail_n: Any  # the n_train of by_budget
    by_budget: Table | None  # method x budget at n_train = detail_n


def headline_tables(rows: list[dict], budgets: list[int] | None = None, family: str | None = None,
                    detail_n: Any = HEADLINE_DETAIL_N, statistic: str | None = None) -> Headline:
    budgets = default_budgets(rows) if budgets is None else list(budgets)
    fam = headline_family(rows, family)
    cells = group_all(rows).get(fam, {}) if fam else {}
    ns = sorted({n for (_, n) in cells if n is not None}, key=_nsort)
    if not cells or not ns:
        return Headline(None, None, None)
    labels = sorted({lb for (lb, n) in cells if n is not None}, key=lambda lb: _label_sort(cells, lb))
    top = max(budgets) if budgets else None
    body = [[_row_name(label), *(_headline_cell(cells.get((label, n), []), top, statistic)
                                 if cells.get((label, n)) else "" for n in ns)] for label in labels]
    by_n = Table(["method", *(f"n = {_fmt_n(n)}" for n in ns)], body, rules=_first_rule(body))
    if len(budgets) <= 1:
        return Headline(by_n, None, None)
    dn = detail_n if any(_num(n) == _num(detail_n) for n in ns) else ns[len(ns) // 2]
    dn = next(n for n in ns if _num(n) == _num(dn) or n == dn)
    body = []
    for label in labels:
        runs = cells.get((label, dn), [])
        if runs:
            est = any(is_estimator(r) for r in runs)
            body.append([_row_name(label), *("″" if est and i else _headline_cell(runs, b, statistic, with_time=est)
                                             for i, b in enumerate(budgets))])
    return Headline(by_n, dn, Table(["method", *(f"B = {b:,}" for b in budgets)], body, rules=_first_rule(body)))


def _headline_md(h: Headline, family: str | None = None) -> list[str]:
    """The markdown of the headline tables (:func:`headline_tables`): method x n_train at the largest
    budget (median selected-checkpoint param_error, mean ± 95% half-width, median training seconds),
    and method x budget at n_train = its detail n."""
    if h.by_n is None:
        return [f"(no runs on {family or HEADLINE_FAMILY})"]
    lines = to_markdown(h.by_n)
    if h.by_budget is not None:
        lines += ["", f"_n_train = {_fmt_n(h.detail_n)}, by budget B (generator steps); estimators have no steps "
                      "(″: the same number)._", "", *to_markdown(h.by_budget)]
    return lines


def _span(values: Iterable[Any]) -> str:
    v = sorted({int(x) for x in (_num(y) for y in values) if x is not None})
    if not v:
        return "?"
    if len(v) > 2 and v == list(range(v[0], v[-1] + 1)):
        return f"{v[0]}–{v[-1]}"
    return ", ".join(map(str, v))


def headline_caption(rows: list[dict], budgets: list[int] | None = None, family: str | None = None,
                     source: str | None = None, statistic: str | None = None) -> str:
    """One line stating the sweep behind the headline, read from the runs themselves."""
    budgets = default_budgets(rows) if budgets is None else list(budgets)
    fam = headline_family(rows, family)
    cells = group_all(rows).get(fam, {}) if fam else {}
    runs = [r for r in rows if fam is not None and str(r.get("data")) == fam]
    labels = sorted({lb for (lb, _) in cells})
    ns = sorted({n for (_, n) in cells if n is not None}, key=_nsort)
    learned = [r for r in runs if not is_estimator(r)]
    dims = sorted({(r.get("latent_dim") or r.get("cfg.data.latent_dim"), r.get("out_dim") or r.get("cfg.data.out_dim"))
                   for r in runs} - {(None, None)}, key=str)
    parts = [f"{len(runs)} runs on {fam}" + (f" (r = {dims[0][0]}, d = {dims[0][1]})" if len(dims) == 1 else "")
             + (f" of {len(rows)} in the sweep" if len(rows) != len(runs) else ""),
             f"{len(labels)} methods × n_train {' / '.join(_fmt_n(n) for n in ns)} × seeds "
             f"{_span(r.get('seed') for r in runs)}"]
    total = sum(t for t in (_num(r.get("timing.wall_time_s")) for r in runs) if t is not None)
    if total:
        parts[-1] += f" ({total / 3600:.2g} h" if total >= 360 else f" ({total:.0f} s"
        parts[-1] += " of wall time in all)"
    if learned:
        steps = sorted({int(s) for s in (_num(r.get("cfg.model.train.steps") or r.get("steps")) for r in learned)
                        if s is not None})
        ev = sorted({int(s) for s in (_num(r.get("cfg.model.train.eval_every")) for r in learned) if s is not None})
        stat = sorted({run_statistic(r, statistic) for r in learned})
        nval = sorted({int(s) for s in (_num(r.get("n_val") or r.get("cfg.data.n_val")) for r in learned)
                       if s is not None})
        parts.append("learned methods: one run of " + ("/".join(f"{s:,}" for s in steps) or "?") + " generator steps"
                     + (f", evaluated every {'/'.join(map(str, ev))}" if ev else "")
                     + (", budgets " + " / ".join(f"{b:,}" for b in budgets) if budgets else "")
                     + f", checkpoint selected by {'/'.join(stat)}"
                     + (f" on n_val = {'/'.join(f'{v:,}' for v in nval)}" if nval else ""))
        tuned = sorted({r["label"] for r in learned if r.get("tuned") or split_label(r["label"])[1]})
        untuned = sorted({r["label"] for r in learned} - set(tuned))
        parts.append("tuned hyperparameters: " + (", ".join(tuned) if tuned else "none")
                     + (f" (defaults: {', '.join(untuned)})" if tuned and untuned else ""))
    cell = ("cells: median (mean ± 95% t half-width) over seeds of the selected checkpoint's parameter error"
            + (f" at B = {max(budgets):,}" if budgets else "")
            + ", median training seconds to the budget (periodic evaluations and worker start-up excluded; "
              "estimators: fit time), [k/N] where only k of N runs are usable")
    src = f"`{source}`: " if source else ""
    return f"_{src}{'; '.join(parts)}; {cell}._"


def slope(ns: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log y against log n (the empirical rate)."""
    pts = [(math.log(n), math.log(y)) for n, y in zip(ns, ys) if n and y and n > 0 and y > 0]
    if len({p[0] for p in pts}) < 2:
        return None
    x, y = np.array(pts).T
    return float(np.polyfit(x, y, 1)[0])


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------


def _plt():
    import logging

    import matplotlib

    matplotlib.use("Agg")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib.pyplot as plt

    return plt


def _tick(x: float, _pos: Any = None) -> str:
    """A log-axis tick as a plain number (``0.05``, ``1,000``), not ``5 × 10^-2``."""
    return f"{x:,.0f}" if 1000 <= abs(x) < 1e7 and x == round(x) else f"{x:g}"


def _plain_log_ticks(axis) -> None:
    """Plain-number labels on a log axis, at the ticks matplotlib would label (minor ones only on a short range)."""
    from matplotlib.ticker import LogFormatter

    class Plain(LogFormatter):
        def __call__(self, x, pos=None):
            return _tick(x) if super().__call__(x, pos) else ""

    axis.set_major_formatter(Plain(labelOnlyBase=False))
    axis.set_minor_formatter(Plain(labelOnlyBase=False, minor_thresholds=(1, 0.4)))


def _finish_axes(ax, title: str, xlabel: str, ylabel: str, logx: bool = True, logy: bool = True) -> None:
    """Scales, labels and grid of one panel; no legend on the panel (:func:`_figure_legend` draws one per figure)."""
    if logx:
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis)
    if logy:
        ax.set_yscale("log")
        _plain_log_ticks(ax.yaxis)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=8.5)
    ax.set_ylabel(ylabel, fontsize=8.5)
    ax.grid(alpha=0.3, which="both")
    ax.tick_params(labelsize=7.5)
    ax.tick_params(which="minor", labelsize=6.5)


def _legend_key(entry: str) -> tuple:
    method = entry.split(" (")[0]
    known = split_label(method)[0] in METHOD_COLORS
    return (not known and entry.startswith("noise floor")), legend_order(method), entry


def _figure_legend(fig, title: str | None = None) -> None:
    """One legend for the whole figure, outside the panels, each entry once: methods (learned, estimators,
    reference methods), then the backdrop (noise floor, ...)."""
    seen: dict[str, Any] = {}
    for ax in fig.axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, h)
    if seen:
        labels = sorted(seen, key=_legend_key)
        fig.legend([seen[lb] for lb in labels], labels, loc="outside right upper", fontsize=8, frameon=False,
                   title=title, title_fontsize=8, alignment="left")


def _new_figure(nrows: int, ncols: int, panel_w: float = 4.4, panel_h: float = 3.5):
    plt = _plt()
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_w * ncols + 2.2, panel_h * nrows + 0.7), squeeze=False,
                             layout="constrained")
    return fig, axes


def _suptitle(fig, text: str) -> None:
    """The figure's caption, wrapped to the width of the panels."""
    import textwrap

    width = max(60, int((fig.get_figwidth() - 2.2) * 15))
    fig.suptitle(textwrap.fill(text, width), fontsize=9)


def _panels(rows: list[dict]) -> list[tuple[str, Any, dict[str, list[dict]]]]:
    """(family, n_train, label -> usable-status runs) for each (family, n) panel of the budget figures."""
    out = []
    for fam, cells in sorted(group_all(rows).items()):
        for n in sorted({n for (_, n) in cells if _num(n) is not None}, key=_nsort):
            by_label = {lb: runs for (lb, m), runs in cells.items() if m == n}
            out.append((fam, n, by_label))
    return out


def _curves(runs: list[dict], statistic: str | None) -> tuple[list, list, list]:
    """Per evaluation step s: median recorded param_error (raw generator), and median over runs of
    (training seconds to s, selected-so-far param_error)."""
    steps = sorted({float(e["step"]) for r in runs for e in r.get("_evals") or []})
    raw, sel = [], []
    for s in steps:
        pe = [v for v in (_num(e.get("param_error")) for r in runs if r.get("status") != "failed"
                          for e in r.get("_evals") or [] if float(e["step"]) == s) if v is not None and v > 0]
        if pe:
            raw.append((s, float(np.median(pe))))
        got = [res for res, _ in (budget_outcome(r, s, statistic) for r in runs) if res is not None]
        pes = [g["param_error"] for g in got if g["param_error"] > 0]
        ts = [g["elapsed_s"] for g in got if g.get("elapsed_s") is not None]
        if pes:
            sel.append((s, float(np.median(pes)), float(np.median(ts)) if ts else None))
    return steps, raw, sel


def _grid(panels: list) -> tuple[Any, dict]:
    """A figure with one row per family and one panel per n_train (unused panels hidden); when every family
    has a single n_train, the families side by side (at most 4 to a row)."""
    fams = sorted({p[0] for p in panels})
    ncol = max(sum(1 for p in panels if p[0] == f) for f in fams)
    where = {}
    if ncol == 1:
        ncol = min(len(fams), 4)
        nrow = -(-len(fams) // ncol)
        fig, axes = _new_figure(nrow, ncol)
        flat = [ax for row in axes for ax in row]
        for ax, p in zip(flat, sorted(panels, key=lambda p: p[0])):
            where[(p[0], p[1])] = ax
        for ax in flat[len(panels):]:
            ax.set_visible(False)
        return fig, where
    fig, axes = _new_figure(len(fams), ncol)
    for i, f in enumerate(fams):
        fp = [p for p in panels if p[0] == f]
        for j, p in enumerate(fp):
            where[(p[0], p[1])] = axes[i][j]
        for j in range(len(fp), ncol):
            axes[i][j].set_visible(False)
    return fig, where


def _every(points: list) -> int:
    """Markers on about 12 of a curve's points: enough to tell the methods apart, few enough to see the line."""
    return max(1, len(points) // 12)


def _nothing_here(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=8, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def fig_param_error_vs_steps(rows: list[dict], budgets: list[int], statistic: str | None = None):
    """One panel per (family, n_train): the median over seeds of the recorded param_error at each
    evaluation (solid) and of the selected-so-far checkpoint's (dashed), estimators as horizontal
    lines, budgets as vertical lines. None when no run has evaluations."""
    panels = _panels(rows)
    if not any(r.get("_evals") for _, _, by in panels for runs in by.values() for r in runs):
        return None
    fig, where = _grid(panels)
    for fam, n, by_label in panels:
        ax = where[(fam, n)]
        for label in sorted(by_label, key=legend_order):
            runs, st = by_label[label], method_style(label)
            if any(is_estimator(r) for r in runs):
                pe = [res["param_error"] for res, _ in (budget_outcome(r, None, statistic) for r in runs)
                      if res is not None and res["param_error"] > 0]
                if pe:
                    ax.axhline(float(np.median(pe)), color=st.color, linestyle=":", lw=1.6,
                               label=f"{label} (estimator)")
                continue
            _, raw, sel = _curves(runs, statistic)
            if raw:
                ax.plot(*zip(*raw), linestyle=st.linestyle, ms=4.5, lw=1.2, label=label, markevery=_every(raw),
                        **st.marker_kw())
            if sel:
                ax.plot([p[0] for p in sel], [p[1] for p in sel], color=st.color, linestyle="--", lw=1.6, alpha=0.8,
                        label=None if raw else label)
        for b in budgets:
            ax.axvline(b, color="0.6", lw=0.7, alpha=0.6)
        _finish_axes(ax, f"{fam}, n_train = {_fmt_n(n)}", "generator step", "param_error (median over seeds)",
                     logx=False)
    _suptitle(fig, "param_error at each evaluation (solid, markers) and of the checkpoint selected so far by "
                   "validation (dashed), median over seeds; estimators dotted; grey verticals: budgets")
    _figure_legend(fig)
    return fig


def fig_param_error_vs_time(rows: list[dict], statistic: str | None = None):
    """Time to accuracy: one panel per (family, n_train), x = training seconds (evaluations excluded),
    y = selected-so-far param_error, both medians over seeds at each evaluation step; estimators as a
    marker at their fit time. None when no learned run has periodic evaluations (the final models of
    every run are in :func:`fig_time_to_accuracy`)."""
    panels = _panels(rows)
    if not any(r.get("_evals") and not is_estimator(r) for _, _, by in panels for runs in by.values() for r in runs):
        return None
    fig, where = _grid(panels)
    for fam, n, by_label in panels:
        ax = where[(fam, n)]
        drew = False
        for label in sorted(by_label, key=legend_order):
            runs, st = by_label[label], method_style(label)
            if any(is_estimator(r) for r in runs):
                got = [res for res, _ in (budget_outcome(r, None, statistic) for r in runs) if res is not None]
                pts = [(g["elapsed_s"], g["param_error"]) for g in got
                       if g.get("elapsed_s") and g["elapsed_s"] > 0 and g["param_error"] > 0]
                if pts:
                    ax.plot([float(np.median([p[0] for p in pts]))], [float(np.median([p[1] for p in pts]))],
                            linestyle="none", ms=11, label=f"{label} (fit)", **st.marker_kw())
                    drew = True
                continue
            _, _, sel = _curves(runs, statistic)
            pts = [(t, pe) for _, pe, t in sel if t is not None and t > 0]
            if pts:
                ax.plot(*zip(*pts), linestyle=st.linestyle, ms=4.5, lw=1.2, label=label, markevery=_every(pts),
                        **st.marker_kw())
                drew = True
        if drew:
            _finish_axes(ax, f"{fam}, n_train = {_fmt_n(n)}", "training seconds (median over seeds)",
                         "selected-checkpoint param_error\n(median over seeds)")
        else:
            ax.set_title(f"{fam}, n_train = {_fmt_n(n)}", fontsize=10)
            _nothing_here(ax, "no run with a param_error")
    _suptitle(fig, "time to accuracy: the checkpoint selected so far by validation against the training seconds "
                   "spent (periodic evaluations and start-up excluded); estimators at their fit time")
    _figure_legend(fig)
    return fig


def _spans_decades(values: list[float], ratio: float = 3.0) -> bool:
    """Whether the positive values span enough (a factor ``ratio``) for a log axis; a value <= 0 (the truth's
    param_error) is then left out of the panel."""
    v = [x for x in values if x is not None and x > 0]
    return bool(v) and max(v) / min(v) > ratio


def fig_versus_n(rows: list[dict], metric: str, ylabel: str):
    """Median (interquartile bars) over seeds of a final-model test metric against n_train, one panel per
    family, its fitted log-log slope beside the last point, and the metric's noise floor where it has one."""
    fams = group(rows)
    if not fams:
        return None
    fig, axes = _new_figure(1, len(fams), 4.8, 3.8)
    drew = any_slope = False
    for ax, (fam, cells) in zip(axes[0], sorted(fams.items())):
        ends: list[tuple[float, float, str, str]] = []  # (x, y, text, color) at each line's last point
        per_method: dict[str, list] = defaultdict(list)
        floors: dict[float, list] = defaultdict(list)
        for (m, n), runs in cells.items():
            vals = [x for x in (_num(r.get(f"metrics.{metric}")) for r in runs) if x is not None]
            if vals and _num(n):
                per_method[m].append((_num(n), float(np.median(vals)), np.percentile(vals, [25, 75])))
            if _num(n):
                floors[_num(n)] += _dedup_by_seed(runs, lambda r: _num(r.get(f"metrics.{metric}_floor")))
        shown = [y for pts in per_method.values() for p in pts for y in (p[1], *p[2])]
        fl = sorted((n, float(np.median(v))) for n, v in floors.items() if v)
        logy = _spans_decades(shown + [f for _, f in fl])
        methods = sorted(per_method, key=legend_order)
        for i, m in enumerate(methods):
            pts = sorted(per_method[m], key=lambda p: p[0])
            ns, med, iq = [p[0] for p in pts], [p[1] for p in pts], np.array([p[2] for p in pts])
            if logy and min(med) <= 0:
                continue
            st = method_style(m)
            dodge = 10 ** (0.012 * (i - (len(methods) - 1) / 2))  # methods set apart so equal values stay visible
            ax.errorbar([n * dodge for n in ns], med, yerr=[np.subtract(med, iq[:, 0]), np.subtract(iq[:, 1], med)],
                        linestyle=st.linestyle, capsize=3, ms=6, label=m, **st.marker_kw())
            s = slope(ns, med)
            if s is not None:
                ends.append((ns[-1] * dodge, med[-1], f"{s:+.2f}", st.color))
            drew = True
        if fl:
            ax.plot([p[0] for p in fl], [p[1] for p in fl], linestyle="--", color="0.45", marker="_", ms=22, mew=2,
                    label="noise floor (true vs true, median)")
        if ends:
            ax.margins(x=0.14)
            any_slope = True
        _finish_axes(ax, f"{fam} (final model)", "n_train (methods set slightly apart)",
                     f"{ylabel}\n(median over seeds; bars: interquartile range)", logy=logy)
        _label_line_ends(ax, ends, logy)
        all_n = sorted({p[0] for pts in per_method.values() for p in pts})
        if len(all_n) == 1:  # one n_train: centred and labelled, not at the edge of a decade
            from matplotlib.ticker import NullFormatter

            ax.set_xlim(all_n[0] / 2, all_n[0] * 2)
            ax.set_xticks(all_n, [_fmt_n(all_n[0])])
            ax.xaxis.set_minor_formatter(NullFormatter())
    if not drew:
        import matplotlib.pyplot as plt

        plt.close(fig)
        return None
    _figure_legend(fig, "number at a line's end:\nslope of log(median)\nagainst log(n_train)" if any_slope else None)
    return fig


def _label_line_ends(ax, ends: list[tuple[float, float, str, str]], logy: bool, gap: float = 0.05) -> None:
    """Each (x, y, text, color) written right of its point, moved apart vertically where two would overlap."""
    if not ends:
        return
    from matplotlib.transforms import blended_transform_factory

    lo, hi = ax.get_ylim()
    f = (lambda v: math.log(v)) if logy else (lambda v: v)
    frac = [(f(y) - f(lo)) / (f(hi) - f(lo)) if y > 0 or not logy else 0.0 for _, y, _, _ in ends]
    order = sorted(range(len(ends)), key=lambda i: frac[i])
    placed: list[float] = []
    for i in order:
        placed.append(max(frac[i], placed[-1] + gap) if placed else frac[i])
    top = placed[-1] - 0.98 if placed and placed[-1] > 0.98 else 0.0  # pushed over the top: move all down
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    for i, y in zip(order, placed):
        x, _, text, color = ends[i]
        ax.annotate(text, (x, y - top), xycoords=trans, xytext=(7, 0), textcoords="offset points", fontsize=7,
                    color=color, va="center")


def fig_time_to_accuracy(rows: list[dict]):
    """Each completed run's final model: its training (or fit) seconds against its param_error, one panel per
    (family, n_train), one point per run. Worker start-up (in ``wall_time_s``) is never counted."""
    pts: dict[tuple[str, Any], dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        pe, t = _num(r.get("metrics.param_error")), train_seconds(r)
        if _ok(r) and pe is not None and t is not None and pe > 0 and t > 0:
            pts[(str(r.get("data")), r.get("n_train"))][r["label"]].append((t, pe))
    panels = [p for p in _panels(rows) if pts.get((p[0], p[1]))]
    if not panels:
        return None
    fig, where = _grid(panels)
    for fam, n, _ in panels:
        ax = where[(fam, n)]
        for m in sorted(pts[(fam, n)], key=legend_order):
            st = method_style(m)
            ax.scatter(*zip(*pts[(fam, n)][m]), label=m, s=34, marker=st.marker, edgecolors=st.color, linewidths=1.2,
                       facecolors=st.color if st.fill == "full" else "none", alpha=0.75)
        _finish_axes(ax, f"{fam}, n_train = {_fmt_n(n)}", "training / fit seconds", "param_error (final model)")
    _suptitle(fig, "time to accuracy, one point per run: final model's param_error against the seconds spent "
                   "training (periodic evaluations excluded where recorded) or fitting; worker start-up never counted")
    _figure_legend(fig)
    return fig


def _samples_figures(rows: list[dict], plt) -> list[tuple[str, Any]]:
    out = []
    for fam, cells in sorted(group(rows).items()):  # sample plots of one seed per method (largest n)
        picks = {}
        for (m, n), runs in cells.items():
            for r in runs:
                p = Path(r["_root"]) / r["run_dir"] / "samples.png"
                best = picks.get(m)
                key = (-(_num(n) or 0), _num(r.get("seed")) or 0)
                if p.exists() and (best is None or key < best[0]):
                    picks[m] = (key, p)
        if not picks:
            continue
        fig, axes = plt.subplots(len(picks), 1, figsize=(12, 3.6 * len(picks)), squeeze=False)
        for ax, m in zip(axes[:, 0], sorted(picks, key=legend_order)):  # each image is titled
            ax.imshow(plt.imread(picks[m][1]))
            ax.axis("off")
        fig.tight_layout()
        out.append((f"samples_{fam}.png", fig))
    return out


FIGURES = ("param_error_vs_steps.png", "param_error_vs_time.png", "param_error_vs_n.png", "distance_vs_n.png",
           "time_to_accuracy.png")


EXACT_BELOW = 1e-10  # a param_error below this is an exact recovery (float64 round-off), not a point to plot


def exact_methods(rows: list[dict]) -> list[str]:
    """Labels whose every final param_error is below EXACT_BELOW (the truth as a method: ~1e-16). Drawn on a
    log axis they would stretch it over 15 decades and press every other line against its top."""
    vals: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        v = _num(r.get("metrics.param_error"))
        if v is not None:
            vals[r.get("label", "?")].append(abs(v))
    return sorted((m for m, v in vals.items() if max(v) < EXACT_BELOW), key=legend_order)


def _figures(rows: list[dict], out: Path, budgets: list[int] | None = None, statistic: str | None = None) -> list[str]:
    budgets = default_budgets(rows) if budgets is None else budgets
    plt = _plt()
    exact = exact_methods(rows)
    pe = [r for r in rows if r.get("label", "?") not in exact]  # rows of the param_error figures
    figs = [("param_error_vs_steps.png", lambda: fig_param_error_vs_steps(pe, budgets, statistic)),
            ("param_error_vs_time.png", lambda: fig_param_error_vs_time(pe, statistic)),
            ("param_error_vs_n.png", lambda: fig_versus_n(pe, "param_error", "param_error (gauge-aligned)")),
            ("distance_vs_n.png", lambda: fig_versus_n(rows, "w1", "W1 to the held-out sample")),
            ("time_to_accuracy.png", lambda: fig_time_to_accuracy(pe))]
    made = []
    for fname, make in figs:
        fig = make()
        if fig is not None:
            if exact and fname != "distance_vs_n.png":
                # under the legend (right column), clear of the panels' axis labels
                fig.text(0.995, 0.02, f"not drawn: {', '.join(exact)}\n(param_error below {EXACT_BELOW:g},\nexact "
                         "to machine precision)", fontsize=7, color="0.35", ha="right", va="bottom")
            fig.savefig(out / fname, dpi=90)
            plt.close(fig)
            made.append(fname)
        elif (out / fname).exists():  # a figure of an earlier report that this one does not draw
            (out / fname).unlink()
    for fname, fig in _samples_figures(rows, plt):
        fig.savefig(out / fname, dpi=80)
        plt.close(fig)
        made.append(fname)
    return made


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


def _budget_columns(rows: list[dict], budgets: list[int], statistic: str | None) -> None:
    """Adds ``budget_<B>.*`` (selected checkpoint, or the reason it is missing) to each learned run."""
    for r in rows:
        if is_estimator(r) or not r.get("_evals"):
            continue
        for b in budgets:
            res, why = budget_outcome(r, b, statistic)
            if res is None:
                r[f"budget_{b}.excluded"] = why
                continue
            for k in ("step", "variant", "value", "param_error", "elapsed_s"):
                r[f"budget_{b}.{k}"] = res.get(k)


def build_report(root: Path, out: Path | None = None, figures: bool = True, budgets: list[int] | None = None,
                 statistic: str | None = None) -> Path:
    """Write results.csv, report.md, headline.md, tables/*.tex and the figures; returns the output directory.

    Raises :class:`ReportError` when ``root`` is not a directory or holds no metrics.json.
    """
    root = Path(root)
    if not root.is_dir():
        raise ReportError(f"{root} is not a directory; pass a sweep (multirun) directory or a run directory")
    rows = load_runs(root)
    if not rows:
        raise ReportError(f"no metrics.json under {root}; pass a sweep (multirun) directory or a run directory "
                          "(a sweep that is still starting has none yet)")
    out = Path(out) if out else root / "report"
    out.mkdir(parents=True, exist_ok=True)
    for r in rows:
        r["_root"] = str(root)
    budgets = default_budgets(rows) if budgets is None else sorted(set(budgets))
    _budget_columns(rows, budgets, statistic)
    write_csv(rows, out / "results.csv")
    made = _figures(rows, out, budgets, statistic) if figures else []
    status: dict[str, int] = defaultdict(int)
    for r in rows:
        status[r.get("status", "unknown")] += 1
    recovered = [r for r in rows if r.get("label_recovered")]
    h = headline_tables(rows, budgets, statistic=statistic)
    caption = headline_caption(rows, budgets, source=str(root), statistic=statistic)
    head = [caption, "", *_headline_md(h)]  # the tables built once, for the markdown and the .tex
    caption = caption.strip("_")
    hfam = headline_family(rows) or HEADLINE_FAMILY
    tex: dict[str, tuple[Table, str]] = {}  # file stem -> (table, caption)
    if h.by_n is not None:
        tex["headline_by_n"] = (h.by_n, caption)
    if h.by_budget is not None:
        tex["headline_by_budget"] = (h.by_budget, f"{hfam}, n_train = {_fmt_n(h.detail_n)}, by budget B; " + caption)
    sel_note = "each run's `select_by`"
    md = [f"# pfbench report: {root}", "",
          f"{len(rows)} runs: " + ", ".join(f"{k} {v}" for k, v in sorted(status.items())), "",
          "Budgets: " + (" / ".join(f"{b:,}" for b in budgets) + " generator steps" if budgets else
                         "none (no run has periodic evaluations)")
          + ". A learned method trains once per (method, n_train, seed); at budget B its result is "
          "the checkpoint with the best validation statistic among the evaluations at steps <= B (selection "
          f"by {statistic or sel_note}; test data and the true parameters are never read for it), "
          "and its parameter error is the one recorded for that evaluation. Estimators have no steps.", "",
          "Cells: median (mean ± half-width of the 95% t-interval) over seeds, 3 significant digits; a single run's "
          "value alone; `[k/N]` where only k of the N runs are usable (the others are listed under the table with "
          "the reason). The table of all test metrics gives mean ± 95% t half-width. Times are training seconds "
          "(periodic evaluations excluded) or an estimator's fit time, never the worker's start-up. Figures show "
          "the median over seeds, with interquartile bars where there are bars. The noise floor of a distance is "
          "the same distance between two independent true samples of the same sizes: a method whose distance lies "
          "within its floor is indistinguishable from the truth at that sample size. Each table is also written as "
          "LaTeX (booktabs) in `tables/`.", ""]
    if recovered:
        md += [f"{len(recovered)} run(s) without a method in metrics.json (config errors): method recovered from "
               ".hydra or the directory name.", ""]
    md += [f"## Headline: {hfam}", "", *head, ""]
    for fam, cells in sorted(group_all(rows).items()):
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", fam)
        md += [f"## data = {fam}", "", "### Selected-checkpoint param_error by budget B and n_train", "",
               "At each budget B (generator steps), the checkpoint the validation statistic selects among the "
               "evaluations at steps <= B; estimators (no steps) once, with their fit time.", ""]
        # a reference method that is not of the family's form has no parameter error: not an exclusion
        pe_cells = {k: v for k, v in cells.items()
                    if not (is_reference(k[0]) and all(r.get("metrics.param_error") is None for r in v))}
        t, exc = budget_table(pe_cells, budgets, statistic)
        tex[f"{stem}_budgets"] = (t, f"{fam}: selected-checkpoint param_error by budget B and n_train; median "
                                     "(mean ± 95% t half-width) over seeds")
        md += [*to_markdown(t), ""]
        if exc:
            md += ["Excluded from these cells:", "", *exc.lines("budget"), ""]
        t, exc = checkpoint_table(pe_cells)
        tex[f"{stem}_checkpoints"] = (t, f"{fam}: test-split param_error of the final, selected and EMA generators")
        md += ["### Test-split param_error of the final, selected (over the whole run) and EMA generators", "",
               *to_markdown(t), ""]
        if exc:
            md += ["Excluded from these cells:", "", *exc.lines("checkpoint"), ""]
        rc = rank_corr_table(cells)
        if rc:
            md += ["### Rank correlation of each validation statistic with param_error over a run's evaluations",
                   "", "Median over runs of the Spearman correlation (`[k/N]`: k of the N runs have one).", "",
                   *to_markdown(rc), ""]
        ft = family_table(cells)
        if ft:
            tex[f"{stem}_metrics"] = (ft, f"{fam}: test metrics of the final models, mean ± 95% t half-width over "
                                          "seeds; noise floors: true vs true")
            md += ["### All test metrics of the final models (mean ± 95% t half-width over seeds)", "",
                   "The noise floor rows close the table: each distance between two independent true samples of "
                   "the same sizes (one value per seed). `train/fit (s)`: training seconds without the periodic "
                   "evaluations, or an estimator's fit time.", "", *to_markdown(ft), ""]
        vt = verdict_table(cells)
        if vt:
            tex[f"{stem}_verdicts"] = (vt, f"{fam}: calibrated verdicts of the final models")
            md += ["### Calibrated verdicts of the final models (test split)", "",
                   "Runs in which each distance's verdict says *different from the truth* (its p-value against "
                   "the null distribution of true-vs-true values at the same sample sizes, level `eval.alpha`; "
                   "median p in brackets), and runs the memorization checks flag (the data-copying test against "
                   "the training set; the birthday test). Reference rows: `truth` gives the false-positive rate, "
                   "`memorize` (the training set replayed) should pass the distances and be flagged by the "
                   "copying test, `gaussian` shows what the first two moments alone buy.", "", *to_markdown(vt), ""]
    md += _skipped_section(rows)
    bad = [r for r in rows if not _ok(r) and r.get("status") != "skipped"]
    if bad:
        t = Table(["run", "method", "data", "status", "step", "reason"],
                  [[f"{r['run_dir']}", f"{r.get('label', '?')}", f"{r.get('data', '?')}", f"{r.get('status')}",
                    f"{r.get('diverged_step') or r.get('steps', '')}", str(r.get("reason", "")).replace("|", "/")]
                   for r in bad])
        md += ["## Failed, diverged or unreadable runs", "", *to_markdown(t), ""]
    written = _write_tex(out / "tables", tex)
    if written:
        md += ["## LaTeX tables", "", "booktabs `tabular`s (`\\usepackage{booktabs}`), to `\\input` inside a "
               "`table` environment: " + ", ".join(f"`tables/{f}`" for f in written) + ".", ""]
    if made:
        md += ["## Figures", ""] + [f"![{f}]({f})" for f in made] + [""]
    (out / "report.md").write_text("\n".join(md))
    (out / "headline.md").write_text("\n".join(head) + "\n")
    return out


def _skipped_section(rows: list[dict]) -> list[str]:
    """Skipped runs (a method that does not apply to a family, ...): one line per (method, data, reason)."""
    by: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for r in rows:
        if r.get("status") == "skipped":
            reason = str(r.get("reason") or "no reason recorded").replace("|", "/")
            by[(r.get("label", "?"), str(r.get("data")), reason)].append(r["run_dir"])
    if not by:
        return []
    n = sum(len(v) for v in by.values())
    order = sorted(by.items(), key=lambda kv: (legend_order(kv[0][0]), kv[0][1:]))
    t = Table(["method", "data", "reason", "runs"],
              [[f"{label}", data, reason, _run_list(runs, shown=2)] for (label, data, reason), runs in order])
    return [f"## Skipped runs ({n})", "", *to_markdown(t), ""]


def _write_tex(folder: Path, tables: dict[str, tuple[Table, str]]) -> list[str]:
    """``<stem>.tex`` for each table with rows; those of an earlier report that this one does not write are removed."""
    folder.mkdir(exist_ok=True)
    written = []
    for stem, (t, caption) in tables.items():
        if t.rows:
            (folder / f"{stem}.tex").write_text(to_latex(t, caption))
            written.append(f"{stem}.tex")
    for old in folder.glob("*.tex"):
        if old.name not in written:
            old.unlink()
    return written


def log_wandb_table(root: Path, out: Path, mode: str = "offline") -> None:
    """One W&B run (job_type 'report', grouped by sweep) holding the results as a W&B Table."""
    import os

    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    from pfbench.tracking import resolve_mode

    with open(out / "results.csv") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        return
    # one W&B run per sweep directory: re-running the report updates it instead of adding another
    import hashlib

    run_id = "report-" + hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:12]
    run = wandb.init(project="pfbench", group=Path(root).name, job_type="report", name=f"report-{Path(root).name}",
                     id=run_id, resume="allow", dir=str(out), mode=resolve_mode(mode), reinit="finish_previous",
                     settings=wandb.Settings(console="off", silent=True, x_disable_stats=True))
    run.log({"results": wandb.Table(columns=rows[0], data=rows[1:])})
    for png in out.glob("*.png"):
        run.log({f"report/{png.stem}": wandb.Image(str(png))})
    run.finish()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pfbench.report", description=__doc__.splitlines()[0])
    ap.add_argument("sweep_dir", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="output directory (default <sweep_dir>/report)")
    ap.add_argument("--budgets", default=None,
                    help="generator-step budgets, comma list (e.g. 1500,5000,15000); default: 1500, 5000 and the "
                         "largest evaluated step present, those above it dropped")
    ap.add_argument("--select-by", default=None, choices=list(STATISTICS),
                    help="validation statistic that selects the checkpoint at each budget (default: each run's own)")
    ap.add_argument("--no-figures", action="store_true")
    ap.add_argument("--wandb", default="auto", choices=["auto", "offline", "online", "disabled"],
                    help="log the results table to W&B (auto: online only when W&B is configured)")
    a = ap.parse_args(argv)
    try:
        budgets = parse_budgets(a.budgets) if a.budgets else None
        out = build_report(a.sweep_dir, a.out, figures=not a.no_figures, budgets=budgets, statistic=a.select_by)
    except ReportError as e:
        print(f"pfbench report: error: {e}", file=sys.stderr)
        return 2
    if a.wandb != "disabled":
        log_wandb_table(a.sweep_dir, out, a.wandb)
    print(f"pfbench.report: {out / 'report.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

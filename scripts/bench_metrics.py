"""Benchmark of the shared evaluation (pfbench.metrics), every number against a baseline in the same run.

    .venv/bin/python scripts/bench_metrics.py     # all (exact W1 up to n = 10000: ~5 min, 4.2 GB)
    .venv/bin/python scripts/bench_metrics.py --w1-sizes 1000 5000 --skip-sw

1. Exact W1 (d = 20) at n = 1000, 5000, 10000: ``pfbench.metrics.distances.wasserstein_result``
   (GEMM costs, POT network simplex, dual-feasibility certificate) against a bare
   ``ot.emd2(a, b, ot.dist(x, y, "euclidean"), numItermax=1e9)``; also POT's default numItermax,
   to show how far its unconverged value is off. Target: ours <= 1.2x the bare call.
2. Sliced W (n = 1e5, d = 100, 200 projections, the same directions for all): pfbench (numpy
   sort), a torch sort of (L, n) contiguous projections, and POT's ``sliced_wasserstein_distance``.
3. The neural-net distance at the default settings (n = 2000 per side, d = 20).
4. The whole ``eval=default`` evaluation of a d = 20 quadratic run (n_test = 2000, n_train = 10000),
   alternated with the same evaluation without what issue 12 added (every ``null_draws`` 0, no
   moments, no copying test: the evaluation as it was before the calibrated verdicts): the ratio,
   each stage's added seconds and its cost per null draw (target: at most about 10 s on 2 cores).
5. Each null alone: a distance's stage with and without its null draws (fresh draws sampled
   beforehand), the cost that set its B.
6. A run's final evaluations: three generators (as a run's final, selected and EMA ones) judged
   against the same data with ``eval=default``, each evaluated alone against all three sharing one
   ``memo`` (floors, references and fresh-draw nulls computed once), alternated; the records must
   be equal.

Threads: BLAS/OpenMP thread counts are set from ``--threads`` through environment variables
before numpy is imported (threadpoolctl is not installed), and torch.set_num_threads likewise.
The machine is shared, so each comparison alternates the contenders and reports ratios.
"""

from __future__ import annotations

import argparse
import os
import sys


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP/torch threads (default 1)")
    p.add_argument("--w1-sizes", type=int, nargs="*", default=[1000, 5000, 10000])
    p.add_argument("--repeats", type=int, default=3, help="repeats for n <= 5000 (one at larger n)")
    p.add_argument("--skip-sw", action="store_true")
    p.add_argument("--skip-eval", action="store_true")
    p.add_argument("--eval-repeats", type=int, default=3, help="alternations of the two evaluations")
    p.add_argument("--skip-nn", action="store_true")
    p.add_argument("--json", type=str, default=None, help="also write the results here")
    return p.parse_args()


args = parse()
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(args.threads)

import json  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import ot  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

import pfbench.metrics.evaluate as E  # noqa: E402
from pfbench.families import make_instance  # noqa: E402
from pfbench.metrics import distances as D  # noqa: E402
from pfbench.metrics.evaluate import evaluate, resolve_eval_config  # noqa: E402
from pfbench.seeding import numpy_generator, torch_generator  # noqa: E402

torch.set_num_threads(args.threads)
results: dict[str, object] = {"threads": args.threads, "load_avg_start": os.getloadavg()}


def say(*a: object) -> None:
    print(*a, flush=True)


def bare_emd2(x: np.ndarray, y: np.ndarray, numitermax: int) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = ot.dist(x, y, metric="euclidean")
        val, log = ot.emd2([], [], m, numItermax=numitermax, log=True)
    return float(val), time.perf_counter() - t0, int(log["result_code"])


# 1 ---------------------------------------------------------------------------------------- exact W1
say(f"== exact W1, d = 20 (threads={args.threads}) ==")
say(f"{'n':>6} {'ours s':>8} {'bare s':>8} {'ratio':>6} {'|ours-bare|':>12} {'POT-default err':>16} "
    f"{'code':>4}")
w1_rows = []
for n in args.w1_sizes:
    rng = numpy_generator(n, "bench_w1")
    x = rng.standard_normal((n, 20))
    y = rng.standard_normal((n, 20)) + 0.1
    reps = args.repeats if n <= 5000 else 1
    ours_t, bare_t = [], []
    for rep in range(reps):  # alternate the order so machine-load drift hits both alike
        for who in (("ours", "bare") if rep % 2 == 0 else ("bare", "ours")):
            if who == "ours":
                t0 = time.perf_counter()
                r = D.wasserstein_result(x, y, 1, max_memory_gb=12)
                ours_t.append(time.perf_counter() - t0)
            else:
                bare_val, bt, code = bare_emd2(x, y, 10**9)
                bare_t.append(bt)
    assert r.converged and code == 1, (r.reason, code)
    dflt_val, _, dflt_code = bare_emd2(x, y, 100_000) if n <= 5000 else (float("nan"), 0.0, -1)
    row = {"n": n, "ours_s": min(ours_t), "bare_s": min(bare_t), "ratio": min(ours_t) / min(bare_t),
           "abs_diff": abs(r.value - bare_val), "w1": r.value,
           "default_iter_rel_err": (dflt_val - r.value) / r.value if dflt_code != -1 else None,
           "default_iter_code": dflt_code, "dual_violation": r.dual_violation}
    w1_rows.append(row)
    derr = f"{row['default_iter_rel_err']:+.2e}" if row["default_iter_rel_err"] is not None else "(skipped)"
    say(f"{n:>6} {row['ours_s']:>8.2f} {row['bare_s']:>8.2f} {row['ratio']:>6.2f} {row['abs_diff']:>12.2e} "
        f"{derr:>16} {dflt_code:>4}")
results["w1"] = w1_rows

# 2 ---------------------------------------------------------------------------------------- sliced W
if not args.skip_sw:
    say("== sliced W1, n = 1e5, d = 100, L = 200 projections (same directions) ==")
    rng = numpy_generator(0, "bench_sw")
    x = rng.standard_normal((100_000, 100))
    y = rng.standard_normal((100_000, 100)) * 1.1
    dirs = D.random_directions(100, 200, rng)

    def torch_sw(x_: np.ndarray, y_: np.ndarray, th: np.ndarray) -> float:
        xt, yt, tt = torch.from_numpy(x_), torch.from_numpy(y_), torch.from_numpy(th)
        tot = 0.0
        for i in range(0, th.shape[0], 32):
            pa = torch.sort((tt[i:i + 32] @ xt.T).contiguous(), dim=1).values  # (L, n) rows
            pb = torch.sort((tt[i:i + 32] @ yt.T).contiguous(), dim=1).values
            tot += float((pa - pb).abs().mean(dim=1).sum())
        return tot / th.shape[0]

    times: dict[str, list[float]] = {"pfbench_numpy": [], "torch_sort": [], "pot": []}
    vals: dict[str, float] = {}
    for _ in range(2):
        t0 = time.perf_counter()
        vals["pfbench_numpy"] = D.sliced_wasserstein(x, y, p=1, directions=dirs)
        times["pfbench_numpy"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        vals["torch_sort"] = torch_sw(x, y, dirs)
        times["torch_sort"].append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    vals["pot"] = float(ot.sliced_wasserstein_distance(x, y, projections=dirs.T, p=1))
    times["pot"].append(time.perf_counter() - t0)
    base = min(times["pfbench_numpy"])
    sw_rows = {k: {"s": min(v), "ratio_to_pfbench": min(v) / base, "value": vals[k]}
               for k, v in times.items()}
    for k, row in sw_rows.items():
        say(f"{k:>14}: {row['s']:6.2f} s  ({row['ratio_to_pfbench']:.2f}x)  SW1 = {row['value']:.6f}")
    results["sw"] = sw_rows

# 3 ---------------------------------------------------------------------------------------- NN distance
dflt = resolve_eval_config({})
if not args.skip_nn:
    say("== neural-net distance, default settings (n = 2000 per side, d = 20) ==")
    nn_cfg = dflt["nn"]
    rng = numpy_generator(1, "bench_nn")
    x = rng.standard_normal((2000, 20))
    y = rng.standard_normal((2000, 20)) + 0.05
    nn_rows = []
    for rep in range(2):
        r = D.neural_net_distance(x, y, width=nn_cfg["width"], depth=nn_cfg["depth"], steps=nn_cfg["steps"],
                                  lr=nn_cfg["lr"], batch_size=nn_cfg["batch_size"],
                                  generator=torch_generator(rep, "bench_nn"))
        nn_rows.append({"s": r.seconds, "value": r.value, "train_gap": r.train_gap})
        say(f"  {r.critic_class}, {r.steps} steps: {r.seconds:.2f} s, held-out gap {r.value:.4f} "
            f"(|shift| = {0.05 * 20**0.5:.3f} = W1 of the populations)")
    results["nn"] = nn_rows

# 4 ---------------------------------------------------------------------------------------- default eval
if not args.skip_eval:
    say("== eval=default on a quadratic run, r = 5, d = 20, n_test = 2000, n_train = 10000: "
        "with and without the nulls, moments and copying test (issue 12) ==")
    truth = make_instance("quadratic", 5, 20, generator=torch_generator(0, "instance"))
    x_test = truth.sample(2000, torch_generator(0, "test"))
    x_train = truth.sample(10000, torch_generator(0, "train"))
    model = make_instance("quadratic", 5, 20, generator=torch_generator(0, "instance")).float()
    with torch.no_grad():
        model.Q.add_(0.05 * torch.randn(model.Q.shape, generator=torch.Generator().manual_seed(1)))
    old = resolve_eval_config({"w1": {"null_draws": 0}, "w2": {"null_draws": 0}, "sw": {"null_draws": 0},
                               "mmd": {"null_draws": 0}, "nn": {"null_draws": 0},
                               "moments": {"enabled": False}, "copying": {"enabled": False}})
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    recs: dict[str, dict] = {}
    for rep in range(args.eval_repeats):  # alternate, so that load drift hits both alike
        for who in (("before", "after") if rep % 2 == 0 else ("after", "before")):
            rec = evaluate(model, x_test, truth=truth, cfg=old if who == "before" else dflt, seed=0,
                           x_train=None if who == "before" else x_train)
            runs[who].append({k: v for k, v in rec.items() if k.endswith("_time_s")})
            recs[who] = rec
    same = [k for k in recs["before"] if "time" not in k and recs["before"][k] != recs["after"].get(k)]
    best = {who: min(rows, key=lambda r: r["eval_time_s"]) for who, rows in runs.items()}
    for who in ("before", "after"):
        say(f"  {who:>6}: " + ", ".join(f"{k[:-7]} {v:.2f}" for k, v in best[who].items()) + "  (seconds)")
    ratio = best["after"]["eval_time_s"] / best["before"]["eval_time_s"]
    say(f"  ratio after / before: {ratio:.2f} (eval_time_s {best['after']['eval_time_s']:.2f} s vs "
        f"{best['before']['eval_time_s']:.2f} s); keys of the old record that changed: {same or 'none'}")
    draws = {d.key: dflt[d.name].null_draws for d in E.REGISTRY if "null_draws" in dflt[d.name]}
    # each stage's own minimum over the repeats (the exact solves at n = 2000 vary by +-30% under load)
    stage = {who: {k: min(r.get(k, 0.0) for r in rows) for k in rows[0]} for who, rows in runs.items()}
    per_draw = {}
    for key, b in draws.items():
        added = stage["after"].get(f"{key}_time_s", 0.0) - stage["before"].get(f"{key}_time_s", 0.0)
        per_draw[key] = {"B": b, "added_s": added, "per_draw_ms": 1e3 * added / b}
        say(f"  {key:>8}: B = {b:4d}, +{added:.2f} s, {1e3 * added / b:.2f} ms per draw (stage minima)")
    say("  new stages: " + ", ".join(f"{k[:-7]} {stage['after'][k]:.2f} s" for k in
                                     ("moments_time_s", "copying_time_s", "null_sample_time_s") if k in stage["after"]))
    rec = recs["after"]
    say("  metric / floor / p: " + ", ".join(
        f"{k} {rec[k]:.4g}/{rec[k + '_floor']:.4g}/{rec.get(k + '_pvalue')}"
        for k in ("w1", "w2", "sw", "mmd", "nn_dist", "moments")))
    say(f"  copying: {rec['copying_verdict']}")
    results["eval_default"] = {"before": best["before"], "after": best["after"], "ratio": ratio,
                               "changed_old_keys": same, "null_cost": per_draw,
                               "record": {k: v for k, v in rec.items() if "time" not in k}}

# 5 ---------------------------------------------------------------------------------------- null costs
if not args.skip_eval:
    say("== each null alone (default settings, d = 20, fresh draws sampled beforehand): the stage with its "
        "null_draws against the stage with null_draws = 0, alternated ==")
    x_gen = E._sample(model, 2000, 0, "eval_model")
    x_floor = E._sample(truth, 2000, 0, "eval_floor")
    x_ref = x_test.detach().numpy().astype(np.float64)
    fresh = E._FreshDraws(truth, 2000, 0)
    for b in range(1, 200):
        fresh(b)
    ctx = E.EvalContext(alpha=0.05, fresh=fresh, x_train=None)
    null_cost = {}
    for d in E.REGISTRY:
        block = dflt[d.name]
        if "null_draws" not in block:
            continue
        cfg_b = OmegaConf.to_object(block)
        cfg_0 = OmegaConf.to_object(OmegaConf.merge(block, {"null_draws": 0}))
        t = {"with": [], "without": []}
        for rep in range(3):
            for who, c in ((("with", cfg_b), ("without", cfg_0)) if rep % 2 == 0 else
                           (("without", cfg_0), ("with", cfg_b))):
                t0 = time.perf_counter()
                d.run(c, x_gen, x_ref, x_floor, 0, ctx=ctx)
                t[who].append(time.perf_counter() - t0)
        added = min(t["with"]) - min(t["without"])
        null_cost[d.key] = {"B": cfg_b.null_draws, "stage_s": min(t["without"]), "null_s": added,
                            "per_draw_ms": 1e3 * added / cfg_b.null_draws}
        say(f"  {d.key:>8}: B = {cfg_b.null_draws:4d}, stage {min(t['without']):.2f} s + null {added:.2f} s "
            f"({1e3 * added / cfg_b.null_draws:.2f} ms per draw)")
    say(f"  fresh true samples: {1e3 * fresh.seconds / 199:.2f} ms each (2000 points)")
    results["null_cost"] = null_cost

# 6 ---------------------------------------------------------------------------------------- shared memo
if not args.skip_eval:
    say("== three generators against the same data (eval=default, as a run's final, selected and EMA "
        "evaluations): each alone against one shared memo, alternated ==")
    gens = []
    for k, eps in enumerate((0.05, 0.03, 0.02)):
        g = make_instance("quadratic", 5, 20, generator=torch_generator(0, "instance")).float()
        with torch.no_grad():
            g.Q.add_(eps * torch.randn(g.Q.shape, generator=torch.Generator().manual_seed(10 + k)))
        gens.append(g)
    memo_t: dict[str, list[float]] = {"alone": [], "memo": []}
    recs_m: dict[str, list[dict]] = {}
    for rep in range(args.eval_repeats):
        for who in (("alone", "memo") if rep % 2 == 0 else ("memo", "alone")):
            memo = {} if who == "memo" else None
            t0 = time.perf_counter()
            recs_m[who] = [evaluate(g, x_test, truth=truth, cfg=dflt, seed=0, x_train=x_train, memo=memo)
                           for g in gens]
            memo_t[who].append(time.perf_counter() - t0)
    equal = all({k: v for k, v in a.items() if "time" not in k} == {k: v for k, v in b.items() if "time" not in k}
                for a, b in zip(recs_m["alone"], recs_m["memo"]))
    best_m = {who: min(ts) for who, ts in memo_t.items()}
    say(f"  three evaluations: alone {best_m['alone']:.2f} s, shared memo {best_m['memo']:.2f} s, ratio "
        f"{best_m['memo'] / best_m['alone']:.2f} (minima over {args.eval_repeats}); records equal: {equal}")
    results["memo"] = {"alone_s": best_m["alone"], "memo_s": best_m["memo"],
                       "ratio": best_m["memo"] / best_m["alone"], "records_equal": equal}

results["load_avg_end"] = os.getloadavg()
say(f"load average start {results['load_avg_start']}, end {results['load_avg_end']}")
if args.json:
    with open(args.json, "w") as f:
        json.dump(results, f, indent=1)
sys.exit(0)

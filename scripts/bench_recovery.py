"""Benchmark of the provable side for quadratic (issue 4) and low-rank polynomial (issue 16) pushforwards,
baselines measured in the same run.

    .venv/bin/python scripts/bench_recovery.py                 # everything (~10 min + the SoS sizes)
    .venv/bin/python scripts/bench_recovery.py --quick         # 3 seeds, n <= 1e5, memmap 1e6, SoS d <= 5
    .venv/bin/python scripts/bench_recovery.py --only-sos --sos-solver CLARABEL   # the SoS table alone
    .venv/bin/python scripts/bench_recovery.py --skip-sos --json out.json
    .venv/bin/python scripts/bench_recovery.py --poly-only     # section 5 alone (~1 h; --quick ~10 min)

1. Throughput: float64 GEMM (2000 x 2000, torch/MKL and numpy/OpenBLAS; the better one is "the
   machine's") against the streamed moment contractions of pfbench.recovery.moments: the third
   cumulant in the top-k principal directions (k = 15 for r = 5, k = 55 for r = 10; executed GEMM
   flops 2 n k^2 (k//2 + 1) counted, and separately every flop of the pass) and the covariance
   pass; then each stage of the third-moment pass timed alone, which bounds the whole pass.
   Target: contractions >= 0.5 x GEMM.
2. Recovery: random instances Q_a = sym(N(0,1)^{r x r}) / sqrt(r), gauge-aligned relative error
   (MATH 8), median over seeds, against the oracle (the same refinement started at the truth).
   Targets: error <= 1.1 x oracle; fit time (moments + all restarts) <= 1 s at r = 5, d = 20,
   n = 1e5 and <= 10 s at r = 10, d = 60, n = 1e5; log-log slope of error vs n in [-0.6, -0.4].
   One warm-up fit runs first (first-call costs of torch kernels are not fit work).
3. Memory: the moments of a float32 memory-mapped file of 1e7 x 20 rows, in a child process whose
   anonymous resident memory (RssAnon, excluding the page cache of the mapped file) is sampled.
4. SoS (MATH 2a): r = 2, d = 3..--sos-max-d and r = 3, d = 6..--sos-r3-max-d, on exact population
   moments and on n = --sos-n samples, each in a child process with a 10-minute limit: gauge error
   (and the moment method's on the same samples), build and solve time, solver iterations, peak
   memory (VmHWM), the certificate and residuals, against the pre-solve estimate (the size guard).
5. Polynomial maps x_a = sum_l lam_al <v_al, g>^w (issue 16), r = 3, d = 30, the algebraic start
   (init=auto) against random starts (init=random, the estimator before it):
   a. exact population moments: recoveries (gauge-aligned error < 1e-6) on ``--poly-pop-seeds`` (20)
      random and smoothed (sigma = 0.1) instances at w = 3, L = 2 (target >= 19 of 20 each), and at
      w = 3, L = 3 and w = 4, L = 2; random starts on ``--poly-baseline-seeds`` (3) of the w = 3,
      L = 2 ones; median fit time;
   b. samples, w = 3, L = 2: median error against the oracle (the same refinement started at the
      truth) over ``--poly-seeds`` (10) instances at n = 1e5 (target <= 1.2 x), 5 at n = 1e4 and 1e6
      for the log-log slope (target about -0.5), fit time (moments, start, refinement and the
      noise-level check); random starts on ``--poly-baseline-seeds`` instances at n = 1e5.

Threads: BLAS/OpenMP thread counts are set from ``--threads`` through environment variables before
numpy is imported, and torch.set_num_threads likewise. The machine is shared and noisy: timings are
reported with the load average, and throughput as ratios to a GEMM measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP/torch threads (default 1)")
    p.add_argument("--quick", action="store_true", help="3 seeds, n <= 1e5, memmap 1e6 rows, SoS d <= 5")
    p.add_argument("--seeds", type=int, default=None, help="seeds per setting (default 5, quick 3)")
    p.add_argument("--memmap-rows", type=int, default=None, help="rows of the memmap test (default 1e7)")
    p.add_argument("--sos-max-d", type=int, default=None, help="largest SoS d at r = 2 (default 26, quick 5)")
    p.add_argument("--skip-sos", action="store_true")
    p.add_argument("--only-sos", action="store_true", help="only the SoS table")
    p.add_argument("--sos-r3-max-d", type=int, default=None, help="largest SoS d at r = 3 (default 14, quick 8)")
    p.add_argument("--sos-solver", type=str, default="SCS", help="SCS (default) or CLARABEL")
    p.add_argument("--sos-n", type=str, default="0,100000", help="SoS sample sizes, 0 = exact moments")
    p.add_argument("--skip-memmap", action="store_true")
    p.add_argument("--skip-poly", action="store_true", help="skip section 5 (polynomial maps)")
    p.add_argument("--poly-only", action="store_true", help="run section 5 alone")
    p.add_argument("--poly-pop-seeds", type=int, default=None, help="population instances per setting (20, quick 5)")
    p.add_argument("--poly-seeds", type=int, default=None, help="sample instances at n = 1e5 (10, quick 3)")
    p.add_argument("--poly-baseline-seeds", type=int, default=None,
                   help="instances for the random-start baseline (3, quick 1; 0 skips it)")
    p.add_argument("--json", type=str, default=None, help="also write the results here")
    p.add_argument("--child", type=str, default=None, help=argparse.SUPPRESS)
    return p.parse_args()


args = parse()
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(args.threads)

import json  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pfbench.families import make_instance, parameter_error  # noqa: E402
from pfbench.families.quadratic import quadratic_gauge_error  # noqa: E402
from pfbench.recovery.moments import _ThirdMoment, mean_cov, moment_summary, third_moment_projected  # noqa: E402
from pfbench.recovery.polynomial import PolynomialMomentEstimator  # noqa: E402
from pfbench.recovery.polynomial import population_summary as poly_population_summary  # noqa: E402
from pfbench.recovery.quadratic import QuadraticMomentEstimator  # noqa: E402
from pfbench.recovery.quadratic_moments import population_summary, sym_dim  # noqa: E402
from pfbench.recovery.sos import SoSQuadraticEstimator, sos_size  # noqa: E402
from pfbench.seeding import torch_generator  # noqa: E402

torch.set_num_threads(args.threads)


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def best_of(f, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times)


# ------------------------------------------------------------------------------------------------
# 1. throughput
# ------------------------------------------------------------------------------------------------
def gemm_gflops() -> dict:
    n = 2000
    a, b = torch.randn(n, n, dtype=torch.float64), torch.randn(n, n, dtype=torch.float64)
    an, bn = a.numpy(), b.numpy()
    a @ b, an @ bn
    t_torch, t_numpy = best_of(lambda: a @ b), best_of(lambda: an @ bn)
    flops = 2.0 * n**3
    return {"gemm_torch_gflops": flops / t_torch / 1e9, "gemm_numpy_gflops": flops / t_numpy / 1e9}


def contraction_gflops(k: int, n: int, d: int) -> dict:
    gen = torch.Generator().manual_seed(k)
    X = torch.randn(n, d, generator=gen, dtype=torch.float64).numpy()
    U = np.linalg.qr(np.random.default_rng(k).standard_normal((d, k)))[0]
    mean = X.mean(0)
    third_moment_projected(X[:10000], mean, U)
    t3 = best_of(lambda: third_moment_projected(X, mean, U))
    t2 = best_of(lambda: mean_cov(X))
    # Executed work per row: the GEMM (m k, c) @ (c, k) with m = k//2 + 1 (= k^2 (k+1) for odd k),
    # and everything the pass does: centring d, projection 2 d k, pair products m k, GEMM.
    m = k // 2 + 1
    f3 = 2.0 * n * k * k * m
    f3_all = f3 + n * (d + 2 * d * k + m * k)
    f2 = 2.0 * n * d * d
    out = {"k": k, "n": n, "d": d, "third_s": t3, "third_gflops": f3 / t3 / 1e9,
           "third_all_gflops": f3_all / t3 / 1e9, "cov_s": t2, "cov_gflops": f2 / t2 / 1e9}
    out["stages_s"] = third_moment_stages(X, mean, U)
    return out


def third_moment_stages(X: np.ndarray, mean: np.ndarray, U: np.ndarray) -> dict:
    """Each stage of the third-moment pass alone over the same rows (same buffers, same sub-blocks).

    The GEMM stage alone bounds what the whole pass can reach: rate(pass) <= rate(GEMM stage) x
    t(GEMM) / t(all stages). At small k the pair products (m k per row, written to L2) and reading
    the data cost about as much as the GEMM (2 k^2 m per row), so that bound is below 0.5 x GEMM.
    """
    acc = _ThirdMoment(U, mean)
    cb, cbt, y, ycopy, yrow, shifted, z, z2, yt = acc._full
    Xt = torch.from_numpy(X)
    starts = range(0, (len(X) // acc.sub) * acc.sub, acc.sub)
    stages = {
        "read+centre": lambda: [torch.sub(Xt[s:s + acc.sub], acc.mu, out=cb) for s in starts],
        "project": lambda: [(torch.mm(acc.ut, cbt, out=y), ycopy.copy_(y)) for s in starts],
        "pair products": lambda: [torch.mul(yrow, shifted, out=z) for _ in starts],
        "gemm": lambda: [acc.acc.addmm_(z2, yt) for _ in starts],
    }
    return {name: best_of(f) for name, f in stages.items()}


# ------------------------------------------------------------------------------------------------
# 2. recovery table
# ------------------------------------------------------------------------------------------------
def recovery(r: int, d: int, n: int, seeds: int) -> dict:
    rows = []
    for seed in range(seeds):
        truth = make_instance("quadratic", r, d, generator=torch_generator(seed, "instance"))
        X = truth.sample_batched(n, torch_generator(seed, "train")).numpy()
        est = QuadraticMomentEstimator(latent_dim=r, out_dim=d, seed=seed)
        t0 = time.perf_counter()
        est.fit(X)
        wall = time.perf_counter() - t0
        Q = truth.params()["Q"]
        err = quadratic_gauge_error(Q, est.Q_)
        em = est.extra_metrics(truth, X)
        rows.append({"seed": seed, "error": err, "oracle": em["oracle_param_error"],
                     "ratio": err / em["oracle_param_error"], "spectral": em["spectral_init_param_error"],
                     "fit_s": wall, "moments_s": est.info_["moments_time_s"],
                     "iters": est.info_["iterations"], "converged": est.info_["converged"]})
        del X
    keys = ("error", "oracle", "ratio", "spectral", "fit_s", "moments_s", "iters")
    med = {k: float(np.median([row[k] for row in rows])) for k in keys}
    return {"r": r, "d": d, "n": n, "seeds": seeds, "median": med,
            "max_ratio": max(row["ratio"] for row in rows), "max_fit_s": max(row["fit_s"] for row in rows),
            "all_converged": all(row["converged"] for row in rows), "rows": rows}


# ------------------------------------------------------------------------------------------------
# 3. memmap child
# ------------------------------------------------------------------------------------------------
def _status_kb(field: str) -> int:
    # /proc, not getrusage: ru_maxrss survives execve, so a child would report its parent's peak.
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def _rss_anon_kb() -> int:
    return _status_kb("RssAnon")


def child_memmap(path: str, rows: int, d: int) -> None:
    peak = [_rss_anon_kb()]
    base = peak[0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_anon_kb())
            time.sleep(0.02)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    X = np.memmap(path, dtype=np.float32, mode="r", shape=(rows, d))
    t0 = time.perf_counter()
    s = moment_summary(X, k=sym_dim(5))
    secs = time.perf_counter() - t0
    stop.set()
    th.join()
    print(json.dumps({"rows": rows, "seconds": secs, "rss_anon_base_mb": base / 1024,
                      "rss_anon_peak_mb": peak[0] / 1024, "file_mb": rows * d * 4 / 2**20,
                      "mean0": float(s.mean[0])}))


def memmap_test(rows: int) -> dict:
    r, d = 5, 20
    truth = make_instance("quadratic", r, d, generator=torch_generator(0, "instance"))
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/tmp")) as tmp:
        path = os.path.join(tmp, "x.f32")
        X = np.memmap(path, dtype=np.float32, mode="w+", shape=(rows, d))
        gen = torch_generator(0, "memmap")
        step = 1_000_000
        for i in range(0, rows, step):
            X[i:i + step] = truth.sample_batched(min(step, rows - i), gen).numpy()
        X.flush()
        del X
        out = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--child",
                              f"memmap:{path}:{rows}:{d}"], capture_output=True, text=True, timeout=1800)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-2000:])
        return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------
# 4. SoS children
# ------------------------------------------------------------------------------------------------
def child_sos(r: int, d: int, solver: str, n: int) -> None:
    truth = make_instance("quadratic", r, d, generator=torch_generator(0, "instance"))
    Q = truth.params()["Q"].numpy()
    # past the guard on purpose (the table checks its estimates); the parent's timeout stops a child at 660 s
    est = SoSQuadraticEstimator(latent_dim=r, out_dim=d, solver=solver, max_seconds=1e9, max_memory_gb=1e9)
    t0 = time.perf_counter()
    if n:
        X = truth.sample_batched(n, torch_generator(0, "train")).numpy()
        est.fit(X)
    else:
        est.fit_moments(population_summary(Q, k=d))
    secs = time.perf_counter() - t0
    info = est.info_
    out = {"error": quadratic_gauge_error(Q, est.Q_), "seconds": secs, "build_s": info["build_time_s"],
           "solve_s": info["solve_time_s"], "iters": info["solver_iterations"], "status": info["solver_status"],
           "rank1": info["moment_matrix_rank1_ratio"], "residual": info["residual_norm"],
           "rounding_residual": info["rounding_residual"], "converged": info["converged"],
           "peak_gb": _status_kb("VmHWM") / 1e6}
    if n:  # the moment method on the same samples
        out["moments_error"] = quadratic_gauge_error(Q, QuadraticMomentEstimator(latent_dim=r, out_dim=d).fit(X).Q_)
    print(json.dumps(out))


def sos_table(sizes: list[tuple[int, int]], solver: str, ns: list[int]) -> list[dict]:
    """One child per (r, d, n); at each (r, n) the sizes stop growing after the first failure."""
    out = []
    stopped: set[tuple[int, int]] = set()
    for r, d in sizes:
        size = sos_size(r, d, solver)
        for n in ns:
            if (r, n) in stopped:
                continue
            rec = {"r": r, "d": d, "n": n, "solver": solver, "blocks": size.blocks_text(), "rows": size.rows,
                   "psd_entries": size.psd_entries, "soft": size.soft_constraints,
                   "est_gb": size.est_memory_gb, "est_s": size.est_seconds}
            try:
                res = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--child",
                                      f"sos:{r}:{d}:{solver}:{n}"], capture_output=True, text=True, timeout=660)
                rec.update(json.loads(res.stdout.strip().splitlines()[-1]) if res.returncode == 0
                           else {"status": f"failed: {res.stderr.strip().splitlines()[-1][:200]}"})
            except subprocess.TimeoutExpired:
                rec["status"] = "not solved within 660 s"
            out.append(rec)
            print(f"  SoS r={r} d={d} n={n or 'exact'}: {rec}", flush=True)
            if rec.get("status") not in ("optimal", "optimal_inaccurate") or rec.get("seconds", 1e9) > 600:
                stopped.add((r, n))
    return out


def sos_report(res: dict) -> None:
    max2 = args.sos_max_d or (5 if args.quick else 26)
    max3 = args.sos_r3_max_d or (8 if args.quick else 14)
    sizes = [(2, d) for d in range(3, max2 + 1)] + [(3, d) for d in range(6, max3 + 1)]
    ns = [int(float(x)) for x in args.sos_n.split(",")]
    res["sos"] = sos_table(sizes, args.sos_solver.upper(), ns)
    print("\n| r | d | n | blocks | est GB / s | peak GB | build s | solve s | iterations | gauge error "
          "(moment method) | certificate | residual (rounding) | converged |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for t in res["sos"]:
        if "peak_gb" not in t:
            print(f"| {t['r']} | {t['d']} | {t['n'] or 'exact'} | {t['blocks']} | {t['est_gb']:.2f} / {t['est_s']:.0f} "
                  f"| {t['status']} |")
            continue
        me = f" ({t['moments_error']:.2e})" if "moments_error" in t else ""
        print(f"| {t['r']} | {t['d']} | {t['n'] or 'exact'} | {t['blocks']} | {t['est_gb']:.2f} / {t['est_s']:.0f} "
              f"| {t['peak_gb']:.2f} | {t['build_s']:.1f} | {t['solve_s']:.1f} | {t['iters']} | {t['error']:.2e}{me} "
              f"| {t['rank1']:.2e} | {t['residual']:.2e} ({t['rounding_residual']:.2e}) | {t['converged']} |",
              flush=True)


# ------------------------------------------------------------------------------------------------
# 5. polynomial maps
# ------------------------------------------------------------------------------------------------
def _poly_truth(r: int, d: int, w: int, L: int, kind: str, seed: int):
    return make_instance("polynomial", r, d, kind=kind, sigma=0.1, degree=w, rank=L,
                         generator=torch_generator(seed, "instance"))


def _poly_error(truth, est) -> float:
    p = truth.params()
    return float(parameter_error("polynomial", p, {"lam": est.lam_, "v": est.v_}, degree=truth.degree)["param_error"])


def poly_population(r: int, d: int, w: int, L: int, kind: str, seeds: int, init: str) -> dict:
    """Exact population moments: recoveries (error < 1e-6) and fit times (fit_moments alone)."""
    rows = []
    for seed in range(seeds):
        truth = _poly_truth(r, d, w, L, kind, seed)
        p = truth.params()
        s = poly_population_summary(p["lam"], p["v"], w)
        est = PolynomialMomentEstimator(latent_dim=r, out_dim=d, degree=w, rank=L, seed=seed, init=init)
        t0 = time.perf_counter()
        est.fit_moments(s)
        secs = time.perf_counter() - t0
        rows.append({"seed": seed, "error": _poly_error(truth, est), "fit_s": secs, "init": est.info_["init"],
                     "converged": est.info_["converged"], "iterations": est.info_["total_iterations"]})
    errs = [row["error"] for row in rows]
    return {"r": r, "d": d, "w": w, "L": L, "kind": kind, "init": init, "seeds": seeds,
            "recovered": int(sum(e < 1e-6 for e in errs)), "converged": int(sum(row["converged"] for row in rows)),
            "median_error": float(np.median(errs)), "max_error": float(max(errs)),
            "median_fit_s": float(np.median([row["fit_s"] for row in rows])),
            "max_fit_s": float(max(row["fit_s"] for row in rows)), "rows": rows}


def poly_samples(r: int, d: int, w: int, L: int, n: int, seeds: int, init: str) -> dict:
    """From n samples: gauge-aligned error, the oracle's, their ratio and the fit's timings."""
    rows = []
    for seed in range(seeds):
        truth = _poly_truth(r, d, w, L, "random", seed)
        X = truth.sample_batched(n, torch_generator(seed, "train")).numpy()
        est = PolynomialMomentEstimator(latent_dim=r, out_dim=d, degree=w, rank=L, seed=seed, init=init)
        t0 = time.perf_counter()
        est.fit(X)
        wall = time.perf_counter() - t0
        err = _poly_error(truth, est)
        em = est.extra_metrics(truth, X)
        info = est.info_
        rows.append({"seed": seed, "error": err, "oracle": em["oracle_param_error"],
                     "ratio": err / em["oracle_param_error"], "fit_s": wall, "moments_s": info["moments_time_s"],
                     "start_s": info["start_time_s"], "refine_s": info["refine_time_s"],
                     "iterations": info["iterations"], "converged": info["converged"],
                     "optimizer_converged": info["optimizer_converged"], "init": info["init"],
                     "oracle_converged": em["oracle_converged"]})
        del X
    keys = ("error", "oracle", "ratio", "fit_s", "moments_s", "start_s", "iterations")
    med = {k: float(np.median([row[k] for row in rows])) for k in keys}
    return {"r": r, "d": d, "w": w, "L": L, "n": n, "init": init, "seeds": seeds, "median": med,
            "max_ratio": max(row["ratio"] for row in rows), "max_fit_s": max(row["fit_s"] for row in rows),
            "converged": int(sum(row["converged"] for row in rows)),
            "optimizer_converged": int(sum(row["optimizer_converged"] for row in rows)),
            "oracle_converged": int(sum(row["oracle_converged"] for row in rows)), "rows": rows}


def loglog_slope(recs: list[dict], key: str) -> float:
    """Least-squares slope of log(median[key]) against log(n) over the records."""
    ns = np.array([rec["n"] for rec in recs], dtype=float)
    return float(np.polyfit(np.log(ns), np.log([rec["median"][key] for rec in recs]), 1)[0])


def polynomial_section(res: dict) -> None:  # (main() has silenced UserWarning: fits report through info_)
    r, d = 3, 30
    pop_seeds = args.poly_pop_seeds or (5 if args.quick else 20)
    seeds = args.poly_seeds or (3 if args.quick else 10)
    base = args.poly_baseline_seeds if args.poly_baseline_seeds is not None else (1 if args.quick else 3)
    # warm-up (first calls of torch kernels and the cached Sym^w features), excluded
    t = _poly_truth(r, d, 3, 2, "random", 99)
    PolynomialMomentEstimator(latent_dim=r, out_dim=d, degree=3, rank=2).fit_moments(
        poly_population_summary(t.params()["lam"], t.params()["v"], 3))

    print("\n5a. exact population moments, r = 3, d = 30: recovered (error < 1e-6) of instances")
    print("| w | L | instances | start | recovered | converged flag | median error | max error | fit s (median, max) |")
    print("|---|---|---|---|---|---|---|---|---|")
    res["poly_population"] = []
    for w, L, kind in [(3, 2, "random"), (3, 2, "smoothed"), (3, 3, "random"), (3, 3, "smoothed"),
                       (4, 2, "random"), (4, 2, "smoothed")]:
        for init, k in (("auto", pop_seeds), ("random", base if (w, L) == (3, 2) else 0)):
            if k == 0:
                continue
            rec = poly_population(r, d, w, L, kind, k, init)
            res["poly_population"].append(rec)
            name = "algebraic" if init == "auto" else "random x3"
            print(f"| {w} | {L} | {kind} | {name} | {rec['recovered']} of {k} | {rec['converged']} of {k} "
                  f"| {rec['median_error']:.1e} | {rec['max_error']:.1e} | {rec['median_fit_s']:.2f}, "
                  f"{rec['max_fit_s']:.2f} |", flush=True)

    print("\n5b. from samples, w = 3, L = 2, r = 3, d = 30 (fit = moments + start + refinement + noise-level check)")
    print("| n | instances | start | error (median) | oracle (median) | error / oracle (median, max) "
          "| fit s (median, max) | moments s | start s | converged (flag / optimizer / oracle's) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    res["poly_samples"] = []
    sizes = [(10_000, min(seeds, 5)), (100_000, seeds)] + ([] if args.quick else [(1_000_000, min(seeds, 5))])
    runs = [(n, k, "auto") for n, k in sizes] + ([(100_000, base, "random")] if base else [])
    for n, k, init in runs:
        rec = poly_samples(r, d, 3, 2, n, k, init)
        res["poly_samples"].append(rec)
        m = rec["median"]
        name = "algebraic" if init == "auto" else "random x3"
        print(f"| {n:.0e} | {k} | {name} | {m['error']:.4f} | {m['oracle']:.4f} | {m['ratio']:.3f}, "
              f"{rec['max_ratio']:.3f} | {m['fit_s']:.1f}, {rec['max_fit_s']:.1f} | {m['moments_s']:.2f} "
              f"| {m['start_s']:.2f} | {rec['converged']} / {rec['optimizer_converged']} / {rec['oracle_converged']} "
              f"of {k} |", flush=True)
    alg = [rec for rec in res["poly_samples"] if rec["init"] == "auto"]
    if len(alg) >= 2:
        res["poly_slope_error"] = loglog_slope(alg, "error")
        res["poly_slope_oracle"] = loglog_slope(alg, "oracle")
        print(f"\nlog-log slope of median error vs n (w = 3, L = 2): {res['poly_slope_error']:.3f} "
              f"(oracle {res['poly_slope_oracle']:.3f})", flush=True)


# ------------------------------------------------------------------------------------------------
def main() -> None:
    if args.child:
        kind, *rest = args.child.split(":")
        if kind == "memmap":
            child_memmap(rest[0], int(rest[1]), int(rest[2]))
        else:
            child_sos(int(rest[0]), int(rest[1]), rest[2], int(rest[3]))
        return
    if args.only_sos:
        res = {"threads": args.threads, "load_start": load()}
        print(f"threads={args.threads}  load average {res['load_start']}", flush=True)
        sos_report(res)
        finish(res)
        return
    warnings.simplefilter("ignore", UserWarning)
    seeds = args.seeds or (3 if args.quick else 5)
    res: dict = {"threads": args.threads, "load_start": load(), "torch": torch.__version__}
    print(f"threads={args.threads}  load average {res['load_start']}", flush=True)
    if args.poly_only:
        polynomial_section(res)
        finish(res)
        return

    g = gemm_gflops()
    res["gemm"] = g
    res["contractions"] = [contraction_gflops(15, 1_000_000 if not args.quick else 200_000, 20),
                           contraction_gflops(55, 200_000 if not args.quick else 50_000, 60)]
    g2 = gemm_gflops()  # again after, since the machine's load drifts
    res["gemm_after"] = g2
    # The machine's rate: the best GEMM seen before or after (the conservative ratio).
    peak = max(*g.values(), *g2.values())
    res["gemm_peak_gflops"] = peak
    for c in res["contractions"]:
        for key in ("third", "third_all", "cov"):
            c[f"{key}_vs_gemm"] = c[f"{key}_gflops"] / peak
    print(f"GEMM f64 2000^3: torch {g['gemm_torch_gflops']:.1f} / numpy {g['gemm_numpy_gflops']:.1f} "
          f"GFLOP/s (after: {g2['gemm_torch_gflops']:.1f} / {g2['gemm_numpy_gflops']:.1f}); ratios use {peak:.1f}")
    for c in res["contractions"]:
        print(f"  third moment k={c['k']} (n={c['n']}, d={c['d']}): {c['third_s']:.3f} s, {c['third_gflops']:.1f} "
              f"GFLOP/s = {c['third_vs_gemm']:.2f} x GEMM (counting every flop of the pass: "
              f"{c['third_all_vs_gemm']:.2f} x);  covariance d={c['d']}: {c['cov_gflops']:.1f} GFLOP/s = "
              f"{c['cov_vs_gemm']:.2f} x GEMM", flush=True)
        st = c["stages_s"]
        tot = sum(st.values())
        gemm_rate = 2.0 * c["k"] * c["k"] * (c["k"] // 2 + 1) * c["n"] / st["gemm"] / 1e9
        print("    stages alone: " + ", ".join(f"{name} {t * 1e3:.0f} ms ({t / tot:.0%})" for name, t in st.items())
              + f"; the GEMM stage runs at {gemm_rate / peak:.2f} x GEMM, so the pass can reach at most "
              f"{gemm_rate / peak * st['gemm'] / tot:.2f} x", flush=True)

    # warm-up (torch kernels' first calls), excluded from the table
    t = make_instance("quadratic", 3, 8, generator=torch_generator(99, "instance"))
    QuadraticMomentEstimator(latent_dim=3, out_dim=8).fit(t.sample_batched(2000, torch_generator(99, "x")).numpy())

    settings = [(5, 20, 10_000), (5, 20, 100_000)] + ([] if args.quick else [(5, 20, 1_000_000)])
    settings.append((10, 60, 100_000))
    res["recovery"] = []
    print("\n| r | d | n | error (median) | oracle (median) | error / oracle (median, max) | spectral start "
          "| fit time s (median, max) | moments s | converged |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r, d, n in settings:
        rec = recovery(r, d, n, seeds)
        res["recovery"].append(rec)
        m = rec["median"]
        print(f"| {r} | {d} | {n:.0e} | {m['error']:.4f} | {m['oracle']:.4f} | {m['ratio']:.4f}, "
              f"{rec['max_ratio']:.4f} | {m['spectral']:.3f} | {m['fit_s']:.2f}, {rec['max_fit_s']:.2f} "
              f"| {m['moments_s']:.3f} | {rec['all_converged']} |", flush=True)
    r5 = [rec for rec in res["recovery"] if rec["r"] == 5]
    res["slope_error"] = loglog_slope(r5, "error")
    res["slope_oracle"] = loglog_slope(r5, "oracle")
    print(f"\nlog-log slope of median error vs n (r=5, d=20): {res['slope_error']:.3f} "
          f"(oracle {res['slope_oracle']:.3f})", flush=True)

    if not args.skip_memmap:
        rows = args.memmap_rows or (1_000_000 if args.quick else 10_000_000)
        mm = memmap_test(rows)
        res["memmap"] = mm
        print(f"memmap {mm['rows']:.0e} x 20 float32 ({mm['file_mb']:.0f} MB file): moments in "
              f"{mm['seconds']:.1f} s, anonymous memory {mm['rss_anon_base_mb']:.0f} MB before, "
              f"{mm['rss_anon_peak_mb']:.0f} MB peak", flush=True)

    if not args.skip_sos:
        sos_report(res)
    if not args.skip_poly:
        polynomial_section(res)
    finish(res)


def finish(res: dict) -> None:
    res["load_end"] = load()
    print(f"load average at the end: {res['load_end']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()

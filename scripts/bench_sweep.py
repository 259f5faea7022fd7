"""Sweep throughput: the same gan_vs_moments sweep run sequentially and with the local joblib pool.

    python scripts/bench_sweep.py            # reduced sweep (1 seed, 2 sizes, 300 steps): ratio only
    python scripts/bench_sweep.py --full     # also time the documented default sweep with the pool

Both runs happen in this one process, back to back, on the same overrides; the ratio
sequential / pool is what the 2-core target (>= 1.6x) is about.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REDUCED = ["+experiment=gan_vs_moments", "seed=0", "data.n_train=1000,10000", "++model.train.steps=300",
           "logger=none", "plots=false"]


def sweep(launcher: str | None, overrides: list[str], out: Path) -> tuple[float, dict]:
    env = {**os.environ, "PFBENCH_OUTPUT_DIR": str(out), "WANDB_MODE": "offline"}
    cmd = [sys.executable, "-m", "pfbench.train", "-m", *overrides]
    if launcher:
        cmd.append(f"hydra/launcher={launcher}")
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"sweep failed ({launcher or 'sequential'}):\n{p.stderr[-3000:]}")
    status: dict[str, int] = {}
    for f in out.glob("multirun/*/*/*/metrics.json"):
        s = json.loads(f.read_text())["status"]
        status[s] = status.get(s, 0) + 1
    return dt, status


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="also run the full default gan_vs_moments with the pool")
    ap.add_argument("--keep", type=Path, default=None, help="keep the full sweep's outputs under this directory")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        seq, st1 = sweep(None, REDUCED, Path(d) / "seq")
        pool, st2 = sweep("local_pool", REDUCED, Path(d) / "pool")
    print(f"reduced gan_vs_moments ({sum(st1.values())} jobs): sequential {seq:.1f} s {st1}, "
          f"local_pool {pool:.1f} s {st2}")
    print(f"speed-up local_pool / sequential: {seq / pool:.2f}x (target >= 1.6x on 2 cores)")
    if a.full:
        out = a.keep or Path(tempfile.mkdtemp())
        full, st = sweep("local_pool", ["+experiment=gan_vs_moments"], out)
        print(f"full gan_vs_moments with local_pool: {full / 60:.1f} min {st} (target <= 30 min); outputs in {out}")


if __name__ == "__main__":
    main()

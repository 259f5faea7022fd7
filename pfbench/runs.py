"""Reuse a finished run: rebuild its fitted generator and true distribution, run downstream tasks.

    python -m pfbench.runs <run dir> [--inversion] [--cs --ms 10,20,40] [--n 10] [--noise-std 0.01]

writes ``<run dir>/downstream.json`` (atomically) with the same keys the in-run ``tasks.*`` give:
any learned generator can be judged by compressed sensing or inversion after the fact.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pfbench import limit_blas_threads

limit_blas_threads()  # before numpy loads

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from pfbench import ConfigError  # noqa: E402
from pfbench.families import build_family  # noqa: E402
from pfbench.families.base import Pushforward  # noqa: E402
from pfbench.io import load_checkpoint, write_json  # noqa: E402
from pfbench.models.nets import MLPGenerator  # noqa: E402


def load_generator(run_dir: str | Path) -> Pushforward:
    """The fitted generator of a run (from ``generator.pt``), in float64, frozen."""
    path = Path(run_dir) / "generator.pt"
    if not path.exists():
        raise ConfigError(f"{path} does not exist: the run did not finish (see its metrics.json status)")
    rec = load_checkpoint(path)
    from pfbench.baselines import PUSHFORWARDS

    if rec["family"] == "mlp":
        g: Pushforward = MLPGenerator(rec["latent_dim"], rec["out_dim"], **rec["kwargs"])
    elif rec["family"] in PUSHFORWARDS:  # a reference method's sample (memorized rows, a Gaussian)
        g = PUSHFORWARDS[rec["family"]](rec["latent_dim"], rec["out_dim"], **rec["kwargs"])
    else:
        g = build_family(rec["family"], rec["latent_dim"], rec["out_dim"], **rec["kwargs"])
    g.load_state_dict(rec["state_dict"])
    g = g.double()
    for p in g.parameters():
        p.requires_grad_(False)
    return g


def load_truth(run_dir: str | Path) -> Pushforward | None:
    """The run's true distribution rebuilt from its config and seed (None for data=file)."""
    cfg = OmegaConf.load(Path(run_dir) / "config.yaml")
    if cfg.data.name == "file":
        return None
    from pfbench.data import make_truth

    return make_truth(cfg)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pfbench.runs", description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--inversion", action="store_true", help="layerwise LP inversion of the generator")
    ap.add_argument("--cs", action="store_true", help="compressed sensing of true samples through the generator")
    ap.add_argument("--ms", default="10,25,50,100,200", help="measurement counts for --cs")
    ap.add_argument("--n", type=int, default=10, help="fresh samples per task")
    ap.add_argument("--noise-std", type=float, default=None, help="measurement noise (default 1e-6 / 0.0)")
    ap.add_argument("--seed", type=int, default=None, help="default: the run's seed")
    a = ap.parse_args(argv)
    try:
        torch.set_num_threads(1)
        g = load_generator(a.run_dir)
        cfg = OmegaConf.load(a.run_dir / "config.yaml")
        seed = cfg.seed if a.seed is None else a.seed
        out: dict = {"run_dir": str(a.run_dir), "seed": seed}
        if a.inversion:
            from pfbench.tasks.inversion import inversion_task

            noise = 1e-6 if a.noise_std is None else a.noise_std
            out.update(inversion_task(g, n=a.n, seed=seed, noise_std=noise))
        if a.cs:
            truth = load_truth(a.run_dir)
            if truth is None:
                raise ConfigError("compressed sensing needs a true distribution; this run used data=file")
            from pfbench.tasks.compressed_sensing import compressed_sensing_task

            ms = [int(m) for m in a.ms.split(",")]
            out.update(compressed_sensing_task(g, truth, ms=ms, n=a.n, seed=seed, noise_std=a.noise_std or 0.0))
        if not (a.inversion or a.cs):
            ap.error("choose at least one task: --inversion and/or --cs")
    except ConfigError as e:
        print(f"pfbench.runs: error: {e}", file=sys.stderr)
        return 2
    write_json(a.run_dir / "downstream.json", out)
    print(f"pfbench.runs: {a.run_dir / 'downstream.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

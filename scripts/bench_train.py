"""WGAN generator steps per second: pfbench's training loop vs a minimal plain-PyTorch loop.

Both use the same generator (well-specified quadratic, r = 5, d = 20), the same MLP critic
(width 128, depth 2), batch 256, n_critic 5, RMSprop and weight clipping, one thread, and are
timed in the same process, alternating, so machine noise hits both. Prints the ratio.

    python scripts/bench_train.py [--steps 300] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from pfbench.config import ModelConfig
from pfbench.families import make_instance
from pfbench.models import build_trainer
from pfbench.seeding import torch_generator
from pfbench.training import train


def model_cfg():
    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(Path(__file__).parents[1]
                                                                            / "conf/model/wgan.yaml"))
    return cfg


def pfbench_loop(x: torch.Tensor, steps: int) -> float:
    m = model_cfg()
    tr = build_trainer(m, family="quadratic", latent_dim=5, out_dim=20, family_kwargs={}, seed=0)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        train(tr, x, steps=steps, seed_rng=torch_generator(0, "batches"), log_every=m.train.log_every,
              checkpoint_every=m.train.checkpoint_every, checkpoint_path=Path(d) / "ck.pt", fingerprint="b",
              progress=True, desc="pfbench")
        return steps / (time.perf_counter() - t0)


def plain_loop(x: torch.Tensor, steps: int) -> float:
    m = model_cfg()
    tr = build_trainer(m, family="quadratic", latent_dim=5, out_dim=20, family_kwargs={}, seed=0)
    G, D = tr.generator, tr.critic
    opt_g = torch.optim.RMSprop(G.parameters(), lr=5e-5)
    opt_d = torch.optim.RMSprop(D.parameters(), lr=5e-5)
    n, B = x.shape[0], 256
    t0 = time.perf_counter()
    for _ in range(steps):
        for _ in range(5):
            real = x[torch.randint(n, (B,))]
            with torch.no_grad():
                fake = G(torch.randn(B, 5))
            loss_d = D(fake).mean() - D(real).mean()
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            for p in D.parameters():
                p.data.clamp_(-0.01, 0.01)
        loss_g = -D(G(torch.randn(B, 5))).mean()
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
    return steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    truth = make_instance("quadratic", 5, 20, generator=torch_generator(0, "instance"))
    x = truth.sample_batched(10000, torch_generator(0, "train")).float()
    pfbench_loop(x, 20), plain_loop(x, 20)  # warm-up
    pf, pl = [], []
    for _ in range(a.repeats):
        pl.append(plain_loop(x, a.steps))
        pf.append(pfbench_loop(x, a.steps))
    best_pf, best_pl = max(pf), max(pl)
    print(f"plain PyTorch loop : {best_pl:7.1f} generator steps/s  (runs: {', '.join(f'{v:.1f}' for v in pl)})")
    print(f"pfbench train()    : {best_pf:7.1f} generator steps/s  (runs: {', '.join(f'{v:.1f}' for v in pf)})")
    print(f"ratio pfbench/plain: {best_pf / best_pl:.3f}  (target >= 0.9; best of {a.repeats}, {a.steps} steps, "
          f"{a.threads} thread(s))")


if __name__ == "__main__":
    main()

"""One config seed drives every random draw: each consumer gets its own named stream.

Streams are derived with numpy's SeedSequence from (seed, crc32(stream name)), so adding a
new consumer never shifts the numbers another one sees, and seed 0 is an ordinary seed.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch


def stream_seed(seed: int, stream: str) -> int:
    """A 63-bit integer seed for the named stream of ``seed``."""
    if seed is None or int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    ss = np.random.SeedSequence([int(seed), zlib.crc32(stream.encode())])
    return int(ss.generate_state(2, dtype=np.uint32).astype(np.uint64) @ np.array([1, 2**31], dtype=np.uint64))


def torch_generator(seed: int, stream: str, device: str | torch.device = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(stream_seed(seed, stream))
    return g


def numpy_generator(seed: int, stream: str) -> np.random.Generator:
    return np.random.default_rng(stream_seed(seed, stream))

"""Figures written into every run directory: true vs generated samples, and training curves."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
logging.getLogger("matplotlib").setLevel(logging.WARNING)  # no font-cache INFO lines in run logs
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_samples(true: np.ndarray, fake: np.ndarray | None, path: Path, title: str, n_pairs: int = 3,
                 max_points: int = 2000) -> Path:
    """Scatter coordinate pairs (0,1), (2,3), ... of true and generated samples side by side."""
    true = np.asarray(true)[:max_points]
    d = true.shape[1]
    pairs = [(i, i + 1) for i in range(0, max(d - 1, 1), 2)][:n_pairs] if d > 1 else [(0, 0)]
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.2 * len(pairs), 4), squeeze=False)
    for ax, (i, j) in zip(axes[0], pairs):
        if d == 1:
            ax.hist(true[:, 0], bins=60, alpha=0.5, density=True, label="true")
            if fake is not None:
                ax.hist(np.asarray(fake)[:max_points, 0], bins=60, alpha=0.5, density=True, label="generated")
            ax.set_xlabel("x_0")
        else:
            ax.scatter(true[:, i], true[:, j], s=3, alpha=0.4, label="true (held out)")
            if fake is not None:
                f = np.asarray(fake)[:max_points]
                ax.scatter(f[:, i], f[:, j], s=3, alpha=0.4, label="generated")
            ax.set_xlabel(f"x_{i}")
            ax.set_ylabel(f"x_{j}")
        ax.legend(loc="upper right", markerscale=4, fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_curves(history: list[dict], path: Path, title: str) -> Path | None:
    """One panel per logged quantity against the generator step."""
    if not history:
        return None
    keys = [k for k in history[0] if k != "step"]
    steps = [h["step"] for h in history]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
    for ax, k in zip(axes[0], keys):
        ax.plot(steps, [h.get(k, np.nan) for h in history])
        ax.set_xlabel("generator step")
        ax.set_title(k)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path

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


#: y-axis labels of the logged training losses (others are labelled with their key)
LOSS_LABELS = {"loss_d": "discriminator / critic loss", "loss_g": "generator loss",
               "loss": "loss (negative ELBO)", "nll": "reconstruction NLL", "kl": "KL(q(z|x) || p(z))"}


def plot_curves(history: list[dict], path: Path, title: str, evals: list[dict] | None = None,
                selected_step: int | None = None) -> Path | None:
    """One panel per logged loss against the generator step, and one for the periodic evaluations.

    The evaluation panel (log y) shows the validation statistics and, for the record, the parameter
    error against the truth (dashed: EMA generator); the selected checkpoint is a vertical line.
    """
    evals = evals or []
    if not history and not evals:
        return None
    keys = [k for k in history[0] if k != "step"] if history else []
    n_panels = len(keys) + (1 if evals else 0)
    fig, axes = plt.subplots(1, n_panels, figsize=(4.2 * n_panels, 3.4), squeeze=False)
    steps = [h["step"] for h in history]
    for ax, k in zip(axes[0], keys):
        ax.plot(steps, [h.get(k, np.nan) for h in history])
        ax.set_xlabel("generator step")
        ax.set_ylabel(LOSS_LABELS.get(k, k))
        ax.set_title(k)
        ax.grid(alpha=0.3)
    if evals:
        ax = axes[0][-1]
        es = [e["step"] for e in evals]
        for k, color in (("val_moments", "C0"), ("val_sw", "C1"), ("param_error", "C3")):
            for prefix, style in (("", "-"), ("ema_", "--")):
                vals = [e.get(prefix + k) for e in evals]
                vals = [np.nan if v is None or not np.isfinite(v) or v <= 0 else v for v in vals]
                if not all(np.isnan(vals)):
                    ax.plot(es, vals, style, color=color, label=prefix + k + (" (truth)" if k == "param_error" else ""))
        if selected_step is not None:
            ax.axvline(selected_step, color="k", lw=0.8, alpha=0.6, label=f"selected ({selected_step})")
        ax.set_yscale("log")
        ax.set_xlabel("generator step")
        ax.set_ylabel("value (log scale; lower is better)")
        ax.set_title("periodic evaluation")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path

"""Plots a person would rather look at than read: learning curves."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from rnnkit.utils import atomic_write


def plot_learning_curves(
    records: Sequence[dict[str, Any]], out: str | os.PathLike[str], unit: str, title: str = ""
) -> None:
    """Training and validation loss (bits per token) against tokens seen, and the learning rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r.get("kind") == "train"]
    valid = [r for r in records if r.get("kind") == "valid"]
    fig, (ax, ax_lr) = plt.subplots(
        2, 1, figsize=(8, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ln2 = math.log(2)
    if train:
        ax.plot(
            [r["tokens"] for r in train],
            [r["train_loss"] / ln2 for r in train],
            label="train (smoothed)",
            alpha=0.8,
        )
    if valid:
        ax.plot(
            [r["tokens"] for r in valid],
            [r["valid_loss"] / ln2 for r in valid],
            "o-",
            label="validation",
        )
        best = min(valid, key=lambda r: r["valid_loss"])
        ax.annotate(
            f"best {best['valid_loss'] / ln2:.3f} bits/{unit}",
            (best["tokens"], best["valid_loss"] / ln2),
            textcoords="offset points",
            xytext=(0, 12),
            ha="center",
        )
    ax.set_ylabel(f"bits per {unit}")
    ax.set_title(title or "learning curves")
    ax.grid(alpha=0.3)
    ax.legend()
    lr = train or valid
    ax_lr.plot([r["tokens"] for r in lr], [r["lr"] for r in lr], color="gray")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel(f"training {unit}s seen")
    ax_lr.set_yscale("log")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(out, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)

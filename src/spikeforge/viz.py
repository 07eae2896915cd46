"""Plots of runs and networks, written as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = [
    "plot_accuracy_curves",
    "plot_accuracy_vs_steps",
    "plot_membranes",
    "plot_raster",
]


def _save(fig: plt.Figure, path: Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_accuracy_curves(metrics: Sequence[dict], path: Path, title: str = "") -> Path:
    """Train and test accuracy (and train loss) per epoch from ``metrics.jsonl`` records."""
    epochs = [m["epoch"] for m in metrics]
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(10, 4))
    acc_ax.plot(epochs, [100 * m["train_accuracy"] for m in metrics], "o-", label="train")
    acc_ax.plot(epochs, [100 * m["test_accuracy"] for m in metrics], "s-", label="test")
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("accuracy (%)")
    acc_ax.grid(alpha=0.3)
    acc_ax.legend()
    loss_ax.plot(epochs, [m["train_loss"] for m in metrics], "o-", color="C2")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("train loss (cross-entropy)")
    loss_ax.set_yscale("log")
    loss_ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_accuracy_vs_steps(steps: Sequence[int], accuracy: Sequence[float], path: Path) -> Path:
    """Test accuracy against the number of time steps T used in evaluation."""
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(list(steps), [100 * a for a in accuracy], "o-")
    ax.set_xlabel("time steps T at test")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_membranes(membrane: np.ndarray, label: int, path: Path) -> Path:
    """Readout membrane trajectories ``[T, classes]`` of one sample; the true class drawn bold."""
    steps, classes = membrane.shape
    fig, ax = plt.subplots(figsize=(6, 4))
    for c in range(classes):
        ax.plot(
            np.arange(1, steps + 1),
            membrane[:, c],
            lw=2.5 if c == label else 1.0,
            label=str(c),
            color=f"C{c % 10}",
        )
    ax.set_xlabel("time step")
    ax.set_ylabel("output membrane potential")
    ax.set_title(f"output neurons, true class {label}")
    ax.legend(ncol=5, fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_raster(spikes: np.ndarray, path: Path, title: str) -> Path:
    """Spike raster of one sample's layer: ``spikes[T, N]`` of 0/1."""
    steps, neurons = spikes.shape
    t, n = np.nonzero(spikes)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(t + 1, n, s=2, marker="|", color="k")
    ax.set_xlim(0.5, steps + 0.5)
    ax.set_ylim(-0.5, neurons - 0.5)
    ax.set_xlabel("time step")
    ax.set_ylabel("neuron")
    rate = spikes.mean()
    ax.set_title(f"{title} ({rate:.3f} spikes per neuron per step)")
    return _save(fig, path)

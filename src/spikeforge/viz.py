"""Plots of runs and networks, written as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = [
    "plot_accuracy_curves",
    "plot_active_fraction",
    "plot_accuracy_vs_steps",
    "plot_compression",
    "plot_membranes",
    "plot_raster",
    "plot_confusion",
    "plot_receptive_fields",
    "plot_stdp_training",
    "plot_filters",
    "plot_reconstruction_mse",
    "plot_run_comparison",
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


def plot_run_comparison(runs: dict[str, Sequence[dict]], path: Path, title: str = "") -> Path:
    """Test accuracy per epoch of several runs (label -> ``metrics.jsonl`` records), one line
    each, the last epoch's accuracy in the legend: e.g. dense against sparse backward."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, metrics in runs.items():
        epochs = [m["epoch"] for m in metrics]
        accuracy = [100 * m["test_accuracy"] for m in metrics]
        style = "--" if "dense" in label else "-"
        ax.plot(epochs, accuracy, style, marker="o", ms=3, label=f"{label} ({accuracy[-1]:.2f}%)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_active_fraction(metrics: Sequence[dict], path: Path, title: str = "") -> Path:
    """Active fraction of each hidden layer per epoch (sparse backward: entries with
    ``|u - threshold| < active_bound`` over ``T*B*N``), from ``metrics.jsonl`` records."""
    rows = [m for m in metrics if "active_fraction" in m]
    fig, ax = plt.subplots(figsize=(5, 4))
    for k in range(len(rows[0]["active_fraction"]) if rows else 0):
        ax.plot(
            [m["epoch"] for m in rows],
            [100 * m["active_fraction"][k] for m in rows],
            "o-",
            label=f"hidden layer {k + 1}",
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("active entries (% of T·B·N)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_accuracy_vs_steps(steps: Sequence[int], accuracy: Sequence[float], path: Path) -> Path:
    """Test accuracy against the number of time steps T used in evaluation."""
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(list(steps), [100 * a for a in accuracy], "o-")
    ax.set_xlabel("time steps T at test")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_compression(
    paths: Mapping[str, tuple[Sequence[int], Sequence[float]]],
    simulated: Mapping[str, tuple[int, float]],
    merged_accuracy: float,
    path: Path,
    title: str = "",
) -> Path:
    """Ensemble STDP compression: accuracy against neurons removed from the merged network.

    Args:
        paths: per metric, (neurons removed, estimated accuracy) along its pruning path (lines).
        simulated: per compressed network, (neurons removed, accuracy measured by simulation)
            (markers; the genetic algorithm's network among them).
        merged_accuracy: the uncompressed merged network's accuracy (dotted line).
    """
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    colors = {}
    for index, (name, (removed, accuracy)) in enumerate(paths.items()):
        colors[name] = f"C{index}"
        ax.plot(removed, [100 * a for a in accuracy], "-", color=colors[name], label=name)
    for index, (name, (removed, accuracy)) in enumerate(simulated.items()):
        color = colors.get(name, f"C{len(paths) + index}")
        ax.plot([removed], [100 * accuracy], "o", color=color, markeredgecolor="black")
        if name not in colors:
            ax.plot([], [], "o", color=color, markeredgecolor="black", label=name)
    ax.axhline(100 * merged_accuracy, color="gray", linestyle=":", label="merged (no removal)")
    ax.set_xlabel("neurons removed from the merged network")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or "lines: estimated from merged spike counts; dots: simulated", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
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


def plot_confusion(matrix: np.ndarray, path: Path, title: str = "") -> Path:
    """Confusion matrix ``[C, C]`` (rows: true class, columns: predicted), counts annotated."""
    matrix = np.asarray(matrix)
    classes = matrix.shape[0]
    fig, ax = plt.subplots(figsize=(6, 5.2))
    image = ax.imshow(matrix, cmap="Blues")
    for t in range(classes):
        for p in range(classes):
            colour = "white" if matrix[t, p] > matrix.max() / 2 else "black"
            ax.text(p, t, str(matrix[t, p]), ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(classes))
    ax.set_yticks(range(classes))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    fig.colorbar(image, ax=ax, fraction=0.046)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_receptive_fields(
    weights: np.ndarray, shape: tuple[int, int], path: Path, labels: Sequence[int] | None = None
) -> Path:
    """Each neuron's incoming weights ``weights[:, i]`` (``[K, N]``, K = H*W) as an image grid,
    titled by the neuron's assigned class when ``labels`` is given."""
    weights = np.asarray(weights)
    neurons = weights.shape[1]
    side = int(np.ceil(np.sqrt(neurons)))
    fig, axes = plt.subplots(side, side, figsize=(side * 0.9, side * 0.9), squeeze=False)
    vmax = weights.max()
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index < neurons:
            ax.imshow(weights[:, index].reshape(shape), cmap="hot_r", vmin=0, vmax=vmax)
            if labels is not None:
                ax.set_title(str(labels[index]), fontsize=6, pad=1)
    fig.subplots_adjust(wspace=0.05, hspace=0.3)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_stdp_training(metrics: Sequence[dict], path: Path, title: str = "") -> Path:
    """Windowed training accuracy, spikes per image and mean adaptive threshold against images
    seen (Diehl & Cook runs): activity dying as thresholds grow shows up here."""
    images = [m["images"] for m in metrics]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    axes[0].plot(images, [100 * m["window_train_accuracy"] for m in metrics], "o-")
    axes[0].set_ylabel("windowed training accuracy (%)")
    axes[1].plot(images, [m["spikes_per_image"] for m in metrics], "o-", label="spikes")
    axes[1].plot(
        images, [m["presentations_per_image"] for m in metrics], "s-", label="presentations"
    )
    axes[1].set_ylabel("per image")
    axes[1].legend()
    axes[2].plot(images, [m["theta_mean"] for m in metrics], "o-", label="mean")
    axes[2].plot(images, [m["theta_max"] for m in metrics], "s-", label="max")
    axes[2].set_ylabel("adaptive threshold theta (mV)")
    axes[2].legend()
    for ax in axes:
        ax.set_xlabel("training images")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_filters(filter_sets: dict[str, np.ndarray], kernel: int, path: Path) -> Path:
    """Convolution filters ``w[k, p*p]`` as image grids, one panel per named set side by side
    (e.g. the filters learned with window_batch 1 and 784)."""
    sets = list(filter_sets.items())
    count = max(np.asarray(f).shape[0] for _, f in sets)
    columns = int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / columns))
    fig = plt.figure(figsize=(len(sets) * (columns * 0.8 + 0.4), rows * 0.8 + 0.6))
    outer = fig.add_gridspec(1, len(sets), wspace=0.15)
    for panel, (name, filters) in enumerate(sets):
        filters = np.asarray(filters)
        inner = outer[panel].subgridspec(rows, columns, wspace=0.08, hspace=0.08)
        for index in range(rows * columns):
            ax = fig.add_subplot(inner[index // columns, index % columns])
            ax.axis("off")
            if index < filters.shape[0]:
                ax.imshow(filters[index].reshape(kernel, kernel), cmap="gray_r", vmin=0, vmax=1)
            if index == 0 and name:
                ax.set_title(name, fontsize=8, loc="left", pad=3)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def plot_reconstruction_mse(curves: dict[str, Sequence[dict]], path: Path) -> Path:
    """Reconstruction MSE (moving average) against training images, one line per run."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, metrics in curves.items():
        ax.plot(
            [m["images"] for m in metrics], [m["mse_moving_average"] for m in metrics], label=name
        )
    ax.set_xlabel("training images")
    ax.set_ylabel("reconstruction MSE (moving average)")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)

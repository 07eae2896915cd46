"""Trainer of the Diehl & Cook (2015) STDP network (method ``diehl-cook``).

Images are shown one at a time (per-image sequential learning: each image's weight updates are
applied before the next image), or, with ``diehl_cook.batch_size > 1``, in batches whose images
learn from the same start and have their changes averaged (or summed): a different order of
computation, see :mod:`spikeforge.stdp.diehl_cook_batched`. Batches end at metrics windows, so
checkpoints (and resume) fall between batches. Every ``diehl_cook.log_every`` images a line goes to
``metrics.jsonl`` (windowed training accuracy: neurons labelled by the previous window's responses,
then used to classify this window, the authors' running estimate; mean theta; spikes and
presentations per image, to catch activity dying as thresholds grow) and an atomic checkpoint is
written. After training, neurons are labelled by a pass with learning off over the last
``label_images`` training images, and the test set is classified by all-activity (the paper's rule)
and by proportion weighting. Evaluation passes start from the resting state with the trained
weights and thresholds, and their encoder seeds are fixed, so ``spikeforge eval`` reproduces them.

Resume is exact: weights, the whole network state, both random streams, the epoch's image order and
the current metrics window are in the checkpoint; Ctrl-C is honoured between images.
"""

from __future__ import annotations

import json
import platform
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from spikeforge.data.vision import load_vision
from spikeforge.run.checkpoint import (
    atomic_write_text,
    load_checkpoint,
    prepare_run_dir,
    save_checkpoint,
)
from spikeforge.run.config import RunConfig, config_to_dict, load_config, save_config
from spikeforge.stdp import (
    DiehlCookNetwork,
    DiehlCookParams,
    assign_labels,
    confusion_matrix,
    current_based_params,
    new_state,
    predict_all_activity,
    predict_proportion,
    run_images,
)
from spikeforge.stdp.diehl_cook import NetworkState, present_image
from spikeforge.stdp.diehl_cook_batched import present_batch

__all__ = [
    "params_from_config",
    "spike_counts",
    "train_diehl_cook",
    "evaluate_diehl_cook",
    "evaluate_run_diehl_cook",
    "plot_run_diehl_cook",
    "load_network",
]

_LABEL_SEED_OFFSET = 2_000_003
_TEST_SEED_OFFSET = 3_000_017


def params_from_config(config: RunConfig) -> DiehlCookParams:
    """The model constants a config describes (zeros in exc_to_inh/inh_to_exc: model default)."""
    dc = config.diehl_cook
    values: dict[str, Any] = dict(
        rule=dc.rule,
        dt=dc.dt,
        present_ms=dc.present_ms,
        rest_ms=dc.rest_ms,
        max_rate_hz=dc.max_rate_hz,
        rate_step_hz=dc.max_rate_hz / 2,
        min_spikes=dc.min_spikes,
        max_presentations=dc.max_presentations,
        theta_plus=dc.theta_plus,
        tau_theta=dc.tau_theta_ms,
        nu_pre=dc.nu_pre,
        nu_post=dc.nu_post,
        w_max=dc.w_max,
        norm_total=dc.norm_total,
    )
    if dc.exc_to_inh > 0:
        values["exc_to_inh"] = dc.exc_to_inh
    if dc.inh_to_exc > 0:
        values["inh_to_exc"] = dc.inh_to_exc
    if dc.spike_gap_ms >= 0:
        values["exc_spike_gap"] = dc.spike_gap_ms
    if dc.neuron_model == "current":
        return current_based_params(**values)
    return DiehlCookParams(**values)


@dataclass
class _Data:
    train_x: np.ndarray  # float64 [M, K] in [0, 1]
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def _load_data(config: RunConfig) -> _Data:
    root = config.data.root or None
    train = load_vision(config.data.name, "train", root=root, limit=config.data.limit)
    test = load_vision(config.data.name, "test", root=root, limit=config.data.test_limit)
    return _Data(
        train.flat_intensities().numpy().astype(np.float64),
        train.labels.numpy(),
        test.flat_intensities().numpy().astype(np.float64),
        test.labels.numpy(),
    )


@dataclass
class _Progress:
    """Where training stands; with the arrays in the checkpoint, enough to replay the rest."""

    epoch: int = 0  # epochs fully done
    image: int = 0  # images done inside the current epoch
    train_seconds: float = 0.0
    train_samples: int = 0
    presentations: int = 0
    window_start: float = 0.0  # train_seconds at the start of the metrics window
    window_filled: int = 0
    window_presentations: int = 0
    metrics_lines: int = 0
    last_assignment_ready: bool = False


def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
    return rng.bit_generator.state


def _set_rng_state(rng: np.random.Generator, state: dict[str, Any]) -> None:
    rng.bit_generator.state = state


def _save(
    out: Path,
    network: DiehlCookNetwork,
    progress: _Progress,
    rngs: dict[str, np.random.Generator],
    order: np.ndarray | None,
    window: dict[str, np.ndarray],
    complete: bool,
) -> None:
    tensors = {"weights": torch.from_numpy(network.weights)}
    tensors.update({f"state.{k}": torch.from_numpy(v) for k, v in network.state.arrays().items()})
    tensors.update({f"window.{k}": torch.from_numpy(v) for k, v in window.items()})
    if order is not None:
        tensors["order"] = torch.from_numpy(order)
    meta = {
        "progress": asdict(progress),
        "rngs": {name: _rng_state(rng) for name, rng in rngs.items()},
        "complete": complete,
    }
    save_checkpoint(out, tensors, meta)


def load_network(run_dir: Path, config: RunConfig) -> DiehlCookNetwork:
    """The trained network of a run directory (weights, thresholds, state at the checkpoint)."""
    tensors, _ = load_checkpoint(run_dir)
    state = NetworkState(
        **{
            k[len("state.") :]: v.numpy().copy()
            for k, v in tensors.items()
            if k.startswith("state.")
        }
    )
    return DiehlCookNetwork(
        params_from_config(config),
        tensors["weights"].numpy().copy(),
        state,
        config.diehl_cook.engine,
    )


def _frozen_copy(network: DiehlCookNetwork) -> DiehlCookNetwork:
    """Trained weights and thresholds, everything else at rest: the start of an evaluation pass."""
    n_inputs, n_neurons = network.weights.shape
    state = new_state(network.params, n_inputs, n_neurons)
    state.theta[:] = network.state.theta
    return DiehlCookNetwork(network.params, network.weights.copy(), state, network.engine)


def spike_counts(
    network: DiehlCookNetwork,
    images: np.ndarray,
    seed: int,
    on_image: Callable[..., None] | None = None,
) -> np.ndarray:
    """Spike counts [M, N] of ``images`` [M, K] with learning off, from the resting state with the
    trained weights and thresholds; the encoder is seeded by ``seed``, so the counts are
    reproducible. ``on_image(index, counts, presentations)`` is called after each image."""
    rng = np.random.default_rng(seed)
    return run_images(_frozen_copy(network), images, rng, False, on_image)


def evaluate_diehl_cook(
    network: DiehlCookNetwork, config: RunConfig, data: _Data, progress: bool = False
) -> dict[str, Any]:
    """Label neurons on the last ``label_images`` training images, classify the test set.

    Returns test accuracy by all activity and by proportion weighting, the confusion matrix (all
    activity), the neurons' class assignments and the test spike statistics.
    """
    label_count = config.diehl_cook.label_images or len(data.train_y)
    label_x = data.train_x[-label_count:]
    label_y = data.train_y[-label_count:]
    with tqdm(
        total=len(label_y) + len(data.test_y), desc="label + test", disable=not progress,
        leave=False, unit="img",
    ) as bar:  # fmt: skip

        def tick(*_: Any) -> None:
            bar.update(1)

        label_counts = spike_counts(network, label_x, config.seed + _LABEL_SEED_OFFSET, tick)
        test_counts = spike_counts(network, data.test_x, config.seed + _TEST_SEED_OFFSET, tick)
    assignment = assign_labels(label_counts, label_y)
    all_activity = predict_all_activity(test_counts, assignment)
    proportion = predict_proportion(test_counts, assignment)
    return {
        "test_accuracy": float((all_activity == data.test_y).mean()),
        "test_accuracy_proportion": float((proportion == data.test_y).mean()),
        "label_images": int(len(label_y)),
        "test_images": int(len(data.test_y)),
        "test_spikes_per_image": float(test_counts.sum(1).mean()),
        "confusion": confusion_matrix(data.test_y, all_activity).tolist(),
        "assignments": assignment.assignments.tolist(),
    }


def _window_record(
    network: DiehlCookNetwork, progress: _Progress, window: dict[str, np.ndarray], epoch: int
) -> dict[str, Any]:
    """Metrics of the window just filled; the window's responses label the next window."""
    filled = progress.window_filled
    counts, labels = window["counts"][:filled], window["labels"][:filled]
    accuracy = float("nan")
    if progress.last_assignment_ready:
        previous = assign_labels(window["previous_counts"], window["previous_labels"])
        accuracy = float((predict_all_activity(counts, previous) == labels).mean())
    seconds = progress.train_seconds - progress.window_start
    return {
        "epoch": epoch,
        "images": progress.train_samples,
        "window_train_accuracy": accuracy,
        "spikes_per_image": float(counts.sum(1).mean()),
        "active_neurons_per_image": float((counts > 0).sum(1).mean()),
        "presentations_per_image": progress.window_presentations / max(filled, 1),
        "theta_mean": float(network.state.theta.mean()),
        "theta_max": float(network.state.theta.max()),
        "weight_max": float(network.weights.max()),
        "train_seconds": progress.train_seconds,
        "samples_per_second": filled / max(seconds, 1e-9),
    }


class _InterruptFlag:
    """Turn Ctrl-C into a flag checked between images (an image is never cut in half)."""

    def __init__(self) -> None:
        self.raised = False
        self._previous: Any = None

    def __enter__(self) -> _InterruptFlag:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, *_: Any) -> None:
        self.raised = True

    def __exit__(self, *_: Any) -> None:
        signal.signal(signal.SIGINT, self._previous)


def train_diehl_cook(
    config: RunConfig,
    out: Path,
    resume: bool = False,
    log: Any = print,
    *,
    train_indices: np.ndarray | None = None,
    evaluate: bool = True,
    on_image: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Train, label, test; write the run directory; return the summary (also ``summary.json``).

    Args:
        train_indices: train on these images of the training set only (a shard, in this order
            before the epoch's shuffle); labelling then uses the shard's last ``label_images``.
        evaluate: False skips the labelling and test passes: the summary then holds the training
            figures only (the ensemble trainer evaluates its sub-models itself).
        on_image: called as ``on_image(images_done, images_total)`` after each training image,
            counting over all epochs (progress reports).
    """
    from spikeforge.run.bptt import TrainingInterrupted, _cpu_name, _set_threads

    out = prepare_run_dir(out, resume)
    _set_threads(config.train.threads)
    data = _load_data(config)
    if train_indices is not None:
        train_indices = np.asarray(train_indices, np.int64)
        data = _Data(
            data.train_x[train_indices], data.train_y[train_indices], data.test_x, data.test_y
        )
    n_train, n_inputs = data.train_x.shape
    dc = config.diehl_cook
    network = DiehlCookNetwork.create(
        params_from_config(config), n_inputs, dc.neurons, config.seed, dc.engine
    )
    rngs = {
        "order": np.random.default_rng(config.seed),
        "encode": np.random.default_rng(config.seed + 1),
    }
    window = {
        "counts": np.zeros((dc.log_every, dc.neurons), np.int64),
        "labels": np.zeros(dc.log_every, np.int64),
        "previous_counts": np.zeros((dc.log_every, dc.neurons), np.int64),
        "previous_labels": np.zeros(dc.log_every, np.int64),
    }
    progress = _Progress()
    order: np.ndarray | None = None
    if resume:
        from spikeforge.run.bptt import _check_resumable

        _check_resumable(load_config(out / "config.toml"), config)
        tensors, meta = load_checkpoint(out)
        network = load_network(out, config)
        for name, rng in rngs.items():
            _set_rng_state(rng, meta["rngs"][name])
        for name in window:
            window[name] = tensors[f"window.{name}"].numpy().copy()
        progress = _Progress(**meta["progress"])
        order = tensors["order"].numpy().copy() if "order" in tensors else None
        lines = [ln for ln in (out / "metrics.jsonl").read_text().splitlines() if ln.strip()]
        atomic_write_text(
            out / "metrics.jsonl", "".join(ln + "\n" for ln in lines[: progress.metrics_lines])
        )
        log(f"resuming {out} at epoch {progress.epoch + 1}, image {progress.image}")
    else:
        (out / "metrics.jsonl").write_text("")
    save_config(config, out / "config.toml")

    with _InterruptFlag() as interrupt:
        for epoch in range(progress.epoch + 1, config.train.epochs + 1):
            if order is None:
                order = rngs["order"].permutation(n_train)
            bar = tqdm(
                total=n_train, initial=progress.image, desc=f"epoch {epoch}/{config.train.epochs}",
                disable=not config.train.progress, leave=False, unit="img",
            )  # fmt: skip
            started = time.perf_counter()
            while progress.image < n_train:
                if dc.batch_size == 1:
                    indices = order[progress.image : progress.image + 1]
                    counts, shown = present_image(
                        network, data.train_x[indices[0]], rngs["encode"], True
                    )
                    batch_counts, batch_shown = counts[None], [shown]
                else:  # batches end at window ends, so checkpoints fall between batches
                    window_left = dc.log_every - progress.window_filled
                    size = min(dc.batch_size, n_train - progress.image, window_left)
                    indices = order[progress.image : progress.image + size]
                    batch_counts, batch_shown = present_batch(
                        network, data.train_x[indices], rngs["encode"], True,
                        dc.batch_reduction, config.train.device,
                    )  # fmt: skip
                for index, counts, shown in zip(indices, batch_counts, batch_shown, strict=True):
                    slot = progress.window_filled
                    window["counts"][slot], window["labels"][slot] = counts, data.train_y[index]
                    progress.window_filled += 1
                    progress.window_presentations += int(shown)
                    progress.presentations += int(shown)
                    progress.image += 1
                    progress.train_samples += 1
                    bar.update(1)
                    if on_image is not None:
                        on_image(progress.train_samples, n_train * config.train.epochs)
                if progress.window_filled == dc.log_every or progress.image == n_train:
                    progress.train_seconds += time.perf_counter() - started
                    record = _window_record(network, progress, window, epoch)
                    with open(out / "metrics.jsonl", "a") as handle:
                        handle.write(json.dumps(record) + "\n")
                    progress.metrics_lines += 1
                    bar.set_postfix(
                        acc=f"{record['window_train_accuracy']:.3f}",
                        spikes=f"{record['spikes_per_image']:.1f}",
                        theta=f"{record['theta_mean']:.2f}",
                    )
                    if progress.window_filled == dc.log_every:  # a full window labels the next
                        window["previous_counts"][:] = window["counts"]
                        window["previous_labels"][:] = window["labels"]
                        progress.last_assignment_ready = True
                    progress.window_filled = 0
                    progress.window_presentations = 0
                    progress.window_start = progress.train_seconds
                    _save(out, network, progress, rngs, order, window, complete=False)
                    started = time.perf_counter()
                if interrupt.raised:
                    progress.train_seconds += time.perf_counter() - started
                    bar.close()
                    _save(out, network, progress, rngs, order, window, complete=False)
                    raise TrainingInterrupted(
                        f"interrupted at epoch {epoch}, image {progress.image}; checkpoint saved "
                        f"in {out}; continue with: spikeforge train {out / 'config.toml'} "
                        f"--out {out} --resume"
                    )
            bar.close()
            progress.epoch, progress.image, order = epoch, 0, None
            _save(out, network, progress, rngs, order, window, complete=False)

    summary: dict[str, Any] = {
        "method": config.method,
        "dataset": config.data.name,
        "neurons": dc.neurons,
        "neuron_model": dc.neuron_model,
        "rule": dc.rule,
        "epochs": progress.epoch,
        "train_seconds": progress.train_seconds,
        "train_samples": progress.train_samples,
        "samples_per_second": progress.train_samples / max(progress.train_seconds, 1e-9),
        "presentations": progress.presentations,
        "theta_mean": float(network.state.theta.mean()),
        "machine": f"{platform.machine()} {_cpu_name()}, {torch.get_num_threads()} threads",
        "config": config_to_dict(config),
    }
    if not evaluate:
        _save(out, network, progress, rngs, None, window, complete=True)
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
        return summary
    eval_started = time.perf_counter()
    result = evaluate_diehl_cook(network, config, data, progress=config.train.progress)
    _save(out, network, progress, rngs, None, window, complete=True)
    summary.update(
        test_accuracy=result["test_accuracy"],
        test_accuracy_proportion=result["test_accuracy_proportion"],
        label_images=result["label_images"],
        test_images=result["test_images"],
        eval_seconds=time.perf_counter() - eval_started,
        test_spikes_per_image=result["test_spikes_per_image"],
        confusion=result["confusion"],
        assignments=result["assignments"],
    )
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    log(
        f"test accuracy {summary['test_accuracy']:.4f} (all activity), "
        f"{summary['test_accuracy_proportion']:.4f} (proportion); "
        f"{summary['samples_per_second']:.0f} training images/s"
    )
    return summary


def evaluate_run_diehl_cook(run_dir: Path, config: RunConfig) -> dict[str, Any]:
    """``spikeforge eval`` of a diehl-cook run: label and test passes again from its checkpoint
    (fixed seeds: the same figures as its summary)."""
    from spikeforge.run.bptt import _set_threads

    _set_threads(config.train.threads)
    _, meta = load_checkpoint(run_dir)
    result = evaluate_diehl_cook(load_network(run_dir, config), config, _load_data(config))
    return {
        "run": str(run_dir),
        "train_samples": meta["progress"]["train_samples"],
        "training_complete": meta["complete"],
        "test_accuracy": result["test_accuracy"],
        "test_accuracy_proportion": result["test_accuracy_proportion"],
        "label_images": result["label_images"],
        "test_images": result["test_images"],
    }


def plot_run_diehl_cook(run_dir: Path, config: RunConfig) -> list[Path]:
    """``spikeforge plot`` of a diehl-cook run: receptive_fields.png (each neuron's weights,
    titled by its class), confusion.png (test set, all activity; from summary.json, else by
    evaluating) and training.png (windowed accuracy, spikes, theta from metrics.jsonl)."""
    from spikeforge import viz
    from spikeforge.run.bptt import read_metrics

    run_dir = Path(run_dir)
    network = load_network(run_dir, config)
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        confusion, assignments = summary["confusion"], summary.get("assignments")
    else:
        result = evaluate_diehl_cook(network, config, _load_data(config))
        confusion, assignments = result["confusion"], result["assignments"]
    side = int(round(np.sqrt(network.weights.shape[0])))
    paths = [
        viz.plot_receptive_fields(
            network.weights, (side, side), run_dir / "receptive_fields.png", assignments
        ),
        viz.plot_confusion(np.array(confusion), run_dir / "confusion.png", run_dir.name),
    ]
    metrics = read_metrics(run_dir)
    if metrics:
        paths.append(viz.plot_stdp_training(metrics, run_dir / "training.png", run_dir.name))
    return paths

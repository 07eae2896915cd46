"""Trainers of the STDP convolutional layer (method ``conv-stdp``) and of the hybrid classifier
(method ``conv-stdp-hybrid``: that layer frozen, max pooling, then spiking dense layers by BPTT).

Method: Shimmyo & Okuyama (mini-batches along convolution windows); pipeline after Tavanaei,
Kirby & Maida (2018). Equations: :mod:`spikeforge.stdp.conv`.

Images are encoded (Bernoulli rate coding, ``conv_stdp.steps`` steps) in groups; every window of a
group is learned in order, ``window_batch`` windows per averaged update. A group holds a whole
number of update batches (``lcm(window_batch, H*W)`` windows, at least 64 images), so no batch
spans two groups and the spikes an image receives do not depend on ``window_batch`` up to 64
images per batch. Every ``log_every`` images a line goes to ``metrics.jsonl`` (the reconstruction
MSE as a moving average over the last ``mse_average`` images, as in the seed's plots) and an
atomic checkpoint is written; resume is exact, Ctrl-C is honoured between groups.

The hybrid runs the STDP phase into ``DIR/conv-stdp/`` (skipped once its ``summary.json``
exists), then trains the dense layers into ``DIR`` with the BPTT trainer; ``--resume`` continues
whichever phase was cut short.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from spikeforge.data.encoders import poisson_encode
from spikeforge.data.vision import load_vision
from spikeforge.run.bptt import (
    TrainingInterrupted,
    _append_metrics,
    _check_resumable,
    _machine,
    _set_threads,
    read_metrics,
    train_bptt,
)
from spikeforge.run.checkpoint import (
    WEIGHTS_NAME,
    atomic_write_text,
    load_checkpoint,
    prepare_run_dir,
    save_checkpoint,
)
from spikeforge.run.config import ConfigError, RunConfig, load_config, save_config
from spikeforge.stdp.conv import (
    ConvSTDPParams,
    conv_wta_pooled,
    image_windows,
    initial_filters,
    learn_windows,
)

__all__ = [
    "ConvFrontEnd",
    "params_from_config",
    "group_images",
    "train_conv_stdp",
    "train_conv_stdp_hybrid",
    "reconstruction_mse",
    "load_filters",
    "load_front_end",
    "CONV_DIR",
    "evaluate_run_conv_stdp",
    "plot_run_conv_stdp",
]

CONV_DIR = "conv-stdp"  # the hybrid's STDP phase, inside its run directory
_MAX_GROUP_IMAGES = 4096
_EVAL_SEED_OFFSET = 1_000_003


def params_from_config(config: RunConfig) -> ConvSTDPParams:
    """The layer and rule settings of ``[conv_stdp]``."""
    cs = config.conv_stdp
    return ConvSTDPParams(
        kernel=cs.kernel,
        beta=cs.beta,
        threshold=cs.threshold,
        learning_rate=cs.learning_rate,
        pre_window=cs.pre_window,
        average=cs.average,
    )


def group_images(window_batch: int, windows_per_image: int, minimum: int = 64) -> int:
    """Images per encoding group: a multiple of ``lcm(window_batch, H W) / (H W)``, >= minimum.

    Raises:
        ConfigError: when one group would need more than 4096 images.
    """
    unit = math.lcm(window_batch, windows_per_image) // windows_per_image
    if unit > _MAX_GROUP_IMAGES:
        raise ConfigError(
            f"conv_stdp.window_batch = {window_batch} and {windows_per_image} windows per image "
            f"only align every {unit} images; choose a divisor or a multiple of {windows_per_image}"
        )
    return unit * math.ceil(minimum / unit)


class ConvFrontEnd:
    """The frozen layer as a spike-to-spike map for the BPTT trainer.

    ``[T, B, H*W]`` input spikes -> winner-take-all conv spikes ``[T, B, k, H, W]`` -> max pool
    (a pooled unit spikes when any unit under it does) -> ``[T, B, k * (H/pool) * (W/pool)]``.
    """

    def __init__(
        self,
        filters: torch.Tensor,
        params: ConvSTDPParams,
        image_shape: tuple[int, int],
        pool: int,
        backend: str = "auto",
    ) -> None:
        self.backend = backend
        self.filters = filters
        self.params = params
        self.image_shape = image_shape
        self.pool = pool
        height, width = image_shape
        self.output_size = filters.shape[0] * (height // pool) * (width // pool)

    def to(self, device: torch.device | str) -> ConvFrontEnd:
        return ConvFrontEnd(
            self.filters.to(device), self.params, self.image_shape, self.pool, self.backend
        )

    def __call__(self, spikes: torch.Tensor) -> torch.Tensor:
        steps, batch, _ = spikes.shape
        height, width = self.image_shape
        maps = spikes.reshape(steps, batch, height, width)
        pooled = conv_wta_pooled(maps, self.filters, self.params, self.pool, self.backend)
        # Feature order (row, column, filter); the dense layer does not care.
        return pooled.reshape(steps, batch, -1)


def _images(config: RunConfig, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Intensities ``[N, H, W]`` in [0, 1] and labels of a split."""
    root = config.data.root or None
    limit = config.data.limit if split == "train" else config.data.test_limit
    data = load_vision(config.data.name, split, root=root, limit=limit)
    return data.images.to(torch.float32) / 255.0, data.labels


def _encode_group(
    intensities: torch.Tensor, steps: int, generator: torch.Generator
) -> torch.Tensor:
    """``[G, H, W]`` intensities -> uint8 spike maps ``[T, G, H, W]``."""
    group, height, width = intensities.shape
    spikes = poisson_encode(intensities.reshape(group, -1), steps, generator)
    return spikes.reshape(steps, group, height, width)


def _group_errors(
    filters: torch.Tensor,
    intensities: torch.Tensor,
    config: RunConfig,
    generator: torch.Generator,
    learn: bool,
) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Encode a group of images ``[G, H, W]`` and learn (or only simulate) its windows.

    Returns:
        ``(filters, mse [G], fired, active)``: the new filters, each image's reconstruction MSE,
        how many windows made an output spike and how many had input spikes.
    """
    cs = config.conv_stdp
    device = filters.device
    spikes = _encode_group(intensities, cs.steps, generator).to(device)
    windows = image_windows(spikes, cs.kernel)
    pixels = image_windows(intensities.to(device), cs.kernel)
    filters, counts, errors = learn_windows(
        filters, windows, cs.window_batch, params_from_config(config), learn, pixels
    )
    group = intensities.shape[0]
    per_image = errors.reshape(group, -1).sum(1) / (pixels.numel() / group)
    fired = int((counts.sum(1) > 0).sum())
    active = int((windows.reshape(windows.shape[0], -1).amax(1) > 0).sum())
    return filters, per_image, fired, active


def reconstruction_mse(
    filters: torch.Tensor, intensities: torch.Tensor, config: RunConfig, seed: int
) -> float:
    """Mean reconstruction MSE of images ``[N, H, W]`` with learning off and a fixed seed."""
    generator = torch.Generator().manual_seed(seed)
    total = 0.0
    for start in range(0, len(intensities), 64):
        _, per_image, _, _ = _group_errors(
            filters, intensities[start : start + 64], config, generator, learn=False
        )
        total += float(per_image.sum())
    return total / max(len(intensities), 1)


@dataclasses.dataclass
class _Progress:
    epoch: int = 0  # epochs fully done
    image: int = 0  # images done in the current epoch
    images_total: int = 0
    train_seconds: float = 0.0
    since_log: int = 0
    windows_fired: int = 0  # since the last metrics line
    windows_active: int = 0


def _save(
    out: Path,
    filters: torch.Tensor,
    progress: _Progress,
    rngs: dict[str, torch.Generator],
    order: torch.Tensor | None,
    recent: collections.deque,
    complete: bool,
) -> None:
    tensors = {"filters": filters.detach().cpu().contiguous()}
    tensors.update({f"rng.{name}": g.get_state() for name, g in rngs.items()})
    tensors["recent_mse"] = torch.tensor(list(recent), dtype=torch.float64)
    if order is not None:
        tensors["order"] = order
    save_checkpoint(out, tensors, {"progress": dataclasses.asdict(progress), "complete": complete})


def load_filters(run_dir: Path) -> torch.Tensor:
    """The filters ``w[k, p*p]`` of a conv-stdp run directory."""
    tensors, _ = load_checkpoint(Path(run_dir))
    if "filters" not in tensors:
        raise ConfigError(f"{run_dir} is not a conv-stdp run (its checkpoint has no filters)")
    return tensors["filters"]


def _check_same_experiment(saved: RunConfig, requested: RunConfig) -> None:
    """The STDP phase depends only on the seed, the data and ``[conv_stdp]`` (epochs may grow)."""
    _check_resumable(
        saved,
        requested,
        also_ignore=frozenset({("conv_stdp", "epochs")}),
        sections=("seed", "data", "conv_stdp"),
    )


def train_conv_stdp(
    config: RunConfig, out: Path, resume: bool = False, log=print
) -> dict[str, Any]:
    """Learn the conv layer's filters by STDP; return the summary (also ``summary.json``).

    Args:
        config: validated run config (``[conv_stdp]``; ``[data]``; ``seed``).
        out: run directory (created).
        resume: continue from ``out``'s checkpoint.
        log: where one-line messages go.
    """
    out = prepare_run_dir(out, resume)
    _set_threads(config.train.threads)
    device = torch.device(config.train.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "train.device is cuda but no CUDA device is available; use --set train.device=cpu"
        )
    cs = config.conv_stdp
    train_x, _ = _images(config, "train")
    if cs.images:
        train_x = train_x[: cs.images]
    n_images, height, width = train_x.shape
    group = group_images(cs.window_batch, height * width)
    filters = initial_filters(cs.filters, cs.kernel, torch.Generator().manual_seed(config.seed)).to(
        device
    )
    rngs = {
        "shuffle": torch.Generator().manual_seed(config.seed + 1),
        "encode": torch.Generator().manual_seed(config.seed + 2),
    }
    progress = _Progress()
    recent: collections.deque = collections.deque(maxlen=cs.mse_average)
    order: torch.Tensor | None = None
    if resume:
        tensors, meta = load_checkpoint(out)
        _check_same_experiment(load_config(out / "config.toml"), config)
        filters = tensors["filters"].to(device)
        for name, generator in rngs.items():
            generator.set_state(tensors[f"rng.{name}"])
        progress = _Progress(**meta["progress"])
        recent.extend(tensors["recent_mse"].tolist())
        order = tensors.get("order")
        log(f"resuming {out} at epoch {progress.epoch + 1}, image {progress.image}")
    else:
        (out / "metrics.jsonl").write_text("")
    save_config(config, out / "config.toml")

    for epoch in range(progress.epoch + 1, cs.epochs + 1):
        if order is None:
            order = torch.randperm(n_images, generator=rngs["shuffle"])
        bar = tqdm(
            total=n_images,
            initial=progress.image,
            desc=f"conv-stdp epoch {epoch}/{cs.epochs}",
            disable=not config.train.progress,
            leave=False,
            unit="img",
        )
        start = progress.image
        try:
            for start in range(progress.image, n_images, group):
                encode_state = rngs["encode"].get_state()
                started = time.perf_counter()
                batch = train_x[order[start : start + group]]
                new_filters, per_image, fired, active = _group_errors(
                    filters, batch, config, rngs["encode"], learn=True
                )
                elapsed = time.perf_counter() - started
                filters = new_filters
                recent.extend(per_image.tolist())
                progress.windows_fired += fired
                progress.windows_active += active
                progress.image = start + len(batch)
                progress.images_total += len(batch)
                progress.since_log += len(batch)
                progress.train_seconds += elapsed
                bar.update(len(batch))
                bar.set_postfix(mse=f"{sum(recent) / len(recent):.4f}")
                if progress.since_log >= cs.log_every or progress.image == n_images:
                    _log_metrics(out, epoch, progress, recent)
                    _save(out, filters, progress, rngs, order, recent, complete=False)
        except KeyboardInterrupt:
            bar.close()
            if progress.image == start:  # the group in progress was not finished
                rngs["encode"].set_state(encode_state)
            _save(out, filters, progress, rngs, order, recent, complete=False)
            raise TrainingInterrupted(
                f"interrupted at epoch {epoch}, image {progress.image}; checkpoint saved in {out}; "
                f"continue with: spikeforge train {out / 'config.toml'} --out {out} --resume"
            ) from None
        bar.close()
        progress = dataclasses.replace(progress, epoch=epoch, image=0)
        order = None
        _save(out, filters, progress, rngs, None, recent, complete=False)

    test_x, _ = _images(config, "test")
    test_mse = reconstruction_mse(
        filters, test_x[: cs.eval_images], config, config.seed + _EVAL_SEED_OFFSET
    )
    _save(out, filters, progress, rngs, None, recent, complete=True)
    summary = {
        "method": "conv-stdp",
        "dataset": config.data.name,
        "filters": cs.filters,
        "kernel": cs.kernel,
        "window_batch": cs.window_batch,
        "average": cs.average,
        "epochs": progress.epoch,
        "train_samples": progress.images_total,
        "train_seconds": progress.train_seconds,
        "samples_per_second": progress.images_total / max(progress.train_seconds, 1e-9),
        "train_mse_moving_average": sum(recent) / max(len(recent), 1),
        "test_reconstruction_mse": test_mse,
        "test_images": min(cs.eval_images, len(test_x)),
        "machine": _machine(device),
        "device": str(device),
        "torch": torch.__version__,
    }
    log(
        f"conv-stdp: {progress.images_total} images in {progress.train_seconds:.1f} s, "
        f"test reconstruction MSE {test_mse:.5f}"
    )
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    return summary


def _log_metrics(out: Path, epoch: int, progress: _Progress, recent: collections.deque) -> None:
    record = {
        "epoch": epoch,
        "images": progress.images_total,
        "mse_moving_average": sum(recent) / max(len(recent), 1),
        "fired_window_fraction": progress.windows_fired / max(progress.windows_active, 1),
        "train_seconds": progress.train_seconds,
    }
    _append_metrics(out, record)
    progress.since_log = 0
    progress.windows_fired = progress.windows_active = 0


def load_front_end(conv_dir: Path, config: RunConfig) -> ConvFrontEnd:
    """The frozen layer of a finished conv-stdp phase, on ``config.train.device``."""
    filters = load_filters(conv_dir)
    side = {"mnist": 28, "fashion-mnist": 28, "digits": 8}[config.data.name]
    front = ConvFrontEnd(
        filters,
        params_from_config(config),
        (side, side),
        config.conv_stdp.pool,
        config.model.backend,
    )
    return front.to(config.train.device)


def train_conv_stdp_hybrid(
    config: RunConfig, out: Path, resume: bool = False, log=print
) -> dict[str, Any]:
    """STDP phase into ``out/conv-stdp`` then BPTT dense layers into ``out``; return the summary."""
    out = Path(out)
    conv_dir = out / CONV_DIR
    stdp_config = dataclasses.replace(config, method="conv-stdp")
    if (conv_dir / "summary.json").is_file():
        _check_same_experiment(load_config(conv_dir / "config.toml"), stdp_config)
        log(f"STDP phase already done in {conv_dir}")
    elif (conv_dir / WEIGHTS_NAME).exists() and not resume:
        raise ConfigError(
            f"{out} already holds a run; pass --resume to continue it or choose another --out"
        )
    else:
        train_conv_stdp(
            stdp_config, conv_dir, resume=resume and (conv_dir / WEIGHTS_NAME).exists(), log=log
        )
    front_end = load_front_end(conv_dir, config)
    summary = train_bptt(
        config,
        out,
        resume=resume and (out / WEIGHTS_NAME).exists(),
        log=log,
        front_end=front_end,
    )
    summary["conv_stdp"] = json.loads((conv_dir / "summary.json").read_text())
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    return summary


def evaluate_run_conv_stdp(run_dir: Path, config: RunConfig) -> dict[str, Any]:
    """Test reconstruction MSE of a conv-stdp run's filters (same images and seed as training's
    final evaluation, so it reproduces ``summary.json``)."""
    _set_threads(config.train.threads)
    filters = load_filters(run_dir).to(config.train.device)
    test_x, _ = _images(config, "test")
    images = test_x[: config.conv_stdp.eval_images]
    mse = reconstruction_mse(filters, images, config, config.seed + _EVAL_SEED_OFFSET)
    return {"run": str(run_dir), "test_reconstruction_mse": mse, "test_images": len(images)}


def plot_run_conv_stdp(run_dir: Path) -> list[Path]:
    """filters.png (the learned filters as an image grid) and reconstruction_mse.png (the
    moving-average reconstruction MSE against training images)."""
    from spikeforge import viz

    run_dir = Path(run_dir)
    config = load_config(run_dir / "config.toml")
    kernel = config.conv_stdp.kernel
    filters = load_filters(run_dir).numpy()
    paths = [viz.plot_filters({"": filters}, kernel, run_dir / "filters.png")]
    metrics = read_metrics(run_dir)
    if metrics:
        paths.append(
            viz.plot_reconstruction_mse({run_dir.name: metrics}, run_dir / "reconstruction_mse.png")
        )
    return paths

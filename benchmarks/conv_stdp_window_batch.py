"""Mini-batch convolutional STDP (Shimmyo & Okuyama): training time and reconstruction quality
against ``window_batch``.

The same MNIST training images, encoded once (the same input spikes for every setting), train the
same initial filters with window_batch 1 (the sequential order: each window's update applied
before the next window), 16, 64, 256, 784 (all windows of one image) and multi-image batches of
8 and 64 images. Timed: the learning pass (simulation + rule + update) over all windows, the
settings interleaved within each repeat; windows are extracted once beforehand for all of them.
Quality: the reconstruction MSE of each setting's final filters on held-out test images (learning
off, fixed seed), and the moving-average training MSE at the end.

Layer settings: those of ``configs/conv-stdp-mnist.toml`` (16 filters of 5x5, threshold 4,
a = 0.001, T = 20, average over the windows each filter fired in).

Headline ratios: ``speedup_wb784`` (time at 1 / time at 784, medians), ``mse_ratio_wb784`` (test
MSE at 784 / at 1; lower is better), and ``speedup_wbN`` for each size. Also writes the filters of
window_batch 1 and 784 side by side and the training MSE curves as PNGs beside ``--out``.

Run: ``flock /tmp/spikeforge-timing.lock .venv/bin/python benchmarks/conv_stdp_window_batch.py``
"""

from __future__ import annotations

import collections
import time
from pathlib import Path

import _common
import torch

from spikeforge import viz
from spikeforge.data.encoders import poisson_encode
from spikeforge.data.vision import load_vision
from spikeforge.stdp.conv import ConvSTDPParams, image_windows, initial_filters, learn_windows

FILTERS, KERNEL, STEPS = 16, 5, 20
PARAMS = ConvSTDPParams(kernel=KERNEL, beta=1.0, threshold=4.0, learning_rate=0.001)
SIZES = (1, 16, 64, 256, 784, 784 * 8, 784 * 64)


def _windows(images: torch.Tensor, seed: int, device: torch.device):
    """Spike windows ``[N*784, T, 25]`` (uint8) and intensity windows of ``[N, 28, 28]`` images,
    encoded in groups of 64 from one generator."""
    generator = torch.Generator().manual_seed(seed)
    spikes, pixels = [], []
    for start in range(0, len(images), 64):
        group = images[start : start + 64]
        encoded = poisson_encode(group.reshape(len(group), -1), STEPS, generator)
        spikes.append(image_windows(encoded.reshape(STEPS, len(group), 28, 28), KERNEL))
        pixels.append(image_windows(group, KERNEL))
    return torch.cat(spikes).to(device), torch.cat(pixels).to(device)


def _test_mse(filters: torch.Tensor, windows: torch.Tensor, pixels: torch.Tensor) -> float:
    _, _, errors = learn_windows(filters, windows, 1, PARAMS, learn=False, intensities=pixels)
    return float(errors.sum() / pixels.numel())


def main() -> None:
    parser = _common.base_parser(__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=0, help="training images (0: 400, quick 64)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    _common.set_threads(args.threads)
    device = torch.device(args.device)
    n_images = args.images or (64 if args.quick else 400)
    test_images = 100 if args.quick else 500

    train = load_vision("mnist", "train", limit=n_images)
    test = load_vision("mnist", "test", limit=test_images)
    train_windows, train_pixels = _windows(train.images.float() / 255, args.seed, device)
    test_windows, test_pixels = _windows(test.images.float() / 255, args.seed + 1, device)
    start_filters = initial_filters(FILTERS, KERNEL, torch.Generator().manual_seed(args.seed))
    start_filters = start_filters.to(device)
    sizes = [s for s in SIZES if s <= n_images * 784]
    final: dict[int, torch.Tensor] = {}
    curves: dict[int, list[float]] = {}

    def contender(window_batch: int):
        def run() -> float:
            learned, _, errors = learn_windows(
                start_filters, train_windows, window_batch, PARAMS, intensities=train_pixels
            )
            if device.type == "cuda":
                torch.cuda.synchronize()
            final[window_batch] = learned
            curves[window_batch] = (errors.reshape(n_images, -1).sum(1) / (784 * 25)).tolist()
            return float(n_images)

        return run

    rates = _common.interleaved(
        {f"wb{s}": contender(s) for s in sizes}, repeats=args.repeats, warmup=0, label="train"
    )
    table = {name: _common.summarize(values, 2) for name, values in rates.items()}
    ratios: dict[str, float] = {}
    quality = {}
    for size in sizes:
        speed = table[f"wb{size}"]["median"] / table["wb1"]["median"]
        ratios[f"speedup_wb{size}"] = round(speed, 1)
        recent = collections.deque(curves[size], maxlen=64)
        quality[f"wb{size}"] = {
            "test_mse": round(_test_mse(final[size], test_windows, test_pixels), 6),
            "train_mse_last64": round(sum(recent) / len(recent), 6),
        }
    ratios["mse_ratio_wb784"] = round(quality["wb784"]["test_mse"] / quality["wb1"]["test_mse"], 3)
    if args.out is not None:
        stem = args.out.with_suffix("")
        viz.plot_filters(
            {
                "window_batch 1": final[1].cpu().numpy(),
                "window_batch 784": final[784].cpu().numpy(),
            },
            KERNEL,
            Path(f"{stem}_filters.png"),
        )
        moving = {}
        for size in (1, 784, sizes[-1]):
            values, window = [], collections.deque(maxlen=64)
            for index, value in enumerate(curves[size], start=1):
                window.append(value)
                values.append({"images": index, "mse_moving_average": sum(window) / len(window)})
            moving[f"window_batch {size}"] = values
        viz.plot_reconstruction_mse(moving, Path(f"{stem}_mse.png"))
    device_name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else _common.describe_device(args.threads)
    )
    _common.emit(
        {
            "benchmark": "conv_stdp_window_batch",
            "device": device_name,
            "versions": _common.versions("torch", "numpy"),
            "seed": args.seed,
            "quick": args.quick,
            "setup": {
                "train_images": n_images,
                "test_images": test_images,
                "filters": FILTERS,
                "kernel": KERNEL,
                "steps": STEPS,
                "threshold": PARAMS.threshold,
                "learning_rate": PARAMS.learning_rate,
                "average": PARAMS.average,
                "repeats": args.repeats,
                "timed": "learning pass over all windows (windows extracted once beforehand)",
            },
            "train_images_per_second": table,
            "reconstruction": quality,
            "ratios": ratios,
            "wall_seconds": round(time.perf_counter() - _common._START, 1),
        },
        args.out,
    )


if __name__ == "__main__":
    main()

"""Diehl & Cook training images/s: per-image engines against the batched mode (a different order).

Same MNIST images, same model (conductance-based, pair rule, 350 ms + 150 ms, dt 1 ms), each run
from the same initial network: the dense reference engine and the event-driven Numba engine (both
per-image semantics), and ``run_images_batched`` with ``--batch`` images per batch on ``--device``
(its results differ from the per-image ones by design; this measures speed only). Interleaved
repeats, medians.

Run: ``.venv/bin/python benchmarks/diehl_cook_batched_speed.py --images 96 --neurons 100``
"""

from __future__ import annotations

import _common
import numpy as np

from spikeforge.data.vision import load_vision
from spikeforge.stdp import DiehlCookNetwork, DiehlCookParams, run_images, run_images_batched


def main() -> None:
    parser = _common.base_parser(__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--neurons", type=int, default=100)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    _common.set_threads(args.threads)
    images = load_vision("mnist", "train", limit=args.images).flat_intensities().numpy()
    images = images.astype(np.float64)
    params = DiehlCookParams(rule="pair")

    def per_image(engine: str):
        def run() -> float:
            network = DiehlCookNetwork.create(params, 784, args.neurons, args.seed, engine)
            run_images(network, images, np.random.default_rng(args.seed + 1), True)
            return len(images)

        return run

    def batched() -> float:
        network = DiehlCookNetwork.create(params, 784, args.neurons, args.seed, "reference")
        rng = np.random.default_rng(args.seed + 1)
        run_images_batched(network, images, rng, True, args.batch, device=args.device)
        return len(images)

    contenders = {
        "reference": per_image("reference"),
        "numba": per_image("numba"),
        f"batched_{args.batch}": batched,
    }
    warm = DiehlCookNetwork.create(params, 784, args.neurons, args.seed, "numba")
    run_images(warm, images[:1], np.random.default_rng(0), True)  # Numba compiles, untimed
    rates = _common.interleaved(contenders, args.repeats, warmup=0)
    _common.emit(
        {
            "benchmark": "diehl_cook_batched_speed",
            "images_per_second": {k: _common.summarize(v, 1) for k, v in rates.items()},
            "images": args.images,
            "neurons": args.neurons,
            "batch": args.batch,
            "device": args.device
            if args.device != "cpu"
            else _common.describe_device(args.threads),
            "seed": args.seed,
            "versions": _common.versions("torch", "numpy", "numba"),
        },
        args.out,
    )


if __name__ == "__main__":
    main()

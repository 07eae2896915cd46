"""Diehl & Cook (2015) STDP training speed: spikeforge's event-driven engine against BindsNET.

Both train with per-image semantics (batch 1, each image's STDP updates applied before the next
image) on the same MNIST images: 350 ms of Poisson input at up to 63.75 Hz, then 150 ms of rest,
dt = 1 ms, trace STDP (nu 1e-4 / 1e-2), adaptive thresholds (theta_plus 0.05 mV), weights
normalised to 78 per neuron. BindsNET runs its ``DiehlAndCook2015`` (current-based LIF, exc 22.5,
inh 17.5) as its example does: ``network.run`` for the image, then for the rest with no input,
then ``reset_state_variables``; spikeforge runs the paper's conductance-based model (its default,
``diehl-cook`` configs) and BindsNET's current-based model, each with its re-show rule (< 5
spikes: show again brighter), which only adds work to spikeforge.

Headline: ``vs_bindsnet_n100`` and ``vs_bindsnet_n400``: training images/s of spikeforge
(conductance model, 1 thread) / BindsNET (torch, 1 thread by default; ``--bindsnet-threads 1 2``
also tries 2 and keeps the faster), medians of interleaved repeats. BindsNET is imported without
running its package ``__init__``, whose eager imports pull torchvision (PyPI's wheel needs CUDA
libraries missing beside torch 2.13.0+cpu), gymnasium and OpenCV, none of which the model uses;
every BindsNET module the benchmark runs is BindsNET's own code, unmodified.

Run: ``flock /tmp/spikeforge-timing.lock .venv/bin/python benchmarks/diehl_cook_speed.py``
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import _common
import numpy as np
import torch

from spikeforge.data.vision import load_vision
from spikeforge.stdp import DiehlCookNetwork, DiehlCookParams, current_based_params, run_images

PRESENT_MS, REST_MS, MAX_RATE = 350, 150, 63.75


def _import_bindsnet() -> types.ModuleType:
    """``bindsnet.models`` etc. without ``bindsnet/__init__.py`` (see the module docstring)."""
    spec = importlib.util.find_spec("bindsnet")
    if spec is None:
        raise SystemExit("BindsNET is not installed; run `make bench-deps`")
    package = types.ModuleType("bindsnet")
    package.__path__ = list(spec.submodule_search_locations or [])
    package.__spec__ = spec
    sys.modules["bindsnet"] = package
    importlib.import_module("bindsnet.network")  # first: breaks the learning <-> network cycle
    return importlib.import_module("bindsnet.models")


def _spikeforge_trainer(params: DiehlCookParams, neurons: int, images: np.ndarray, seed: int):
    network = DiehlCookNetwork.create(params, 784, neurons, seed)
    rng = np.random.default_rng(seed + 1)
    cursor = {"next": 0}

    def run() -> float:
        torch.set_num_threads(1)
        start = cursor["next"]
        chunk = images[start : start + per_repeat(neurons, "spikeforge")]
        cursor["next"] = (start + len(chunk)) % (len(images) - len(chunk))
        run_images(network, chunk, rng, learn=True)
        return float(len(chunk))

    return run, network


def _bindsnet_trainer(
    models: types.ModuleType, neurons: int, images: np.ndarray, seed: int, threads: int
):
    torch.manual_seed(seed)
    network = models.DiehlAndCook2015(
        n_inpt=784, n_neurons=neurons, exc=22.5, inh=17.5, dt=1.0, norm=78.0,
        theta_plus=0.05, inpt_shape=(1, 28, 28),
    )  # fmt: skip
    network.train(True)
    from bindsnet.encoding import poisson

    rest = torch.zeros(REST_MS, 1, 1, 28, 28, dtype=torch.uint8)
    tensor_images = torch.from_numpy(images).float()
    cursor = {"next": 0}

    def run() -> float:
        torch.set_num_threads(threads)
        count = per_repeat(neurons, "bindsnet")
        start = cursor["next"]
        cursor["next"] = (start + count) % (len(images) - count)
        for index in range(start, start + count):
            rates = tensor_images[index].view(1, 28, 28) * MAX_RATE
            spikes = poisson(rates, time=PRESENT_MS, dt=1.0).view(PRESENT_MS, 1, 1, 28, 28)
            network.run(inputs={"X": spikes}, time=PRESENT_MS)
            network.run(inputs={"X": rest}, time=REST_MS)
            network.reset_state_variables()
        return float(count)

    return run


_COUNTS: dict[tuple[int, str], int] = {}


def per_repeat(neurons: int, who: str) -> int:
    return _COUNTS[(neurons, who)]


def main() -> None:
    parser = _common.base_parser(__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--bindsnet-threads",
        type=int,
        nargs="+",
        default=[1],
        help="torch threads for BindsNET (default 1: its per-step ops are tiny, and 2 OpenMP "
        "threads on a loaded 2-core machine ran 80x slower than 1 when we tried)",
    )
    args = parser.parse_args()
    threads = torch.get_num_threads()
    _common.set_threads(threads)
    models = _import_bindsnet()
    images = load_vision("mnist", "train", limit=3000).flat_intensities().numpy()
    images = images.astype(np.float64)
    sizes = (100, 400)
    spikeforge_images = {100: 100, 400: 40} if args.quick else {100: 400, 400: 150}
    for n in sizes:
        _COUNTS[(n, "spikeforge")] = spikeforge_images[n]
        _COUNTS[(n, "bindsnet")] = 3 if args.quick else 8
    table = {}
    ratios = {}
    for n in sizes:
        paper, _ = _spikeforge_trainer(DiehlCookParams(), n, images, args.seed)
        current, _ = _spikeforge_trainer(current_based_params(), n, images, args.seed)
        contenders = {"spikeforge": paper, "spikeforge_current": current}
        for t in args.bindsnet_threads:  # with several settings, the fastest counts
            contenders[f"bindsnet_{t}thread"] = _bindsnet_trainer(models, n, images, args.seed, t)
        rates = _common.interleaved(
            contenders,
            repeats=args.repeats,
            warmup=1,
            label=f"n{n}",
        )
        table[f"n{n}"] = {name: _common.summarize(values) for name, values in rates.items()}
        median = {name: table[f"n{n}"][name]["median"] for name in rates}
        best_bindsnet = max(v for k, v in median.items() if k.startswith("bindsnet"))
        ratios[f"vs_bindsnet_n{n}"] = round(median["spikeforge"] / best_bindsnet, 1)
        ratios[f"current_vs_bindsnet_n{n}"] = round(median["spikeforge_current"] / best_bindsnet, 1)
    _common.emit(
        {
            "benchmark": "diehl_cook_speed",
            "device": _common.describe_device(threads),
            "versions": _common.versions("torch", "numpy", "numba", "bindsnet"),
            "seed": args.seed,
            "quick": args.quick,
            "setup": {
                "present_ms": PRESENT_MS,
                "rest_ms": REST_MS,
                "max_rate_hz": MAX_RATE,
                "dt_ms": 1.0,
                "batch": 1,
                "spikeforge_threads": 1,
                "bindsnet_threads": args.bindsnet_threads,
                "images_per_repeat": {f"{k[1]}_n{k[0]}": v for k, v in _COUNTS.items()},
            },
            "training_images_per_second": table,
            "ratios": ratios,
        },
        args.out,
    )


if __name__ == "__main__":
    main()

"""Ensemble STDP merge speed: score all pairs of a 500-neuron network, sort them, prune to 300.

Hanyu & Dang ("Accelerating distributed spike-timing-dependent-plasticity learning") report 4.1 s
(Manhattan) to 43.9 s (correlation) for compressing their merged 500-neuron model to 300. Here one
compression is :func:`spikeforge.ensemble.compress` (pairwise distances of the 500 incoming
weight vectors, a sort of the 124,750 pairs, the greedy walk to 300) plus building the 300-neuron
network (:func:`spikeforge.ensemble.select_neurons`), for each metric.

Weights are trained-like: each of the 500 columns is the mean of 5 MNIST training images of one
class (class = column mod 10, as the prototypes a Diehl & Cook network learns) plus a little
noise, clipped to [0, 1] and normalised to sum 78 per neuron; without MNIST in the cache, uniform
random columns with the same normalisation (the JSON says which).

The peer measured in the same run is a naive implementation of the same rule: a Python loop over
pairs computing each distance with NumPy (``np.corrcoef`` for correlation), a sort of the pair
list, and a Python walk; it checks that both keep the same neurons.

Headline ``ratios``: ``seconds_mse``, ``seconds_manhattan``, ``seconds_cosine``,
``seconds_correlation`` (spikeforge, 500 -> 300, median of interleaved repeats; lower is better);
also ``vs_naive_<metric>`` (naive time / spikeforge time at the naive table's size).

Run: ``.venv/bin/python benchmarks/ensemble_merge.py [--quick] [--threads N]``
"""

from __future__ import annotations

import statistics

import _common
import numpy as np

from spikeforge.ensemble import METRICS, compress, select_neurons
from spikeforge.stdp import DiehlCookNetwork, DiehlCookParams

PAPER_SECONDS = {"mse": 5.8, "manhattan": 4.1, "cosine": 5.4, "correlation": 43.9}
NEURONS, TARGET, INPUTS = 500, 300, 784


def _trained_like_weights(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """[784, 500] class prototypes from MNIST (or uniform random columns), sum 78 each."""
    from spikeforge.data import DataError
    from spikeforge.data.vision import load_vision

    try:
        train = load_vision("mnist", "train", limit=20000)
        images = train.flat_intensities().numpy().astype(np.float64)
        labels = train.labels.numpy()
        columns = []
        for j in range(NEURONS):
            members = np.flatnonzero(labels == j % 10)
            columns.append(images[rng.choice(members, 5, replace=False)].mean(axis=0))
        weights = np.stack(columns, axis=1) + rng.normal(0, 0.02, (INPUTS, NEURONS))
        source = "MNIST class prototypes (mean of 5 images) + N(0, 0.02) noise"
    except DataError:
        weights = rng.random((INPUTS, NEURONS))
        source = "uniform random (MNIST not in the cache)"
    weights = np.clip(weights, 0.0, 1.0)
    return weights * (78.0 / weights.sum(axis=0, keepdims=True)), source


def _naive_keep(weights: np.ndarray, metric: str, target: int) -> list[int]:
    """The same greedy rule, written the obvious way: a Python loop over pairs."""
    n = weights.shape[1]
    columns = [weights[:, j] for j in range(n)]
    pairs = []
    for i in range(n):
        for j in range(i + 1, n):
            a, b = columns[i], columns[j]
            if metric == "mse":
                distance = float(np.mean((a - b) ** 2))
            elif metric == "manhattan":
                distance = float(np.sum(np.abs(a - b)))
            elif metric == "cosine":
                distance = 1.0 - float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
            else:
                distance = 1.0 - float(np.corrcoef(a, b)[0, 1])
            pairs.append((distance, i, j))
    pairs.sort()
    present, removed = [True] * n, 0
    for _, i, j in pairs:
        if removed == n - target:
            break
        if present[i] and present[j]:
            present[j] = False
            removed += 1
    return [k for k in range(n) if present[k]]


def _ours(network: DiehlCookNetwork, metric: str, target: int):
    def run() -> float:
        select_neurons(network, compress(network.weights, metric, target).keep)
        return 1.0

    return run


def _naive(weights: np.ndarray, metric: str, target: int):
    def run() -> float:
        _naive_keep(weights, metric, target)
        return 1.0

    return run


def _seconds(rates: list[float]) -> dict[str, float | list[float]]:
    seconds = [1.0 / r for r in rates]
    return {
        "median": round(statistics.median(seconds), 5),
        "min": round(min(seconds), 5),
        "max": round(max(seconds), 5),
        "repeats": [round(s, 5) for s in seconds],
    }


def main() -> None:
    parser = _common.base_parser(__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch/numba threads (default 1)")
    args = parser.parse_args()
    _common.set_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    weights, source = _trained_like_weights(rng)
    params = DiehlCookParams()
    network = DiehlCookNetwork.create(params, INPUTS, NEURONS, args.seed)
    network.weights[:] = weights
    repeats = 7 if args.quick else 25

    _common.log(f"spikeforge: {NEURONS} -> {TARGET}, {repeats} interleaved repeats")
    ours = _common.interleaved(
        {m: _ours(network, m, TARGET) for m in METRICS}, repeats, label="spikeforge"
    )
    table = {m: _seconds(ours[m]) for m in METRICS}

    naive_n = 150 if args.quick else NEURONS
    naive_target = round(naive_n * TARGET / NEURONS)
    small = DiehlCookNetwork.create(params, INPUTS, naive_n, args.seed)
    small.weights[:] = weights[:, :naive_n]
    _common.log(f"naive loop vs spikeforge: {naive_n} -> {naive_target}, 3 interleaved repeats")
    contenders = {}
    for m in METRICS:
        contenders[f"naive {m}"] = _naive(small.weights, m, naive_target)
        contenders[f"spikeforge {m}"] = _ours(small, m, naive_target)
    head_to_head = _common.interleaved(contenders, 3, warmup=0, label="naive")
    naive = {}
    for m in METRICS:
        same = compress(small.weights, m, naive_target).keep.tolist() == _naive_keep(
            small.weights, m, naive_target
        )
        naive[m] = {
            "naive_seconds": _seconds(head_to_head[f"naive {m}"]),
            "spikeforge_seconds": _seconds(head_to_head[f"spikeforge {m}"]),
            "same_neurons_kept": same,
        }

    ratios = {f"seconds_{m}": table[m]["median"] for m in METRICS}
    ratios.update(
        {
            f"vs_naive_{m}": round(
                naive[m]["naive_seconds"]["median"] / naive[m]["spikeforge_seconds"]["median"], 1
            )
            for m in METRICS
        }
    )
    _common.emit(
        {
            "benchmark": "ensemble_merge",
            "device": _common.describe_device(args.threads),
            "versions": _common.versions("torch", "numpy", "numba"),
            "seed": args.seed,
            "quick": args.quick,
            "neurons": NEURONS,
            "target": TARGET,
            "inputs": INPUTS,
            "weights": source,
            "what": "pairwise distances + sort of all pairs + greedy walk + 300-neuron network",
            "ratios": ratios,
            "spikeforge_seconds": table,
            "naive": {"neurons": naive_n, "target": naive_target, **naive},
            "paper_seconds": {
                "values": PAPER_SECONDS,
                "note": "reported by Hanyu & Dang (their machine), not measured here",
            },
        },
        args.out,
    )


if __name__ == "__main__":
    main()

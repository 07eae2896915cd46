"""Ensemble STDP: how many labelled images the genetic search needs (a study, not a speed race).

With ``ensemble.validation = "label-split"`` the genetic search of the 2 x 250 -> 300 preset
reads the merged 500-neuron network's spike counts on the pool's last ``label_images`` (10,000)
images: it assigns labels from the first half and scores subsets on the second. That pass costs
about 18 s on one core, as much as half the sub-models' training, so if it were counted as
training time the ensemble would be only ~1.3x faster than the single 300-neuron network. This
study asks whether a shorter pass would do: for each trained run directory given, it runs the
merged network (learning off, as the trainer does) on the last N labelled images for each N of
``--images``, lets the genetic search (the preset's settings, seeded with the metric
compressions) assign labels from the first N/2 and score on the last N/2, then labels and tests
the chosen 300 neurons exactly as the trainer does (all 10,000 labelled images, the full test set).

``--folds 2`` scores each candidate on both halves in turn (labels from one half, accuracy on the
other, averaged by image count): every image of the pass then scores, none is spent on labels
alone.

Inputs: run directories of ``spikeforge train configs/ensemble-2x250-300.toml`` (their
``submodels/<k>`` checkpoints). Output: one JSON object with, per run and N, the test accuracy
(all-activity and proportion vote), the search's own estimate, and the seconds of the pass (one
core) and of the search.

Run: ``.venv/bin/python benchmarks/ensemble_search_images.py RUN_DIR... [--images 10000 4000]``
(``--quick``: N = 2,000 only).
"""

from __future__ import annotations

import time
from pathlib import Path

import _common
import numpy as np

from spikeforge.ensemble import SubsetAccuracy, concatenate_networks
from spikeforge.run import ensemble as ens_run
from spikeforge.run.config import RunConfig, load_config
from spikeforge.run.diehl_cook import load_network, spike_counts


class _CrossFitted:
    """Accuracy of neuron subsets over ``folds`` folds of the pass's images: labels assigned on
    the other folds, the fold scored, the folds' accuracies averaged by their image counts."""

    def __init__(self, counts: np.ndarray, labels: np.ndarray, folds: int) -> None:
        parts = np.array_split(np.arange(len(labels)), folds)
        self.scorers = []
        for k, part in enumerate(parts):
            rest = np.concatenate([p for j, p in enumerate(parts) if j != k])
            scorer = SubsetAccuracy(counts[rest], labels[rest], counts[part], labels[part])
            self.scorers.append((scorer, len(part)))
        self.total = len(labels)

    def __call__(self, masks: np.ndarray) -> np.ndarray:
        return sum(scorer(masks) * size for scorer, size in self.scorers) / self.total


def _cross_fitted_search(
    config: RunConfig, counts: np.ndarray, labels: np.ndarray, initial: list[np.ndarray]
) -> tuple[np.ndarray, dict[str, float]]:
    started = time.perf_counter()
    fitness = _CrossFitted(counts, labels, 2)
    search = ens_run.search_subsets(config, fitness, counts.shape[1], initial)
    record = {
        "search_seconds": time.perf_counter() - started,
        "validation_accuracy_estimate": search.fitness,
    }
    return search.keep, record


def _study(run: Path, image_counts: list[int], folds: int) -> dict[str, dict[str, float]]:
    config = load_config(run / "config.toml")
    config = ens_run._with(config, ensemble={"validation": "label-split", "genetic": True})
    subs = [
        load_network(run / "submodels" / str(k), ens_run.submodel_config(config, k))
        for k in range(len(config.ensemble.submodels))
    ]
    merged = concatenate_networks(subs)
    data = ens_run._load(config)
    label = ens_run._tail(np.arange(data.pool), config.diehl_cook.label_images)
    keeps, _, _ = ens_run._compress_all(merged, config)
    out = {}
    for count in image_counts:
        images = label[-count:]
        started = time.perf_counter()
        seed = config.seed + ens_run._LABEL_SEED_OFFSET
        counts = spike_counts(merged, data.train_x[images], seed)
        pass_seconds = time.perf_counter() - started
        initial = list(keeps.values())
        if folds == 2:
            keep, record = _cross_fitted_search(config, counts, data.train_y[images], initial)
        else:  # the trainer's label-split search
            split = ens_run._with(config, ensemble={"validation_images": count // 2})
            keep, record = ens_run._genetic(split, data, {"label": counts}, images, initial)
        weights, theta = merged.weights[:, keep], merged.state.theta[keep]
        result = ens_run.evaluate_network_task(
            config, weights, theta, label, False, False, str(run / "search-study.progress.json")
        )
        out[str(count)] = {
            "test_accuracy": result["test_accuracy"],
            "test_accuracy_proportion": result["test_accuracy_proportion"],
            "search_estimate": record["validation_accuracy_estimate"],
            "pass_seconds_one_core": round(pass_seconds, 2),
            "search_seconds": round(record["search_seconds"], 2),
        }
        _common.log(f"{run.name} N={count}: {out[str(count)]}")
    return out


def main() -> None:
    parser = _common.base_parser(__doc__)
    parser.add_argument("runs", nargs="+", type=Path, help="ensemble run directories")
    parser.add_argument("--images", nargs="+", type=int, default=[10000, 4000, 3000, 2000])
    parser.add_argument("--folds", type=int, default=1, choices=[1, 2])
    args = parser.parse_args()
    _common.set_threads(1)  # one core, as each Ray worker of the trainer
    images = [2000] if args.quick else args.images
    runs = {str(run): _study(run, images, args.folds) for run in args.runs}
    record = {
        "benchmark": "ensemble_search_images",
        "device": _common.describe_device(1),
        "images": images,
        "folds": args.folds,
        "runs": runs,
    }
    _common.emit(record, args.out)


if __name__ == "__main__":
    main()

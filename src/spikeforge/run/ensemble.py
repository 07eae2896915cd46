"""Trainer of Ensemble STDP (method ``ensemble``): Hanyu & Dang, "Accelerating distributed
spike-timing-dependent-plasticity learning".

1. **Shards.** The training pool (the first ``data.limit`` training images, all when 0) is cut
   into one shard per sub-model (:mod:`spikeforge.ensemble.sharding`: equal or Dirichlet).
2. **Sub-models**, in parallel as Ray tasks (:mod:`spikeforge.ensemble.distributed`): sub-model k
   is the Diehl & Cook trainer (:func:`spikeforge.run.diehl_cook.train_diehl_cook`) on shard k
   (repeated up to the largest shard's size with ``ensemble.presentations = "largest-shard"``,
   :func:`spikeforge.ensemble.sharding.presentations`), with ``ensemble.submodels[k]`` neurons,
   its STDP rates ``nu_pre``, ``nu_post`` multiplied by ``ensemble.learning_rate_scale``, seed
   ``seed + 1000 (k + 1)``, one thread, writing its own run directory ``DIR/submodels/k/`` with
   atomic checkpoints every ``diehl_cook.log_every`` images. A task whose worker dies is retried
   and resumes from its last checkpoint (exactly: the result equals an uninterrupted run); a
   finished sub-model is not trained again by ``--resume``. If a sub-model fails for good the run
   stops with one line.
3. **Merge.** The sub-models are read from their checkpoints and concatenated
   (:func:`spikeforge.ensemble.concatenate_networks`; timed as ``concatenate_seconds``).
4. **Compress** to ``ensemble.target_neurons`` by greedy pairwise pruning for each of
   ``ensemble.metrics``, removing the neuron of each pair that ``ensemble.remove`` names
   (:func:`spikeforge.ensemble.removal_priority`; timed: distances, sort, walk, building the
   smaller network), and, with ``ensemble.genetic``, by a genetic search whose fitness is
   validation accuracy, estimated from the merged network's spike counts
   (:class:`spikeforge.ensemble.SubsetAccuracy`). With ``ensemble.validation = "held-out"``
   the validation images are the ``ensemble.validation_images`` training images right after the
   pool (with ``data.limit = 0``: the last ones, held out of the pool; only when the genetic
   search is on). With ``"label-split"`` they are the last ``validation_images`` of the pool's
   labelled images (the merged network's labelling pass gives their counts; the search assigns
   labels from the labelled images before them), so the run uses no image beyond the pool.
5. **Evaluate** (Ray tasks again, one per pass of each network: label, test, and validation
   where the search needs it; each pass starts from rest with its own seed, so splitting them
   changes no count): every network, sub-models included, is
   labelled by its responses (learning off) to labelled training images, then classified on the
   test set, as the Diehl & Cook trainer does: the merged and compressed networks are labelled on
   the last ``diehl_cook.label_images`` images of the pool, sub-model k on the last ones of its
   shard (the data it has). Every network sees the same encoder seeds.

Accuracy along each pruning path (``spikeforge plot``: accuracy against neurons removed) is
*estimated* from the merged network's label and test spike counts restricted to the neurons left,
as the genetic fitness is; the networks at the target size are simulated.

``summary.json``'s ``test_accuracy`` is the headline network's: the first metric's compression
(else the genetic one's; the merged network's when nothing is compressed). Its ``train_seconds``
is the training wall time: the sub-model phase (tasks submitted to all trained) plus
concatenation and the headline compression (for the genetic search: its validation pass, none
with ``label-split``, and search; ``ensemble.json`` also records the merged network's labelling
pass, which the search reads and which is untimed like every network's labelling). Evaluation
is excluded, as in every trainer. ``ensemble.json`` holds every figure.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spikeforge.ensemble import (
    EnsembleError,
    GeneticResult,
    ProgressWriter,
    SubsetAccuracy,
    compress,
    concatenate_networks,
    genetic_search,
    kept_masks,
    pairwise_distance,
    removal_order,
    removal_priority,
    select_neurons,
)
from spikeforge.ensemble.sharding import make_shards, presentations
from spikeforge.run.checkpoint import (
    WEIGHTS_NAME,
    atomic_write_text,
    load_checkpoint,
    prepare_run_dir,
    save_checkpoint,
)
from spikeforge.run.config import (
    ConfigError,
    RunConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)
from spikeforge.run.diehl_cook import (
    _LABEL_SEED_OFFSET,
    _TEST_SEED_OFFSET,
    _load_data,
    load_network,
    params_from_config,
    spike_counts,
    train_diehl_cook,
)
from spikeforge.stdp import (
    DiehlCookNetwork,
    assign_labels,
    confusion_matrix,
    new_state,
    predict_all_activity,
    predict_proportion,
)

__all__ = [
    "KILL_HOOK_VARIABLE",
    "evaluate_run_ensemble",
    "plot_run_ensemble",
    "submodel_config",
    "train_ensemble",
]

_VALIDATION_SEED_OFFSET = 4_000_037
_SUBMODEL_SEED_STRIDE = 1000
# Fault injection for tests: "K:N[:TIMES]" makes sub-model K's worker kill itself (SIGKILL) once
# it has trained N images, in each of its first TIMES attempts (default 1).
KILL_HOOK_VARIABLE = "SPIKEFORGE_ENSEMBLE_KILL"
_RESUME_MAY_CHANGE = frozenset(
    {("ensemble", "workers"), ("ensemble", "address"), ("ensemble", "max_retries")}
)


# ---------------------------------------------------------------------------------------------
# data and configs


@dataclass
class _EnsembleData:
    train_x: np.ndarray  # float64 [M, K]: the training pool, then the validation images
    train_y: np.ndarray
    pool: int  # images 0..pool-1 form the training pool
    validation: int  # images pool..pool+validation-1 are the validation split
    test_x: np.ndarray
    test_y: np.ndarray

    def pool_labels(self) -> np.ndarray:
        return self.train_y[: self.pool]

    def validation_slice(self) -> slice:
        return slice(self.pool, self.pool + self.validation)


def _validation_images(config: RunConfig) -> int:
    """Images loaded after the pool for the genetic fitness (held-out validation only)."""
    ens = config.ensemble
    return ens.validation_images if ens.genetic and ens.validation == "held-out" else 0


def _load_limit(config: RunConfig) -> int:
    """The training images every process loads: pool plus validation (0 = the whole set)."""
    return config.data.limit + _validation_images(config) if config.data.limit else 0


def _with(config: RunConfig, **sections: dict[str, Any]) -> RunConfig:
    raw = config_to_dict(config)
    for name, values in sections.items():
        if isinstance(raw.get(name), dict):
            raw[name].update(values)
        else:
            raw[name] = values
    return config_from_dict(raw)


def _load(config: RunConfig) -> _EnsembleData:
    data = _load_data(_with(config, data={"limit": _load_limit(config)}))
    loaded, validation = len(data.train_y), _validation_images(config)
    pool = config.data.limit or loaded - validation
    if pool + validation > loaded or pool < len(config.ensemble.submodels):
        raise ConfigError(
            f"{config.data.name} has {loaded} training images: too few for a pool of "
            f"{config.data.limit or 'all'} (data.limit) for {len(config.ensemble.submodels)} "
            f"sub-models plus {validation} validation images (ensemble.validation_images)"
        )
    return _EnsembleData(data.train_x, data.train_y, pool, validation, data.test_x, data.test_y)


def submodel_config(config: RunConfig, index: int) -> RunConfig:
    """The ``diehl-cook`` config of sub-model ``index``: the ensemble's ``[diehl_cook]`` settings
    with ``ensemble.submodels[index]`` neurons, STDP rates ``nu_pre`` and ``nu_post`` times
    ``ensemble.learning_rate_scale``, seed ``seed + 1000 (index + 1)``, one thread."""
    dc, scale = config.diehl_cook, config.ensemble.learning_rate_scale
    return _with(
        config,
        method="diehl-cook",
        seed=config.seed + _SUBMODEL_SEED_STRIDE * (index + 1),
        data={"limit": _load_limit(config)},
        train={"threads": 1, "progress": False},
        diehl_cook={
            "neurons": config.ensemble.submodels[index],
            "nu_pre": dc.nu_pre * scale,
            "nu_post": dc.nu_post * scale,
        },
    )


def _network(config: RunConfig, weights: np.ndarray, theta: np.ndarray) -> DiehlCookNetwork:
    """A network at rest with trained ``weights`` [K, N] and thresholds ``theta`` [N]."""
    params = params_from_config(config)
    state = new_state(params, *weights.shape)
    state.theta[:] = theta
    return DiehlCookNetwork(params, np.ascontiguousarray(weights), state, config.diehl_cook.engine)


# ---------------------------------------------------------------------------------------------
# the two kinds of task (plain functions: the Ray module schedules them)


def _set_worker_threads() -> None:
    from spikeforge.run.bptt import _set_threads

    _set_threads(1)


def _kill_hook(index: int) -> tuple[int, int] | None:
    """``(images, attempts)`` from :data:`KILL_HOOK_VARIABLE` for sub-model ``index``."""
    spec = os.environ.get(KILL_HOOK_VARIABLE, "")
    if not spec:
        return None
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts):
        raise ConfigError(f"{KILL_HOOK_VARIABLE} must look like K:N or K:N:TIMES; got {spec!r}")
    if int(parts[0]) != index:
        return None
    return int(parts[1]), int(parts[2]) if len(parts) == 3 else 1


def _attempts(directory: Path) -> list[dict[str, Any]]:
    path = directory / "attempts.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train_submodel_task(
    config: RunConfig, directory: str, indices: np.ndarray, kill: tuple[int, int] | None
) -> dict[str, Any]:
    """Train one sub-model into ``directory`` (resuming from its checkpoint if one is there);
    return its training summary. Runs in a Ray worker, one thread."""
    _set_worker_threads()
    out = Path(directory)
    has_checkpoint = (out / WEIGHTS_NAME).is_file()
    resumed_from = 0
    if has_checkpoint:
        _, meta = load_checkpoint(out)
        if meta["complete"] and (out / "summary.json").is_file():
            return json.loads((out / "summary.json").read_text())
        resumed_from = meta["progress"]["train_samples"]
    out.mkdir(parents=True, exist_ok=True)
    attempt = len(_attempts(out)) + 1
    record = {"attempt": attempt, "pid": os.getpid(), "resumed_from_images": resumed_from}
    with open(out / "attempts.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")
    writer = ProgressWriter(out / "progress.json")

    def on_image(done: int, total: int) -> None:
        writer.update(done, total)
        if kill is not None and done >= kill[0] and attempt <= kill[1]:
            os.kill(os.getpid(), signal.SIGKILL)  # fault injection (tests): a dying worker

    return train_diehl_cook(
        config,
        out,
        resume=has_checkpoint,
        log=lambda *_: None,
        train_indices=indices,
        evaluate=False,
        on_image=on_image,
    )


_PASS_SEED_OFFSETS = {
    "label": _LABEL_SEED_OFFSET,
    "test": _TEST_SEED_OFFSET,
    "validation": _VALIDATION_SEED_OFFSET,
}
_DATA_CACHE: dict[str, _EnsembleData] = {}


def _cached_load(config: RunConfig) -> _EnsembleData:
    """:func:`_load`, kept for the next task of the same worker process (one dataset at most)."""
    key = json.dumps(
        [config_to_dict(config)["data"], _load_limit(config), _validation_images(config)]
    )
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = _load(config)
    return _DATA_CACHE[key]


def _pass_images(data: _EnsembleData, which: str, label_indices: np.ndarray) -> np.ndarray:
    """The images of one pass: the labelling images ``label_indices``, the test set, or the
    validation split (``which``)."""
    if which == "label":
        return data.train_x[label_indices]
    if which == "test":
        return data.test_x
    return data.train_x[data.validation_slice()]


def _image_ticker(progress_path: str, total: int) -> Callable[..., None]:
    """A ``tick`` for :func:`spike_counts`: each call counts one image and writes ``done / total``
    to the task's progress file."""
    writer = ProgressWriter(Path(progress_path))
    done = [0]

    def tick(*_: Any) -> None:
        done[0] += 1
        writer.update(done[0], total)

    return tick


def _run_pass(
    config: RunConfig,
    network: DiehlCookNetwork,
    which: str,
    images: np.ndarray,
    tick: Any = None,
) -> tuple[np.ndarray, float]:
    """Spike counts (int64 ``[M, N]``) and seconds of pass ``which`` over ``images``, learning
    off, from rest, with that pass's encoder seed."""
    started = time.perf_counter()
    counts = spike_counts(network, images, config.seed + _PASS_SEED_OFFSETS[which], tick)
    return counts, time.perf_counter() - started


def network_pass_task(
    config: RunConfig,
    weights: np.ndarray,
    theta: np.ndarray,
    which: str,
    label_indices: np.ndarray,
    progress_path: str,
) -> dict[str, Any]:
    """One pass (``"label"``, ``"test"`` or ``"validation"``) of a network: ``{"counts": int32
    [M, N], "seconds": ...}``. Runs in a Ray worker, one thread; the passes of one network are
    independent (each starts from rest with its own seed), so they run as separate tasks."""
    _set_worker_threads()
    images = _pass_images(_cached_load(config), which, label_indices)
    tick = _image_ticker(progress_path, len(images))
    network = _network(config, weights, theta)
    counts, seconds = _run_pass(config, network, which, images, tick)
    return {"counts": counts.astype(np.int32), "seconds": seconds}


def _score(
    data: _EnsembleData,
    label_indices: np.ndarray,
    counts: dict[str, np.ndarray],
    seconds: dict[str, float],
) -> dict[str, Any]:
    """Assign labels from the label pass's counts, classify the test pass's: accuracies (all
    activity, proportion weighting), confusion matrix, assignments, pass seconds."""
    label_counts, test_counts = counts["label"], counts["test"]
    assignment = assign_labels(label_counts, data.train_y[label_indices])
    all_activity = predict_all_activity(test_counts, assignment)
    return {
        "neurons": int(label_counts.shape[1]),
        "test_accuracy": float((all_activity == data.test_y).mean()),
        "test_accuracy_proportion": float(
            (predict_proportion(test_counts, assignment) == data.test_y).mean()
        ),
        "label_images": int(len(label_indices)),
        "test_images": int(len(data.test_y)),
        "test_spikes_per_image": float(test_counts.sum(1).mean()),
        "confusion": confusion_matrix(data.test_y, all_activity).tolist(),
        "assignments": assignment.assignments.tolist(),
        "seconds": seconds,
    }


def evaluate_network_task(
    config: RunConfig,
    weights: np.ndarray,
    theta: np.ndarray,
    label_indices: np.ndarray,
    validation: bool,
    keep_counts: bool,
    progress_path: str,
) -> dict[str, Any]:
    """Label a network on ``label_indices`` of the training images, classify the test set (and
    record validation counts when asked), all in this process, one thread: the passes of
    :func:`network_pass_task` scored as the trainer scores them.

    Returns accuracies (all activity, proportion weighting), confusion matrix, assignments and
    pass times; with ``keep_counts`` also the spike counts (int32) of each pass.
    """
    _set_worker_threads()
    data = _cached_load(config)
    network = _network(config, weights, theta)
    passes = ("label", "test", "validation") if validation else ("label", "test")
    images = {which: _pass_images(data, which, label_indices) for which in passes}
    tick = _image_ticker(progress_path, sum(len(x) for x in images.values()))

    counts, seconds = {}, {}
    for which in passes:
        counts[which], seconds[which] = _run_pass(config, network, which, images[which], tick)
    result = _score(data, label_indices, counts, seconds)
    if keep_counts:
        result["counts"] = {k: v.astype(np.int32) for k, v in counts.items()}
    return result


# ---------------------------------------------------------------------------------------------
# the driver


def _tail(indices: np.ndarray, count: int) -> np.ndarray:
    """The last ``count`` of ``indices`` (all when 0): the labelled images, as in Diehl & Cook."""
    return indices[-count:] if count else indices


_Networks = dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # name -> (w, theta, label idx)


def _evaluate(
    config: RunConfig,
    data: _EnsembleData,
    out: Path,
    networks: _Networks,
    keep_counts_of: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Evaluate each network, each of its passes (label, test) a Ray task of its own so that the
    workers stay busy to the end; the network ``keep_counts_of`` also returns its spike counts
    (and validation counts when the genetic search is on)."""
    from spikeforge.ensemble.distributed import Job, run_tasks

    (out / "evaluation").mkdir(exist_ok=True)
    jobs, keys = [], []
    for name, (weights, theta, label_indices) in networks.items():
        passes = ["label", "test"]
        if name == keep_counts_of and _validation_images(config) > 0:
            passes.append("validation")
        for which in passes:
            progress = out / "evaluation" / f"{name}.{which}.progress.json"
            args = (config, weights, theta, which, label_indices, str(progress))
            jobs.append(Job(f"{which} {name}", network_pass_task, args, progress))
            keys.append((name, which))
    outputs = run_tasks(
        jobs, max_retries=config.ensemble.max_retries, show_progress=config.train.progress
    )
    counts: dict[str, dict[str, np.ndarray]] = {name: {} for name in networks}  # int32
    seconds: dict[str, dict[str, float]] = {name: {} for name in networks}
    for (name, which), output in zip(keys, outputs, strict=True):
        counts[name][which] = output["counts"]
        seconds[name][which] = output["seconds"]
    results = {}
    for name, (_, _, label_indices) in networks.items():
        scored = {which: c.astype(np.int64) for which, c in counts[name].items()}
        results[name] = _score(data, label_indices, scored, seconds[name])
        if name == keep_counts_of:
            results[name]["counts"] = counts[name]
    return results


def _train_submodels(
    config: RunConfig, out: Path, shards: list[np.ndarray], log: Any
) -> tuple[list[dict[str, Any]], float]:
    """Train every sub-model as a Ray task: (their training summaries, wall seconds)."""
    from spikeforge.ensemble.distributed import Job, run_tasks

    jobs = []
    shown = presentations(shards, config.ensemble.presentations)
    for k, images in enumerate(shown):
        directory = out / "submodels" / str(k)
        args = (submodel_config(config, k), str(directory), images, _kill_hook(k))
        jobs.append(Job(f"sub-model {k}", train_submodel_task, args, directory / "progress.json"))
    sizes = [len(shard) for shard in shards]
    log(
        f"training {len(jobs)} sub-models of {config.ensemble.submodels} neurons on Ray: shards of "
        f"{sizes} images, each shown {[len(images) for images in shown]} per epoch "
        f"(ensemble.presentations = {config.ensemble.presentations!r})"
    )
    started = time.perf_counter()
    summaries = run_tasks(
        jobs, max_retries=config.ensemble.max_retries, show_progress=config.train.progress
    )
    return summaries, time.perf_counter() - started


def _compress_all(
    merged: DiehlCookNetwork, config: RunConfig
) -> tuple[dict[str, np.ndarray], dict[str, float], dict[str, np.ndarray]]:
    """Greedy pruning by each metric: (kept neurons, seconds, whole removal path) per metric.

    The seconds cover what the paper times: distances of all pairs, sorting them, the walk to the
    target size and building the smaller network (Numba kernels already loaded). The whole path
    (for the plot) is extra.
    """
    ens = config.ensemble
    keeps, seconds, paths = {}, {}, {}
    for metric in ens.metrics:  # load the compiled kernels first: a one-off cost, not a merge's
        compress(np.eye(3), metric, 2, priority=removal_priority(ens.remove, np.zeros(3)))
    priority = removal_priority(ens.remove, merged.state.theta)  # the same for every metric
    for metric in ens.metrics:
        if 0 < ens.target_neurons < merged.n_neurons:
            started = time.perf_counter()
            result = compress(merged.weights, metric, ens.target_neurons, priority=priority)
            select_neurons(merged, result.keep)
            seconds[metric] = time.perf_counter() - started
            keeps[metric] = result.keep
        paths[metric] = removal_order(pairwise_distance(merged.weights, metric), None, priority)
    return keeps, seconds, paths


def search_subsets(
    config: RunConfig, fitness: Any, n_merged: int, initial: list[np.ndarray]
) -> GeneticResult:
    """The genetic search with the config's settings (``ensemble.genetic_*``, ``seed``) over
    subsets of ``n_merged`` neurons, seeded with the compressions ``initial`` (kept indices)."""
    ens = config.ensemble
    return genetic_search(
        fitness, n_merged, ens.target_neurons,
        population=ens.genetic_population, generations=ens.genetic_generations,
        tournament=ens.genetic_tournament, elite=ens.genetic_elite,
        mutation=ens.genetic_mutation, seed=config.seed,
        initial=[np.isin(np.arange(n_merged), keep) for keep in initial],
    )  # fmt: skip


def _genetic(
    config: RunConfig,
    data: _EnsembleData,
    merged_counts: dict[str, np.ndarray],
    label_indices: np.ndarray,
    initial: list[np.ndarray],
) -> tuple[np.ndarray, dict[str, Any]]:
    """The genetic search, seeded with the metric compressions: (kept neurons, its record)."""
    ens = config.ensemble
    started = time.perf_counter()
    if ens.validation == "label-split":
        # the last validation_images labelled images score; the others assign the labels
        held = ens.validation_images
        if held >= label_indices.size:
            raise EnsembleError(
                f"ensemble.validation = 'label-split' needs more than {held} labelled images; "
                f"the pool gives {label_indices.size}: lower ensemble.validation_images"
            )
        counts, labels = merged_counts["label"], data.train_y[label_indices]
        fitness = SubsetAccuracy(counts[:-held], labels[:-held], counts[-held:], labels[-held:])
    else:
        fitness = SubsetAccuracy(
            merged_counts["label"],
            data.train_y[label_indices],
            merged_counts["validation"],
            data.train_y[data.validation_slice()],
        )
    search = search_subsets(config, fitness, merged_counts["label"].shape[1], initial)
    record = {
        "search_seconds": time.perf_counter() - started,
        "validation": ens.validation,
        "validation_accuracy_estimate": search.fitness,
        "best_history": search.best_history.tolist(),
        "mean_history": search.mean_history.tolist(),
        "initial": "the metric compressions, then random subsets",
    }
    return search.keep, record


def _path_curves(
    config: RunConfig,
    data: _EnsembleData,
    merged_counts: dict[str, np.ndarray],
    label_indices: np.ndarray,
    paths: dict[str, np.ndarray],
) -> dict[str, dict[str, list]]:
    """Test accuracy along each removal path, estimated from the merged network's counts at
    ``path_points`` evenly spaced removal counts (and the target)."""
    n_merged = merged_counts["label"].shape[1]
    target = config.ensemble.target_neurons
    removed = np.linspace(0, n_merged - 1, config.ensemble.path_points).round()
    if 0 < target < n_merged:
        removed = np.append(removed, n_merged - target)
    removed = np.unique(removed.astype(np.int64))
    estimate = SubsetAccuracy(
        merged_counts["label"], data.train_y[label_indices], merged_counts["test"], data.test_y
    )
    return {
        metric: {
            "removed": removed.tolist(),
            "estimated_test_accuracy": estimate(kept_masks(n_merged, order, removed)).tolist(),
        }
        for metric, order in paths.items()
    }


def _submodel_record(
    config: RunConfig,
    out: Path,
    index: int,
    summary: dict[str, Any],
    shard_labels: np.ndarray,
    evaluated: dict[str, Any],
) -> dict[str, Any]:
    return {
        "index": index,
        "neurons": config.ensemble.submodels[index],
        "seed": config.seed + _SUBMODEL_SEED_STRIDE * (index + 1),
        "shard_images": int(shard_labels.size),
        "shard_classes": np.bincount(shard_labels, minlength=10).tolist(),
        **{
            key: summary[key]
            for key in (
                "train_seconds",
                "train_samples",
                "samples_per_second",
                "presentations",
                "theta_mean",
            )
        },  # fmt: skip
        "attempts": _attempts(out / "submodels" / str(index)),
        **{
            key: evaluated[key]
            for key in ("test_accuracy", "test_accuracy_proportion", "label_images")
        },
    }


def _check_presentations_recorded(
    saved_config: Path, config: RunConfig, shards: list[np.ndarray]
) -> None:
    """A run directory written before ``ensemble.presentations`` existed has no such key in its
    ``config.toml``, and its sub-models were shown their own shards ("own-shard"). Reading it
    fills in today's default, "largest-shard": with shards of unequal size a resume would then
    show the sub-models other images than their first attempts saw. Stop with the fix instead
    (equal shards: both kinds are the same, nothing to check)."""
    recorded = tomllib.loads(saved_config.read_text()).get("ensemble", {})
    unequal = len({len(shard) for shard in shards}) > 1
    if "presentations" not in recorded and config.ensemble.presentations != "own-shard" and unequal:
        raise ConfigError(
            f"cannot resume: {saved_config} predates ensemble.presentations, so its sub-models "
            "were shown their own shards; resume with --set ensemble.presentations=own-shard"
        )


def train_ensemble(
    config: RunConfig, out: Path, resume: bool = False, log: Any = print
) -> dict[str, Any]:
    """Shard, train sub-models on Ray, merge, compress, evaluate; write the run directory;
    return the summary (also ``summary.json``; every figure in ``ensemble.json``)."""
    from spikeforge.ensemble import distributed
    from spikeforge.run.bptt import _append_metrics, _check_resumable, _cpu_name, _set_threads

    wall_started = time.perf_counter()
    out = prepare_run_dir(out, resume)
    if resume:
        _check_resumable(load_config(out / "config.toml"), config, _RESUME_MAY_CHANGE)
    _set_threads(config.train.threads)
    ens = config.ensemble
    data = _load(config)
    shards = make_shards(
        ens.shards, data.pool_labels(), len(ens.submodels), config.seed, ens.dirichlet_alpha
    )
    if resume:
        _check_presentations_recorded(out / "config.toml", config, shards)
    save_config(config, out / "config.toml")
    if not resume:
        (out / "metrics.jsonl").write_text("")
        meta = {"stage": "submodels", "complete": False}
        save_checkpoint(out, {"submodels": torch.tensor(ens.submodels)}, meta)

    with distributed.ray_session(ens.workers, ens.address):
        summaries, submodels_wall = _train_submodels(config, out, shards, log)
        _append_metrics(out, {"stage": "submodels", "wall_seconds": submodels_wall})

        started = time.perf_counter()
        subs = [
            load_network(out / "submodels" / str(k), submodel_config(config, k))
            for k in range(len(shards))
        ]
        merged = concatenate_networks(subs)
        concatenate_seconds = time.perf_counter() - started
        keeps, merge_seconds, paths = _compress_all(merged, config)

        label = _tail(np.arange(data.pool), config.diehl_cook.label_images)
        networks = {"merged": (merged.weights, merged.state.theta, label)}
        for name, keep in keeps.items():
            networks[name] = (merged.weights[:, keep], merged.state.theta[keep], label)
        if len(subs) > 1:  # a single sub-model is the merged network (same labelling too)
            for k, (sub, shard) in enumerate(zip(subs, shards, strict=True)):
                shard_label = _tail(shard, config.diehl_cook.label_images)
                networks[f"submodel-{k}"] = (sub.weights, sub.state.theta, shard_label)
        log(f"merged {merged.n_neurons} neurons; evaluating {len(networks)} networks")
        results = _evaluate(config, data, out, networks, keep_counts_of="merged")
        merged_counts = results["merged"].pop("counts")

        genetic: dict[str, Any] = {}
        if ens.genetic and 0 < ens.target_neurons < merged.n_neurons:
            keeps["genetic"], genetic = _genetic(
                config, data, merged_counts, label, list(keeps.values())
            )
            # label-split reads the merged network's labelling pass, untimed as every network's
            # labelling is; its length is recorded beside
            genetic["validation_pass_seconds"] = results["merged"]["seconds"].get("validation", 0.0)
            genetic["merged_label_pass_seconds"] = results["merged"]["seconds"]["label"]
            genetic["seconds"] = genetic["search_seconds"] + genetic["validation_pass_seconds"]
            chosen = keeps["genetic"]
            network = (merged.weights[:, chosen], merged.state.theta[chosen], label)
            results.update(_evaluate(config, data, out, {"genetic": network}))

    headline = next(iter(keeps), "merged")
    tensors = {
        "merged.weights": torch.from_numpy(merged.weights),
        "merged.theta": torch.from_numpy(merged.state.theta),
        **{f"keep.{name}": torch.from_numpy(keep) for name, keep in keeps.items()},
        **{f"path.{metric}": torch.from_numpy(order) for metric, order in paths.items()},
    }
    meta = {"stage": "complete", "complete": True, "networks": ["merged", *keeps]}
    save_checkpoint(out, tensors, {**meta, "headline": headline})
    for name, result in results.items():
        figures = ("neurons", "test_accuracy", "test_accuracy_proportion")
        _append_metrics(
            out, {"stage": "evaluate", "network": name, **{k: result[k] for k in figures}}
        )

    headline_seconds = merge_seconds.get(headline, 0.0)
    if headline == "genetic":
        headline_seconds = genetic["seconds"]
    train_seconds = submodels_wall + concatenate_seconds + headline_seconds
    train_samples = int(sum(s["train_samples"] for s in summaries))
    machine = f"{platform.machine()} {_cpu_name()}, {os.cpu_count()} cores"
    report = {
        "submodels": [
            _submodel_record(
                config,
                out,
                k,
                summary,
                data.train_y[shard],
                results.get(f"submodel-{k}", results["merged"]),
            )  # fmt: skip
            for k, (summary, shard) in enumerate(zip(summaries, shards, strict=True))
        ],
        "learning_rate_scale": ens.learning_rate_scale,
        "remove": ens.remove,
        "shards": ens.shards,
        "dirichlet_alpha": ens.dirichlet_alpha if ens.shards == "dirichlet" else None,
        "presentations": ens.presentations,
        "pool_images": data.pool,
        "validation_images": data.validation,
        "submodels_wall_seconds": submodels_wall,
        "merged": {
            "neurons": merged.n_neurons,
            "test_accuracy": results["merged"]["test_accuracy"],
            "test_accuracy_proportion": results["merged"]["test_accuracy_proportion"],
            "concatenate_seconds": concatenate_seconds,
        },
        "compressed": {
            name: {
                "neurons": int(keep.size),
                "test_accuracy": results[name]["test_accuracy"],
                "test_accuracy_proportion": results[name]["test_accuracy_proportion"],
                **({"merge_seconds": merge_seconds[name]} if name in merge_seconds else genetic),
            }
            for name, keep in keeps.items()
        },
        "paths": _path_curves(config, data, merged_counts, label, paths),
        "path_note": (
            "estimated: the merged network's label and test spike counts restricted to the "
            "neurons left (no re-simulation); the compressed networks are simulated"
        ),
        "headline": headline,
        "train_seconds": train_seconds,
        "wall_seconds": time.perf_counter() - wall_started,
        "machine": machine,
    }
    atomic_write_text(out / "ensemble.json", json.dumps(report, indent=1) + "\n")
    final = results[headline]
    summary = {
        "method": config.method,
        "dataset": config.data.name,
        "submodels": list(ens.submodels),
        "merged_neurons": merged.n_neurons,
        "neurons": final["neurons"],
        "final_network": headline,
        "test_accuracy": final["test_accuracy"],
        "test_accuracy_proportion": final["test_accuracy_proportion"],
        "merged_test_accuracy": results["merged"]["test_accuracy"],
        "label_images": final["label_images"],
        "test_images": final["test_images"],
        "train_seconds": train_seconds,
        "train_samples": train_samples,
        "samples_per_second": train_samples / max(train_seconds, 1e-9),
        "wall_seconds": report["wall_seconds"],
        "confusion": final["confusion"],
        "assignments": final["assignments"],
        "machine": machine,
        "config": config_to_dict(config),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    if keeps:
        log(
            f"compressed to {ens.target_neurons}: "
            + ", ".join(f"{name} {results[name]['test_accuracy']:.4f}" for name in keeps)
        )
    log(
        f"{headline}: test accuracy {summary['test_accuracy']:.4f} with {final['neurons']} "
        f"neurons (merged {merged.n_neurons}: {summary['merged_test_accuracy']:.4f}); training "
        f"wall time {train_seconds:.1f} s"
    )
    return summary


# ---------------------------------------------------------------------------------------------
# eval and plot of a saved run


def _saved_networks(
    run_dir: Path,
) -> tuple[str, dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """(headline name, kept neurons of each compression in training order, merged weights and
    thresholds) from a finished run's checkpoint."""
    tensors, meta = load_checkpoint(run_dir)
    if not meta.get("complete"):
        raise EnsembleError(
            f"{run_dir} holds an unfinished ensemble run (stage {meta.get('stage')}); "
            f"finish it with: spikeforge train {run_dir / 'config.toml'} --out {run_dir} --resume"
        )
    keeps = {name: tensors[f"keep.{name}"].numpy() for name in meta["networks"][1:]}
    weights, theta = tensors["merged.weights"].numpy(), tensors["merged.theta"].numpy()
    return meta["headline"], keeps, weights, theta


def evaluate_run_ensemble(run_dir: Path, config: RunConfig) -> dict[str, Any]:
    """``spikeforge eval`` of an ensemble run: simulate the merged and every compressed network
    again from the checkpoint (same seeds and label images: the figures of ``ensemble.json``)."""
    from spikeforge.ensemble import distributed

    run_dir = Path(run_dir)
    headline, keeps, weights, theta = _saved_networks(run_dir)
    data = _load(config)
    label = np.arange(data.pool)[-config.diehl_cook.label_images :]
    if config.diehl_cook.label_images == 0:
        label = np.arange(data.pool)
    networks = {"merged": (weights, theta, label)}
    networks.update({name: (weights[:, k], theta[k], label) for name, k in keeps.items()})
    with distributed.ray_session(config.ensemble.workers, config.ensemble.address):
        results = _evaluate(config, data, run_dir, networks)
    return {
        "run": str(run_dir),
        "final_network": headline,
        "test_accuracy": results[headline]["test_accuracy"],
        "networks": {
            name: {
                "neurons": r["neurons"],
                "test_accuracy": r["test_accuracy"],
                "test_accuracy_proportion": r["test_accuracy_proportion"],
            }
            for name, r in results.items()
        },
    }


def plot_run_ensemble(run_dir: Path, config: RunConfig) -> list[Path]:
    """``spikeforge plot`` of an ensemble run: compression.png (accuracy against neurons removed
    for each metric, estimated along the path, simulated at the target, the genetic network's
    point), receptive_fields.png and confusion.png of the final network (from ensemble.json,
    summary.json and the checkpoint; nothing is simulated)."""
    from spikeforge import viz

    run_dir = Path(run_dir)
    report_path = run_dir / "ensemble.json"
    if not report_path.is_file():
        raise EnsembleError(f"{run_dir} has no ensemble.json; the run has not finished")
    report = json.loads(report_path.read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    n_merged = report["merged"]["neurons"]
    paths = {
        metric: (curve["removed"], curve["estimated_test_accuracy"])
        for metric, curve in report["paths"].items()
    }
    simulated = {
        name: (n_merged - entry["neurons"], entry["test_accuracy"])
        for name, entry in report["compressed"].items()
    }
    figures = [
        viz.plot_compression(
            paths, simulated, report["merged"]["test_accuracy"], run_dir / "compression.png"
        )
    ]
    headline, keeps, weights, _ = _saved_networks(run_dir)
    final = weights[:, keeps[headline]] if headline in keeps else weights
    side = int(round(np.sqrt(final.shape[0])))
    figures.append(
        viz.plot_receptive_fields(
            final, (side, side), run_dir / "receptive_fields.png", summary["assignments"]
        )
    )
    figures.append(
        viz.plot_confusion(np.array(summary["confusion"]), run_dir / "confusion.png", run_dir.name)
    )
    return figures

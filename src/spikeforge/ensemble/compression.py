"""Compress a merged network by removing redundant neurons (Hanyu & Dang, "Accelerating
distributed spike-timing-dependent-plasticity learning", step 5).

Greedy pairwise pruning: score every pair ``i < j`` of excitatory neurons by a distance
(:mod:`spikeforge.ensemble.similarity`), sort the pairs from most to least similar (ascending
distance; ties in row-major pair order, i.e. by ``i`` then ``j``), then walk the sorted list: a
pair whose two neurons are both still present is the most similar remaining pair, and **one of its
two neurons is removed**. Which one is the removal rule's choice (:data:`REMOVAL_RULES`), the one
thing the method leaves open; the walk stops when the target size is reached:

- ``higher-index``: neuron j (i stays). With concatenated sub-models this is, for every pair
  across two sub-models, the neuron of the later sub-model.
- ``higher-threshold``: the neuron with the higher adaptive threshold ``theta`` (ties: j). Of two
  neurons with near-equal incoming weights, the one with the lower threshold reaches it first on
  the inputs both prefer and, through the lateral inhibition, silences the other: the network's
  response to those inputs is mostly the lower-threshold neuron's, so removing its
  higher-threshold twin changes that response least. Theta is part of the trained network, so
  the rule needs no extra simulation.

Both are "keep the neuron of higher priority": :func:`removal_priority` gives the priorities.

Because neurons are only ever removed, the removals to any size are a prefix of the removals to a
smaller size: one walk gives the whole path (used for accuracy-against-removed curves). A walk can
continue down to one neuron: any two survivors form a pair the walk met with both present.

Cost: the distances (one matrix product, or the Manhattan kernel), one sort of N(N-1)/2 values,
and a compiled O(N^2) walk; 500 -> 300 takes milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from spikeforge.ensemble.similarity import pairwise_distance, upper_pairs

__all__ = [
    "REMOVAL_RULES",
    "Compression",
    "removal_priority",
    "removal_order",
    "kept_after",
    "kept_masks",
    "compress",
]

REMOVAL_RULES = ("higher-threshold", "higher-index")


def removal_priority(rule: str, theta: np.ndarray) -> np.ndarray:
    """Keep priorities of the neurons under a removal rule: of the most similar remaining pair,
    the neuron of lower priority is removed (equal priorities: the higher index).

    Args:
        rule: one of :data:`REMOVAL_RULES` (see the module docstring).
        theta: adaptive thresholds ``theta[N]`` of the merged network (mV).

    Returns:
        float64 [N]: ``-index`` for ``higher-index``, ``-theta`` for ``higher-threshold``.
    """
    theta = np.asarray(theta, np.float64)
    if rule == "higher-index":
        return -np.arange(theta.size, dtype=np.float64)
    if rule == "higher-threshold":
        if not np.isfinite(theta).all():
            raise ValueError("theta holds NaN or infinite values")
        return -theta
    raise ValueError(
        f"removal rule {rule!r} is not valid; choose one of: {', '.join(REMOVAL_RULES)}"
    )


@numba.njit(cache=True, nogil=True)
def _walk(
    first: np.ndarray,
    second: np.ndarray,
    order: np.ndarray,
    priority: np.ndarray,
    removed: np.ndarray,
) -> int:
    present = np.ones(priority.size, np.bool_)
    count = 0
    if removed.size == 0:
        return 0
    for p in order:
        i, j = first[p], second[p]
        if present[i] and present[j]:
            gone = i if priority[i] < priority[j] else j
            present[gone] = False
            removed[count] = gone
            count += 1
            if count == removed.size:
                break
    return count


def removal_order(
    distance: np.ndarray, n_remove: int | None = None, priority: np.ndarray | None = None
) -> np.ndarray:
    """Neurons in the order the greedy walk removes them.

    Args:
        distance: ``D[N, N]``, symmetric, smaller = more similar (only ``i < j`` is read).
        n_remove: how many to remove, 0..N-1; default N-1 (the whole path).
        priority: keep priorities [N] (:func:`removal_priority`): the neuron of lower priority of
            each pair is removed, j on ties; default None removes j (``higher-index``).

    Returns:
        int64 [n_remove]: ``removed[r]`` is the neuron removed at step r.
    """
    distance = np.asarray(distance, np.float64)
    if distance.ndim != 2 or distance.shape[0] != distance.shape[1] or distance.shape[0] < 1:
        raise ValueError(f"distance must be a square [N, N] matrix; got shape {distance.shape}")
    n_neurons = distance.shape[0]
    n_remove = n_neurons - 1 if n_remove is None else n_remove
    if not 0 <= n_remove <= n_neurons - 1:
        raise ValueError(f"can remove 0..{n_neurons - 1} of {n_neurons} neurons; got {n_remove}")
    if priority is None:
        priority = removal_priority("higher-index", np.zeros(n_neurons))
    priority = np.asarray(priority, np.float64)
    if priority.shape != (n_neurons,) or np.isnan(priority).any():
        raise ValueError(f"priority must be [{n_neurons}] without NaN; got shape {priority.shape}")
    first, second, values = upper_pairs(distance)
    if np.isnan(values).any():
        raise ValueError("distance holds NaN values")
    order = np.argsort(values, kind="stable")
    removed = np.empty(n_remove, np.int64)
    done = _walk(first, second, order, priority, removed)
    assert done == n_remove  # the walk can always reach one survivor (see the module docstring)
    return removed


def kept_after(n_neurons: int, removed: np.ndarray, n_remove: int) -> np.ndarray:
    """Sorted indices of the neurons left after the first ``n_remove`` removals of ``removed``."""
    present = np.ones(n_neurons, bool)
    present[np.asarray(removed[:n_remove], np.int64)] = False
    return np.flatnonzero(present)


def kept_masks(n_neurons: int, removed: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Bool ``[len(counts), N]``: row r marks the neurons left after ``counts[r]`` removals."""
    step = np.full(n_neurons, np.iinfo(np.int64).max)
    step[np.asarray(removed, np.int64)] = np.arange(len(removed))
    return step[None, :] >= np.asarray(counts, np.int64)[:, None]


@dataclass(frozen=True)
class Compression:
    """Result of :func:`compress`.

    Attributes:
        metric: the distance used.
        keep: sorted int64 indices of the kept neurons [target].
        removed: int64 removal order over the whole path [N - 1] (its first N - target entries
            are the neurons removed to reach ``target``).
    """

    metric: str
    keep: np.ndarray
    removed: np.ndarray


def compress(
    weights: np.ndarray,
    metric: str,
    target: int,
    full_path: bool = False,
    priority: np.ndarray | None = None,
) -> Compression:
    """Greedy pairwise pruning of the neurons of ``weights`` [K, N] down to ``target`` neurons.

    With ``full_path`` the walk continues to one neuron so that ``removed`` holds the whole path;
    ``keep`` is the same either way. ``priority`` [N] picks the neuron of each pair to remove
    (:func:`removal_order`; default: the higher index).
    """
    n_neurons = np.asarray(weights).shape[1]
    if not 1 <= target <= n_neurons:
        raise ValueError(f"target must lie in 1..{n_neurons}; got {target}")
    distance = pairwise_distance(weights, metric)
    removed = removal_order(distance, n_neurons - 1 if full_path else n_neurons - target, priority)
    return Compression(metric, kept_after(n_neurons, removed, n_neurons - target), removed)

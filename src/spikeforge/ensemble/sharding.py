"""Split a training set into K shards, one per sub-model (Hanyu & Dang, "Accelerating distributed
spike-timing-dependent-plasticity learning", step 1).

- :func:`equal_shards`: a random permutation cut into K parts whose sizes differ by at most one
  (identically distributed shards).
- :func:`dirichlet_shards`: class-skewed shards, as local datasets differ in practice: for each
  class c, proportions ``p_c ~ Dirichlet(alpha, ..., alpha)`` over the K shards, and the class's
  samples (in random order) are cut at the cumulative proportions. Small ``alpha`` gives shards
  dominated by a few classes; large ``alpha`` approaches equal class mixes.

Both use every sample exactly once, return each shard's indices in ascending order, and depend
only on their arguments (the seed fixes every random draw).

:func:`presentations` then gives each sub-model the images it is shown in an epoch: its shard
(``"own-shard"``), or its shard repeated up to the largest shard's size (``"largest-shard"``). A
Diehl & Cook neuron's adaptive threshold grows with every spike, so sub-models shown very
different numbers of images end with thresholds on different scales, and in the merged network
the least trained can then win the lateral inhibition on every input (measured in README:
class-skewed shards).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "PRESENTATION_KINDS",
    "SHARD_KINDS",
    "dirichlet_shards",
    "equal_shards",
    "make_shards",
    "presentations",
]

SHARD_KINDS = ("equal", "dirichlet")
PRESENTATION_KINDS = ("largest-shard", "own-shard")


def _check_counts(n_samples: int, n_shards: int) -> None:
    if n_shards < 1:
        raise ValueError(f"need at least one shard; got {n_shards}")
    if n_samples < n_shards:
        raise ValueError(f"cannot cut {n_samples} samples into {n_shards} non-empty shards")


def equal_shards(n_samples: int, n_shards: int, seed: int) -> list[np.ndarray]:
    """Indices ``0..n_samples-1`` in random order cut into ``n_shards`` near-equal parts.

    Returns:
        ``n_shards`` int64 arrays, each sorted; sizes differ by at most one, larger ones first.
    """
    _check_counts(n_samples, n_shards)
    order = np.random.default_rng(seed).permutation(n_samples)
    return [np.sort(part).astype(np.int64) for part in np.array_split(order, n_shards)]


def dirichlet_shards(
    labels: np.ndarray, n_shards: int, alpha: float, seed: int
) -> list[np.ndarray]:
    """Class-skewed shards: each class's samples split by proportions drawn from Dirichlet(alpha).

    Args:
        labels: int class of each sample, shape [M].
        n_shards: K.
        alpha: concentration of the symmetric Dirichlet (> 0).
        seed: fixes the proportions and the order of each class's samples.

    Returns:
        K sorted int64 index arrays that together hold every index once.

    Raises:
        ValueError: a shard came out empty (one line: raise alpha, use fewer shards or more data).
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional; got shape {labels.shape}")
    _check_counts(labels.size, n_shards)
    if not 0 < alpha < float("inf"):
        raise ValueError(f"dirichlet alpha must be positive; got {alpha}")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(n_shards)]
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        proportions = rng.dirichlet(np.full(n_shards, alpha))
        cuts = np.round(np.cumsum(proportions)[:-1] * members.size).astype(np.int64)
        for k, piece in enumerate(np.split(members, cuts)):
            parts[k].append(piece)
    shards = [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]
    empty = [k for k, s in enumerate(shards) if s.size == 0]
    if empty:
        raise ValueError(
            f"Dirichlet split (alpha {alpha}, seed {seed}) left shard(s) {empty} empty; "
            "raise dirichlet_alpha, use fewer sub-models or more training data"
        )
    return shards


def make_shards(
    kind: str, labels: np.ndarray, n_shards: int, seed: int, alpha: float = 1.0
) -> list[np.ndarray]:
    """``equal`` or ``dirichlet`` shards of the samples whose classes are ``labels`` [M]."""
    if kind == "equal":
        return equal_shards(len(labels), n_shards, seed)
    if kind == "dirichlet":
        return dirichlet_shards(labels, n_shards, alpha, seed)
    raise ValueError(f"shard kind {kind!r} is not valid; choose one of: {', '.join(SHARD_KINDS)}")


def presentations(shards: list[np.ndarray], kind: str) -> list[np.ndarray]:
    """The images each sub-model is shown in one epoch (the trainer shuffles them).

    ``"own-shard"``: its shard. ``"largest-shard"``: its shard repeated, in order, to the size of
    the largest shard (``np.resize``), so that every sub-model is shown as many images and ends
    with adaptive thresholds on the same scale; with shards of equal size nothing changes. With a
    worker per sub-model the largest shard still sets the wall time, though with every worker
    busy throughout it came out up to 20% longer on our 2-core machine.
    """
    if kind == "own-shard":
        return list(shards)
    if kind == "largest-shard":
        size = max(len(shard) for shard in shards)
        return [np.resize(shard, size) for shard in shards]
    raise ValueError(
        f"presentation kind {kind!r} is not valid; choose one of: {', '.join(PRESENTATION_KINDS)}"
    )

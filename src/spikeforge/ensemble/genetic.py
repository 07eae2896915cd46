"""Choose which neurons to keep with a genetic algorithm (Hanyu & Dang, "Accelerating distributed
spike-timing-dependent-plasticity learning", step 6: fitness = accuracy on a validation split).

An individual is a subset of exactly ``keep`` of the N neurons (a bool mask). Each generation:

1. the ``elite`` fittest individuals pass unchanged;
2. every other child comes from two parents, each the fittest of ``tournament`` individuals drawn
   at random; **crossover** keeps the neurons both parents keep and fills the rest at random from
   the neurons exactly one parent keeps (so the child keeps exactly ``keep``);
3. **mutation** swaps each kept neuron, with probability ``mutation``, for a random neuron the
   child does not keep.

With ``elite >= 1`` the best fitness never decreases. Every random draw comes from one seeded
generator, so a search with the same fitness function and seed gives the same result.

:class:`SubsetAccuracy` is the fitness used for merged networks, and it is an approximation, by
design: the spike counts of every image are recorded **once, with all N neurons present**, and the
accuracy of a subset is computed from those counts restricted to the kept neurons. Removing
neurons changes the competition through the inhibitory layer (the survivors are inhibited less and
fire more), which this ignores; it makes a fitness evaluation a few matrix products instead of a
simulation of the validation images, so a whole search takes seconds. The chosen network is then
evaluated properly, by simulation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from spikeforge.stdp import assign_labels

__all__ = ["GeneticResult", "SubsetAccuracy", "genetic_search"]


class SubsetAccuracy:
    """All-activity accuracy of neuron subsets, from counts recorded with every neuron present.

    Each neuron is assigned the class it responds to most on the labelled images (as
    :func:`spikeforge.stdp.assign_labels`; per neuron, so a subset keeps its neurons'
    assignments); an evaluation image is classified as the class whose *kept* assigned neurons
    have the highest mean count (:func:`spikeforge.stdp.predict_all_activity` on the kept
    columns; a class with no kept neuron scores 0, ties go to the lower class).

    Args:
        label_counts: spike counts [M_label, N] of the labelled images.
        label_y: their classes [M_label].
        eval_counts: spike counts [M, N] of the images to score.
        eval_y: their classes [M].
        n_classes: C.
    """

    def __init__(
        self,
        label_counts: np.ndarray,
        label_y: np.ndarray,
        eval_counts: np.ndarray,
        eval_y: np.ndarray,
        n_classes: int = 10,
    ) -> None:
        eval_counts = np.asarray(eval_counts, np.float64)
        if eval_counts.ndim != 2 or eval_counts.shape[1] != np.shape(label_counts)[1]:
            raise ValueError(
                f"eval_counts must be [M, N] with the N of label_counts; got {eval_counts.shape} "
                f"and {np.shape(label_counts)}"
            )
        assignment = assign_labels(label_counts, label_y, n_classes)
        self.n_neurons = eval_counts.shape[1]
        # neurons grouped by assigned class: class c owns columns bounds[c]:bounds[c + 1]
        self._order = np.argsort(assignment.assignments, kind="stable")
        self._bounds = np.searchsorted(
            assignment.assignments[self._order], np.arange(n_classes + 1)
        )
        # Spike counts are small integers, so their float32 sums are exact (below 2**24); the
        # means are then taken in float64, equal to predict_all_activity's.
        if eval_counts.size and (eval_counts.max() * eval_counts.shape[1] >= 2**24):
            raise ValueError("spike counts too large for exact float32 sums")
        self._counts_t = np.ascontiguousarray(eval_counts[:, self._order].T, np.float32)  # [N, M]
        self._labels = np.asarray(eval_y)
        self._n_classes = n_classes

    def __call__(self, masks: np.ndarray) -> np.ndarray:
        """Accuracy of each subset: ``masks`` bool [P, N] -> float64 [P]."""
        masks = np.atleast_2d(np.asarray(masks, bool))
        if masks.shape[1] != self.n_neurons:
            raise ValueError(f"masks must be [P, {self.n_neurons}]; got {masks.shape}")
        kept = masks[:, self._order].astype(np.float32)  # [P, N], columns grouped by class
        shape = (masks.shape[0], self._counts_t.shape[1])  # [P, M]
        best = np.zeros(shape)  # a class without kept neurons scores 0
        predicted = np.zeros(shape, np.int64)
        score = np.empty(shape)
        for c in range(self._n_classes):  # strictly greater: ties go to the lower class
            lo, hi = self._bounds[c], self._bounds[c + 1]
            if hi == lo:
                continue
            sums = kept[:, lo:hi] @ self._counts_t[lo:hi]
            sizes = kept[:, lo:hi].sum(axis=1, dtype=np.float64)[:, None]
            score.fill(0.0)
            np.divide(sums, sizes, out=score, where=sizes > 0)
            better = score > best
            np.copyto(best, score, where=better)
            np.copyto(predicted, c, where=better)
        return (predicted == self._labels).mean(axis=1)


@dataclass(frozen=True)
class GeneticResult:
    """Result of :func:`genetic_search`.

    Attributes:
        keep: sorted int64 indices of the best subset found [keep].
        fitness: its fitness.
        best_history: best fitness of the population, initial then after each generation.
        mean_history: mean fitness of the population, likewise.
    """

    keep: np.ndarray
    fitness: float
    best_history: np.ndarray
    mean_history: np.ndarray


def _random_mask(rng: np.random.Generator, n_items: int, keep: int) -> np.ndarray:
    mask = np.zeros(n_items, bool)
    mask[rng.choice(n_items, keep, replace=False)] = True
    return mask


def _tournament(rng: np.random.Generator, fitness: np.ndarray, size: int) -> int:
    drawn = rng.choice(fitness.size, size, replace=False)
    return int(drawn[np.argmax(fitness[drawn])])


def _crossover(rng: np.random.Generator, a: np.ndarray, b: np.ndarray, keep: int) -> np.ndarray:
    child = a & b
    either = np.flatnonzero(a ^ b)
    child[rng.choice(either, keep - int(child.sum()), replace=False)] = True
    return child


def _mutate(rng: np.random.Generator, child: np.ndarray, rate: float) -> None:
    kept, free = np.flatnonzero(child), np.flatnonzero(~child)
    swaps = min(rng.binomial(kept.size, rate), free.size)
    if swaps:
        child[rng.choice(kept, swaps, replace=False)] = False
        child[rng.choice(free, swaps, replace=False)] = True


def genetic_search(
    fitness: Callable[[np.ndarray], np.ndarray],
    n_items: int,
    keep: int,
    *,
    population: int = 40,
    generations: int = 100,
    tournament: int = 3,
    elite: int = 2,
    mutation: float = 0.02,
    seed: int = 0,
    initial: Sequence[np.ndarray] = (),
) -> GeneticResult:
    """Search subsets of ``keep`` of ``n_items`` items for the highest ``fitness``.

    Args:
        fitness: bool masks [P, n_items] -> fitness [P] (higher is better; deterministic).
        n_items: N.
        keep: subset size, 1..N.
        population: individuals per generation (>= 2).
        generations: generations after the initial population (>= 0).
        tournament: individuals drawn per parent selection (1..population).
        elite: fittest individuals copied unchanged into the next generation (0..population-1).
        mutation: probability that a child's kept item is swapped for an unkept one, in [0, 1].
        seed: seeds the initial population and every later draw.
        initial: masks placed in the initial population (each keeping exactly ``keep`` items;
            at most ``population``); random subsets fill the rest.
    """
    if not 1 <= keep <= n_items:
        raise ValueError(f"keep must lie in 1..{n_items}; got {keep}")
    if population < 2 or generations < 0 or not 1 <= tournament <= population:
        raise ValueError(
            "need population >= 2, generations >= 0 and 1 <= tournament <= population; got "
            f"{population}, {generations}, {tournament}"
        )
    if not 0 <= elite < population or not 0.0 <= mutation <= 1.0:
        raise ValueError(
            f"need 0 <= elite < population and mutation in [0, 1]; got {elite}, {mutation}"
        )
    if len(initial) > population:
        raise ValueError(f"{len(initial)} initial individuals exceed the population {population}")
    rng = np.random.default_rng(seed)
    members = []
    for index, mask in enumerate(initial):
        mask = np.asarray(mask, bool)
        if mask.shape != (n_items,) or int(mask.sum()) != keep:
            raise ValueError(
                f"initial individual {index} must be a mask of {n_items} items with {keep} set"
            )
        members.append(mask.copy())
    while len(members) < population:
        members.append(_random_mask(rng, n_items, keep))
    pool = np.stack(members)
    scores = np.asarray(fitness(pool), np.float64)
    best_history, mean_history = [scores.max()], [scores.mean()]
    for _ in range(generations):
        ranked = np.argsort(-scores, kind="stable")
        children = [
            _crossover(
                rng,
                pool[_tournament(rng, scores, tournament)],
                pool[_tournament(rng, scores, tournament)],
                keep,
            )
            for _ in range(population - elite)
        ]
        for child in children:
            _mutate(rng, child, mutation)
        new_scores = np.asarray(fitness(np.stack(children)), np.float64)
        pool = np.concatenate([pool[ranked[:elite]], np.stack(children)])
        scores = np.concatenate([scores[ranked[:elite]], new_scores])
        best_history.append(scores.max())
        mean_history.append(scores.mean())
    best = int(np.argmax(scores))
    return GeneticResult(
        np.flatnonzero(pool[best]).astype(np.int64),
        float(scores[best]),
        np.array(best_history),
        np.array(mean_history),
    )

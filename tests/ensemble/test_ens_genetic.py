"""The genetic search improves fitness on a toy problem; the subset-accuracy fitness agrees with
the label assignment and all-activity vote of :mod:`spikeforge.stdp.labels`."""

import numpy as np
import pytest

from spikeforge.ensemble import SubsetAccuracy, genetic_search
from spikeforge.stdp import assign_labels, predict_all_activity

VALUES = np.random.default_rng(0).random(60)
OPTIMUM = np.sort(VALUES)[-12:].sum()


def _toy_fitness(masks):
    return masks.astype(float) @ VALUES / OPTIMUM  # 1.0 = the 12 largest values


def test_search_improves_fitness_to_the_optimum():
    result = genetic_search(_toy_fitness, 60, 12, population=30, generations=60, seed=1)
    assert result.keep.size == 12 and np.all(np.diff(result.keep) > 0)
    assert result.fitness == pytest.approx(
        _toy_fitness(np.isin(np.arange(60), result.keep)[None])[0]
    )
    assert result.best_history[0] < 0.9  # random subsets are far from the optimum
    assert result.fitness > 0.99
    assert np.all(np.diff(result.best_history) >= 0)  # elitism: the best never gets worse
    assert result.mean_history[-1] > result.mean_history[0]
    again = genetic_search(_toy_fitness, 60, 12, population=30, generations=60, seed=1)
    np.testing.assert_array_equal(result.keep, again.keep)


def test_initial_individuals_are_used():
    best = np.zeros(60, bool)
    best[np.argsort(VALUES)[-12:]] = True
    result = genetic_search(_toy_fitness, 60, 12, population=6, generations=2, initial=[best])
    assert result.best_history[0] == pytest.approx(1.0)
    np.testing.assert_array_equal(result.keep, np.flatnonzero(best))


def test_bad_arguments():
    with pytest.raises(ValueError, match="keep must lie in 1..60"):
        genetic_search(_toy_fitness, 60, 0)
    with pytest.raises(ValueError, match="population >= 2"):
        genetic_search(_toy_fitness, 60, 5, population=1)
    with pytest.raises(ValueError, match="initial individual 0 must be a mask"):
        genetic_search(_toy_fitness, 60, 5, initial=[np.ones(60, bool)])


def test_subset_accuracy_equals_assignment_and_vote_on_kept_columns():
    rng = np.random.default_rng(2)
    label_counts, label_y = rng.poisson(2.0, (200, 25)), rng.integers(0, 10, 200)
    eval_counts, eval_y = rng.poisson(2.0, (150, 25)), rng.integers(0, 10, 150)
    label_counts[label_y == 3, :5] += 4  # some structure, so accuracies differ between subsets
    eval_counts[eval_y == 3, :5] += 4
    fitness = SubsetAccuracy(label_counts, label_y, eval_counts, eval_y)
    masks = rng.random((20, 25)) < 0.4
    masks[0] = True
    got = fitness(masks)
    for mask, accuracy in zip(masks, got, strict=True):
        kept = np.flatnonzero(mask)
        assignment = assign_labels(label_counts[:, kept], label_y)
        expected = (predict_all_activity(eval_counts[:, kept], assignment) == eval_y).mean()
        assert accuracy == expected
    assert len(set(got.tolist())) > 3

"""Greedy pairwise pruning: pair order, which neuron goes, prefixes, masks."""

import numpy as np
import pytest

from spikeforge.ensemble import (
    METRICS,
    REMOVAL_RULES,
    compress,
    kept_after,
    kept_masks,
    pairwise_distance,
    removal_order,
    removal_priority,
    upper_pairs,
)


def _hand_made() -> np.ndarray:
    """Four neurons; pairs by distance (0,1) .1, (1,2) .2, (0,2) .3, (2,3) .4, (0,3) .5, (1,3) .6"""
    d = np.zeros((4, 4))
    for (i, j), value in {
        (0, 1): 0.1, (1, 2): 0.2, (0, 2): 0.3, (2, 3): 0.4, (0, 3): 0.5, (1, 3): 0.6
    }.items():  # fmt: skip
        d[i, j] = d[j, i] = value
    return d


def test_walk_removes_the_higher_index_of_each_most_similar_remaining_pair():
    # (0,1): remove 1; (1,2): 1 is gone, skip; (0,2): remove 2; (2,3): skip; (0,3): remove 3
    np.testing.assert_array_equal(removal_order(_hand_made()), [1, 2, 3])
    np.testing.assert_array_equal(removal_order(_hand_made(), 2), [1, 2])
    np.testing.assert_array_equal(kept_after(4, removal_order(_hand_made()), 2), [0, 3])
    assert removal_order(_hand_made(), 0).size == 0


def test_ties_go_to_the_earlier_pair_in_row_major_order():
    d = np.ones((4, 4)) - np.eye(4)  # every pair equally similar
    # (0,1) first: remove 1; (0,2): remove 2; (0,3): remove 3
    np.testing.assert_array_equal(removal_order(d), [1, 2, 3])


@pytest.mark.parametrize("metric", METRICS)
def test_identical_neurons_are_the_first_pair_and_the_later_one_goes(metric):
    weights = np.random.default_rng(5).random((30, 6))
    weights[:, 4] = weights[:, 1]
    first, second, values = upper_pairs(pairwise_distance(weights, metric))
    best = np.argsort(values, kind="stable")[0]
    assert (first[best], second[best]) == (1, 4)
    assert removal_order(pairwise_distance(weights, metric), 1).tolist() == [4]
    result = compress(weights, metric, target=5)
    np.testing.assert_array_equal(result.keep, [0, 1, 2, 3, 5])


def test_higher_threshold_rule_removes_the_pair_member_with_the_higher_theta():
    theta = np.array([5.0, 9.0, 1.0, 3.0])
    priority = removal_priority("higher-threshold", theta)
    # (0,1): theta 5 < 9, remove 1; (1,2) skip; (0,2): 5 > 1, remove 0; (2,3) is left: 1 < 3,
    # remove 3; the survivor is neuron 2, the lowest threshold of all
    np.testing.assert_array_equal(removal_order(_hand_made(), None, priority), [1, 0, 3])
    # equal thresholds: the higher index goes, as under higher-index
    flat = removal_priority("higher-threshold", np.full(4, 2.0))
    np.testing.assert_array_equal(removal_order(_hand_made(), None, flat), [1, 2, 3])
    index = removal_priority("higher-index", theta)
    np.testing.assert_array_equal(removal_order(_hand_made(), None, index), [1, 2, 3])


@pytest.mark.parametrize("metric", METRICS)
def test_identical_neurons_the_one_with_the_higher_threshold_goes(metric):
    weights = np.random.default_rng(5).random((30, 6))
    weights[:, 4] = weights[:, 1]
    theta = np.array([20.0, 31.0, 25.0, 22.0, 30.0, 27.0])  # twin 1 above twin 4
    priority = removal_priority("higher-threshold", theta)
    assert removal_order(pairwise_distance(weights, metric), 1, priority).tolist() == [1]
    result = compress(weights, metric, target=5, priority=priority)
    np.testing.assert_array_equal(result.keep, [0, 2, 3, 4, 5])
    theta[[1, 4]] = theta[[4, 1]]  # now twin 4 has the higher threshold
    priority = removal_priority("higher-threshold", theta)
    np.testing.assert_array_equal(compress(weights, metric, 5, priority=priority).keep,
                                  [0, 1, 2, 3, 5])  # fmt: skip


@pytest.mark.parametrize("rule", REMOVAL_RULES)
def test_every_rule_gives_prefix_paths(rule):
    weights = np.random.default_rng(7).random((50, 30))
    theta = np.random.default_rng(8).random(30)
    distance = pairwise_distance(weights, "mse")
    priority = removal_priority(rule, theta)
    path = removal_order(distance, None, priority)
    assert sorted(path.tolist()) == sorted(set(path.tolist())) and path.size == 29
    for n_remove in (0, 1, 12, 29):
        np.testing.assert_array_equal(removal_order(distance, n_remove, priority), path[:n_remove])


@pytest.mark.parametrize("metric", METRICS)
def test_paths_are_prefixes_and_reach_one_neuron(metric):
    weights = np.random.default_rng(6).random((50, 40))
    distance = pairwise_distance(weights, metric)
    path = removal_order(distance)
    assert sorted(path.tolist() + [int(np.setdiff1d(np.arange(40), path)[0])]) == list(range(40))
    for n_remove in (0, 1, 17, 39):
        np.testing.assert_array_equal(removal_order(distance, n_remove), path[:n_remove])
    short = compress(weights, metric, target=25)
    full = compress(weights, metric, target=25, full_path=True)
    np.testing.assert_array_equal(short.keep, full.keep)
    np.testing.assert_array_equal(short.removed, path[:15])
    assert short.keep.size == 25 and np.all(np.diff(short.keep) > 0)


def test_kept_masks_match_kept_after():
    removed = np.array([3, 0, 5, 1])
    counts = np.array([0, 1, 2, 4])
    masks = kept_masks(6, removed, counts)
    for row, count in zip(masks, counts, strict=True):
        np.testing.assert_array_equal(np.flatnonzero(row), kept_after(6, removed, count))


def test_bad_inputs():
    with pytest.raises(ValueError, match="can remove 0..3 of 4 neurons; got 4"):
        removal_order(_hand_made(), 4)
    with pytest.raises(ValueError, match="square"):
        removal_order(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="target must lie in 1..4; got 0"):
        compress(np.ones((3, 4)), "mse", 0)
    with pytest.raises(ValueError, match="removal rule 'older' is not valid"):
        removal_priority("older", np.zeros(4))
    with pytest.raises(ValueError, match=r"priority must be \[4\]"):
        removal_order(_hand_made(), None, np.zeros(3))

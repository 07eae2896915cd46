"""Equal and Dirichlet shards: every sample once, deterministic, class skew set by alpha."""

import numpy as np
import pytest

from spikeforge.ensemble import dirichlet_shards, equal_shards, make_shards, presentations

LABELS = np.random.default_rng(0).integers(0, 10, 3000)


def _assert_partition(shards, n):
    joined = np.concatenate(shards)
    np.testing.assert_array_equal(np.sort(joined), np.arange(n))
    assert all(np.all(np.diff(s) > 0) for s in shards)


def test_equal_shards():
    shards = equal_shards(103, 5, seed=1)
    _assert_partition(shards, 103)
    assert [len(s) for s in shards] == [21, 21, 21, 20, 20]
    assert all(np.array_equal(a, b) for a, b in zip(shards, equal_shards(103, 5, 1), strict=True))
    assert not np.array_equal(shards[0], equal_shards(103, 5, seed=2)[0])
    assert not np.array_equal(shards[0], np.arange(21))  # random, not contiguous
    np.testing.assert_array_equal(equal_shards(7, 1, 0)[0], np.arange(7))


def _skew(shards):
    """Mean over shards of the largest class's share of the shard."""
    return np.mean([np.bincount(LABELS[s], minlength=10).max() / len(s) for s in shards])


def test_dirichlet_shards():
    shards = dirichlet_shards(LABELS, 4, alpha=0.5, seed=3)
    _assert_partition(shards, LABELS.size)
    again = dirichlet_shards(LABELS, 4, alpha=0.5, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(shards, again, strict=True))
    per_class = sum(np.bincount(LABELS[s], minlength=10) for s in shards)
    np.testing.assert_array_equal(per_class, np.bincount(LABELS, minlength=10))
    # small alpha: shards dominated by few classes; large alpha: near the overall 10% per class
    assert _skew(dirichlet_shards(LABELS, 4, 0.1, 0)) > 0.35
    assert _skew(dirichlet_shards(LABELS, 4, 1000.0, 0)) < 0.13


def test_errors_are_one_line():
    with pytest.raises(ValueError, match="left shard") as info:
        dirichlet_shards(np.zeros(5, int), 5, alpha=0.01, seed=0)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="cannot cut 3 samples into 4"):
        equal_shards(3, 4, 0)
    with pytest.raises(ValueError, match="alpha must be positive"):
        dirichlet_shards(LABELS, 2, 0.0, 0)
    with pytest.raises(ValueError, match="shard kind 'iid' is not valid"):
        make_shards("iid", LABELS, 2, 0)
    with pytest.raises(ValueError, match="presentation kind 'all' is not valid"):
        presentations([np.arange(3)], "all")


def test_presentations_repeat_each_shard_up_to_the_largest():
    shards = [np.array([2, 5, 7]), np.array([0, 1, 3, 4, 6, 8, 9]), np.array([10, 11])]
    own = presentations(shards, "own-shard")
    assert all(a is b for a, b in zip(own, shards, strict=True))
    shown = presentations(shards, "largest-shard")
    assert [len(s) for s in shown] == [7, 7, 7]
    np.testing.assert_array_equal(shown[0], [2, 5, 7, 2, 5, 7, 2])  # its own images, in turn
    np.testing.assert_array_equal(shown[1], shards[1])  # the largest shard is shown as it is
    np.testing.assert_array_equal(shown[2], [10, 11, 10, 11, 10, 11, 10])
    equal = equal_shards(30, 3, seed=0)  # equal shards: nothing changes
    for a, b in zip(presentations(equal, "largest-shard"), equal, strict=True):
        np.testing.assert_array_equal(a, b)

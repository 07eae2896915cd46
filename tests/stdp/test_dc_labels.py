"""Label assignment, all-activity and proportion-weighting votes on a constructed case."""

import numpy as np
import pytest

from spikeforge.stdp import (
    assign_labels,
    confusion_matrix,
    predict_all_activity,
    predict_proportion,
)


def test_assignment_and_votes():
    # 3 neurons, 3 classes. Neuron 0 likes class 0, neuron 1 class 1, neuron 2 class 1 (weakly,
    # it fires for class 2 almost as much).
    counts = np.array(
        [
            [4, 0, 0],  # class 0
            [2, 0, 0],  # class 0
            [0, 6, 3],  # class 1
            [0, 0, 2],  # class 2
        ]
    )
    labels = np.array([0, 0, 1, 2])
    assignment = assign_labels(counts, labels, n_classes=3)
    np.testing.assert_allclose(assignment.rates, [[3, 0, 0], [0, 6, 0], [0, 3, 2]])
    np.testing.assert_array_equal(assignment.assignments, [0, 1, 1])
    np.testing.assert_allclose(assignment.proportions[2], [0, 0.6, 0.4])

    test = np.array([[1, 0, 0], [0, 0, 5], [2, 1, 5], [0, 0, 0]])
    # all activity: class scores = mean count of the class's neurons (class 2 has none -> 0)
    #   [1, 0, 0] -> [1, 0, 0] -> 0; [0,0,5] -> [0, 2.5, 0] -> 1; [2,1,5] -> [2, 3, 0] -> 1;
    #   zeros -> tie -> 0
    np.testing.assert_array_equal(predict_all_activity(test, assignment), [0, 1, 1, 0])
    # proportion: class c sums counts[i] * proportions[i, c] over neurons assigned to c
    #   [2,1,5] -> class 0: 2 * 1 = 2; class 1: 1 * 1 + 5 * 0.6 = 4 -> 1
    np.testing.assert_array_equal(predict_proportion(test, assignment), [0, 1, 1, 0])
    # a case where the two rules disagree: neuron 1 fires 3 (mean of class 1 = (3 + 0) / 2 = 1.5)
    # vs neuron 0 fires 2 (class 0 mean 2): all-activity says 0; proportion: 2 vs 3 -> 1
    disagree = np.array([[2, 3, 0]])
    assert predict_all_activity(disagree, assignment)[0] == 0
    assert predict_proportion(disagree, assignment)[0] == 1


def test_confusion_matrix():
    matrix = confusion_matrix(np.array([0, 0, 1, 2, 2]), np.array([0, 1, 1, 2, 0]), 3)
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 1, 0], [1, 0, 1]])
    assert matrix.sum() == 5


def test_bad_labels_rejected():
    with pytest.raises(ValueError, match="labels must lie in 0..9"):
        assign_labels(np.zeros((2, 3)), np.array([0, 10]))
    with pytest.raises(ValueError, match=r"counts must be \[M, N\]"):
        assign_labels(np.zeros(3), np.array([0, 1, 2]))

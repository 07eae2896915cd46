"""Label assignment from spike counts and the two spike-count classifiers of Diehl & Cook (2015).

- Assignment: neuron i gets the class c with the highest mean response
  ``r[i, c] = mean over labelled images of class c of counts[:, i]``.
- All activity (the paper's rule): predict the class whose assigned neurons have the highest mean
  spike count on the image.
- Proportion weighting (BindsNET's ``proportion_weighting``): each neuron votes with
  ``proportions[i, c] = r[i, c] / sum_c r[i, c]``; predict the class with the largest sum of
  ``counts[i] * proportions[i, c]`` over the neurons assigned to c.
A class with no assigned neuron scores 0; ties go to the lower class index.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "LabelAssignment",
    "assign_labels",
    "predict_all_activity",
    "predict_proportion",
    "confusion_matrix",
]


class LabelAssignment:
    """Per-neuron class ``assignments[N]`` and class ``proportions[N, C]`` (rows sum to 1 or 0).

    Attributes:
        assignments: int64 [N], the class each neuron is assigned to.
        rates: float64 [N, C], mean spike count of each neuron per class.
        proportions: float64 [N, C], ``rates`` normalised per neuron.
    """

    def __init__(self, rates: np.ndarray) -> None:
        self.rates = rates
        self.assignments = rates.argmax(axis=1).astype(np.int64)
        totals = rates.sum(axis=1, keepdims=True)
        self.proportions = np.divide(rates, totals, out=np.zeros_like(rates), where=totals > 0)

    @property
    def n_classes(self) -> int:
        return int(self.rates.shape[1])


def assign_labels(counts: np.ndarray, labels: np.ndarray, n_classes: int = 10) -> LabelAssignment:
    """Assign each neuron the class it responds to most, on average over that class's images.

    Args:
        counts: spike counts [M, N] of M labelled images.
        labels: int classes [M].
        n_classes: C.
    """
    counts = np.asarray(counts, np.float64)
    labels = np.asarray(labels)
    if counts.ndim != 2 or labels.shape != (counts.shape[0],):
        raise ValueError(
            f"counts must be [M, N] and labels [M]; got {counts.shape} and {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(
            f"labels must lie in 0..{n_classes - 1}; got {labels.min()}..{labels.max()}"
        )
    rates = np.zeros((counts.shape[1], n_classes))
    for c in range(n_classes):
        members = labels == c
        if members.any():
            rates[:, c] = counts[members].mean(axis=0)
    return LabelAssignment(rates)


def predict_all_activity(counts: np.ndarray, assignment: LabelAssignment) -> np.ndarray:
    """Class per image with the highest mean count over the neurons assigned to it; int64 [M]."""
    counts = np.asarray(counts, np.float64)
    scores = np.zeros((counts.shape[0], assignment.n_classes))
    for c in range(assignment.n_classes):
        members = assignment.assignments == c
        if members.any():
            scores[:, c] = counts[:, members].mean(axis=1)
    return scores.argmax(axis=1).astype(np.int64)


def predict_proportion(counts: np.ndarray, assignment: LabelAssignment) -> np.ndarray:
    """Class per image by proportion-weighted votes of the assigned neurons; int64 [M]."""
    counts = np.asarray(counts, np.float64)
    scores = np.zeros((counts.shape[0], assignment.n_classes))
    for c in range(assignment.n_classes):
        members = assignment.assignments == c
        if members.any():
            scores[:, c] = counts[:, members] @ assignment.proportions[members, c]
    return scores.argmax(axis=1).astype(np.int64)


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, n_classes: int = 10) -> np.ndarray:
    """``matrix[t, p]`` = number of images of class t predicted as p; int64 [C, C]."""
    matrix = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(matrix, (np.asarray(true), np.asarray(predicted)), 1)
    return matrix

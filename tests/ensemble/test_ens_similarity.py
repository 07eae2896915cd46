"""Pairwise neuron distances: each metric against a naive per-pair NumPy computation."""

import numpy as np
import pytest
import torch

from spikeforge.ensemble import METRICS, pairwise_distance


def _naive(weights: np.ndarray, metric: str) -> np.ndarray:
    n = weights.shape[1]
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            a, b = weights[:, i], weights[:, j]
            if metric == "mse":
                out[i, j] = np.mean((a - b) ** 2)
            elif metric == "manhattan":
                out[i, j] = np.sum(np.abs(a - b))
            elif metric == "cosine":
                out[i, j] = 1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
            else:
                out[i, j] = 1 - np.corrcoef(a, b)[0, 1]
    return out


@pytest.mark.parametrize("metric", METRICS)
def test_metric_matches_naive_numpy(metric):
    weights = np.random.default_rng(1).random((13, 7))
    got = pairwise_distance(weights, metric)
    np.testing.assert_allclose(got, _naive(weights, metric), rtol=1e-10, atol=1e-12)
    assert got.dtype == np.float64 and got.shape == (7, 7)
    np.testing.assert_array_equal(got, got.T)
    np.testing.assert_array_equal(np.diag(got), 0.0)


@pytest.mark.parametrize("metric", METRICS)
def test_torch_input_and_large_sizes(metric):
    weights = torch.rand(784, 40, generator=torch.Generator().manual_seed(0))
    got = pairwise_distance(weights, metric)
    np.testing.assert_allclose(got, _naive(weights.double().numpy(), metric), atol=1e-9)


def test_manhattan_equals_torch_cdist():
    weights = torch.rand(784, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    expected = torch.cdist(weights.T, weights.T, p=1).numpy()
    np.testing.assert_allclose(pairwise_distance(weights, "manhattan"), expected, rtol=1e-12)


def test_zero_and_constant_vectors_count_as_unrelated():
    weights = np.random.default_rng(3).random((6, 4))
    weights[:, 1] = 0.0  # zero vector: cosine similarity 0
    weights[:, 2] = 0.5  # constant vector: correlation 0
    cosine = pairwise_distance(weights, "cosine")
    assert cosine[1, 0] == 1.0 and cosine[1, 3] == 1.0
    correlation = pairwise_distance(weights, "correlation")
    assert correlation[2, 0] == pytest.approx(1.0) and correlation[1, 2] == pytest.approx(1.0)
    assert np.isfinite(cosine).all() and np.isfinite(correlation).all()


def test_scaled_copies_are_identical_by_angle_only():
    base = np.random.default_rng(4).random(20)
    weights = np.stack([base, 2 * base, 1 - base], axis=1)
    assert pairwise_distance(weights, "cosine")[0, 1] == pytest.approx(0.0, abs=1e-12)
    assert pairwise_distance(weights, "correlation")[0, 1] == pytest.approx(0.0, abs=1e-12)
    assert pairwise_distance(weights, "correlation")[0, 2] == pytest.approx(2.0)
    assert pairwise_distance(weights, "mse")[0, 1] == pytest.approx(np.mean(base**2))


def test_bad_inputs():
    with pytest.raises(ValueError, match="metric 'l2' is not valid; choose one of: mse"):
        pairwise_distance(np.ones((3, 3)), "l2")
    with pytest.raises(ValueError, match="NaN or infinite"):
        pairwise_distance(np.array([[1.0, np.nan]]), "mse")
    with pytest.raises(ValueError, match=r"must be \[K, N\]"):
        pairwise_distance(np.ones(3), "mse")

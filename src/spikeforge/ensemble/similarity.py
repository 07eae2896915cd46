"""Pairwise similarity of excitatory neurons by their incoming weight vectors (Hanyu & Dang,
"Accelerating distributed spike-timing-dependent-plasticity learning", step 4).

Neuron i's vector is column i of the weights ``w[K, N]``, written ``x_i`` (K entries). Every
metric is returned as a *distance*, ``D[N, N]``, symmetric with a zero diagonal, where smaller
means more similar:

- ``mse``:          ``D_ij = (1/K) sum_k (x_ik - x_jk)^2``
- ``manhattan``:    ``D_ij = sum_k |x_ik - x_jk|``
- ``cosine``:       ``D_ij = 1 - x_i . x_j / (|x_i| |x_j|)``   (a zero vector: similarity 0)
- ``correlation``:  ``D_ij = 1 - r_ij``, r the Pearson correlation coefficient of x_i and x_j
                    over the K inputs                          (a constant vector: r = 0)

MSE, cosine and correlation come from one Gram matrix ``G = X X^T`` (X the [N, K] matrix of
neuron vectors, centred for correlation): ``|x_i - x_j|^2 = G_ii + G_jj - 2 G_ij``. Manhattan
distance has no such product form; a compiled kernel computes the N(N-1)/2 sums over K once each
(``torch.cdist(p=1)`` computes the same values about ten times slower here). All in float64.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

__all__ = ["METRICS", "pairwise_distance", "upper_pairs"]

METRICS = ("mse", "manhattan", "cosine", "correlation")


@numba.njit(cache=True, nogil=True, fastmath=True)
def _manhattan_kernel(vectors: np.ndarray, out: np.ndarray) -> None:
    n, k = vectors.shape
    for i in range(n):
        for j in range(i + 1, n):
            total = 0.0
            for m in range(k):
                total += abs(vectors[i, m] - vectors[j, m])
            out[i, j] = total
            out[j, i] = total


def _unit_rows(rows: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length; zero rows stay zero (their similarity to anything is 0)."""
    norms = rows.norm(dim=1, keepdim=True)
    return rows / torch.where(norms > 0, norms, torch.ones_like(norms))


def pairwise_distance(weights: np.ndarray | torch.Tensor, metric: str) -> np.ndarray:
    """Distance between every pair of neurons' incoming weights (see the module docstring).

    Args:
        weights: ``w[K, N]``, input-to-excitatory weights (finite).
        metric: ``mse``, ``manhattan``, ``cosine`` or ``correlation``.

    Returns:
        float64 ``D[N, N]``: symmetric, zero diagonal, smaller = more similar.
    """
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r} is not valid; choose one of: {', '.join(METRICS)}")
    w = torch.as_tensor(np.asarray(weights) if not torch.is_tensor(weights) else weights)
    if w.ndim != 2 or w.shape[0] < 1:
        raise ValueError(f"weights must be [K, N] with K >= 1; got shape {tuple(w.shape)}")
    vectors = w.detach().to(torch.float64).T.contiguous()  # [N, K]
    if not torch.isfinite(vectors).all():
        raise ValueError("weights hold NaN or infinite values")
    if metric == "manhattan":
        out = np.zeros((vectors.shape[0], vectors.shape[0]))
        _manhattan_kernel(vectors.numpy(), out)
        return out
    if metric == "mse":
        gram = vectors @ vectors.T
        squared = gram.diagonal()
        distance = (squared[:, None] + squared[None, :] - 2.0 * gram).clamp_min_(0.0)
        distance /= vectors.shape[1]
    else:
        if metric == "correlation":
            vectors = vectors - vectors.mean(dim=1, keepdim=True)
        unit = _unit_rows(vectors)
        distance = 1.0 - unit @ unit.T
    # A BLAS product X X^T need not be exactly symmetric (it is not with OpenBLAS on some CPUs,
    # off by an ulp): averaging with the transpose makes D_ij == D_ji bit for bit, so the pair
    # ordering cannot depend on which triangle is read.
    distance = (distance + distance.T).mul_(0.5)
    distance.fill_diagonal_(0.0)
    return distance.numpy()


def upper_pairs(distance: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The N(N-1)/2 pairs ``i < j`` in row-major order: ``(first[P], second[P], value[P])``."""
    n = distance.shape[0]
    first, second = np.triu_indices(n, k=1)
    return first, second, distance[first, second]

"""Numba kernel for Bernoulli rate coding with a counter-based random stream.

Each (step, sample, input) draws its own uniform number from a SplitMix64 hash of
``seed`` and its flat index, so the result does not depend on the number of threads and inputs of
intensity 0 cost nothing (most MNIST pixels are 0).
"""

from __future__ import annotations

import numba as nb
import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_INV_2_24 = 1.0 / 16777216.0


@nb.njit(inline="always")
def _uniform(seed, index):
    z = seed + (index + np.uint64(1)) * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    return np.float32((z >> np.uint64(40)) * _INV_2_24)


@nb.njit(parallel=True, cache=True)
def bernoulli_spikes(probability, steps, seed, out):
    """out[t, b, i] = 1 with probability probability[b, i] (float32 in [0, 1]), else 0.

    Rows ``out[t, b, :]`` are written contiguously (zeros included, so no separate clear);
    random numbers are drawn only where the probability is positive.
    """
    batch, inputs = probability.shape
    seed = np.uint64(seed)
    width = np.uint64(batch * inputs)
    for b in nb.prange(batch):
        base = np.uint64(b * inputs)
        for t in range(steps):
            offset = np.uint64(t) * width + base
            for i in range(inputs):
                p = probability[b, i]
                fired = 0
                if p > 0.0 and _uniform(seed, offset + np.uint64(i)) < p:
                    fired = 1
                out[t, b, i] = fired

"""Numba kernels of the encoders.

Bernoulli rate coding with a counter-based random stream: each (step, sample, input) draws its
own uniform number from a SplitMix64 hash of ``seed`` and its flat index, so the result does not
depend on the number of threads and inputs of intensity 0 cost nothing (most MNIST pixels are 0).
The latency code is written from each input's spike step, together with the same spikes as
compressed rows (:mod:`spikeforge._spike_rows`).
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


@nb.njit(cache=True)
def latency_spikes(step, steps, out, offsets, columns):
    """The latency code from each input's spike step (``step[b, i]``; no spike where it is
    negative or at least ``steps``): ones written into the zero-filled ``out`` ``[T, B, N]``, and
    the same spikes as compressed rows ``r = t * B + b`` of the ``[T*B, N]`` view: ``offsets``
    ``[T*B + 1]`` (filled here), ``columns`` (sized to the spike count) ascending in each row."""
    batch, inputs = step.shape
    offsets[:] = 0
    for b in range(batch):
        for i in range(inputs):
            t = step[b, i]
            if 0 <= t < steps:
                offsets[t * batch + b + 1] += 1
    for r in range(steps * batch):
        offsets[r + 1] += offsets[r]
    fill = offsets[:-1].copy()
    for b in range(batch):
        for i in range(inputs):
            t = step[b, i]
            if 0 <= t < steps:
                r = t * batch + b
                columns[fill[r]] = i
                fill[r] += 1
                out[t, b, i] = 1

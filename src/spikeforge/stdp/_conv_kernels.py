"""Numba kernel of the frozen winner-take-all conv layer with pooling (the hybrid's front end).

The same dynamics as :func:`spikeforge.stdp.conv.conv_wta_spikes` followed by OR pooling, fused
and driven by input events: each spiking input pixel adds its filter taps to the (up to p*p)
locations whose window contains it, so the cost scales with the input spikes instead of
``H * W * p * p * k`` per step. One image per thread.
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(parallel=True, cache=True)
def conv_wta_pool(spikes, filters, beta, threshold, pool, out):
    """Winner-take-all LIF conv spikes OR-pooled into ``out``.

    Args:
        spikes: uint8 input maps ``[T, B, H, W]``.
        filters: float32 ``w[k, p, p]`` (cross-correlation, same padding, like ``conv2d``).
        beta, threshold: leak and threshold of the layer.
        pool: pooling size and stride (1: none).
        out: uint8 ``[T, B, H // pool, W // pool, k]``, zero on entry.
    """
    steps, batch, height, width = spikes.shape
    k, kernel = filters.shape[0], filters.shape[1]
    pad = kernel // 2
    rows, cols = out.shape[2], out.shape[3]
    for b in nb.prange(batch):
        potential = np.zeros((height, width, k), dtype=np.float32)
        current = np.zeros((height, width, k), dtype=np.float32)
        for t in range(steps):
            current[:] = 0.0
            for y in range(height):
                for x in range(width):
                    if spikes[t, b, y, x] == 0:
                        continue
                    # Input (y, x) sits at tap (u, v) of the window centred on (y - u + pad,
                    # x - v + pad).
                    for u in range(kernel):
                        r = y - u + pad
                        if r < 0 or r >= height:
                            continue
                        for v in range(kernel):
                            c = x - v + pad
                            if c < 0 or c >= width:
                                continue
                            for j in range(k):
                                current[r, c, j] += filters[j, u, v]
            for r in range(height):
                for c in range(width):
                    best, winner = -np.inf, 0
                    for j in range(k):
                        value = potential[r, c, j] * beta + current[r, c, j]
                        potential[r, c, j] = value
                        if value > best:
                            best, winner = value, j
                    if best >= threshold:
                        for j in range(k):
                            potential[r, c, j] = 0.0
                        pr, pc = r // pool, c // pool
                        if pr < rows and pc < cols:
                            out[t, b, pr, pc, winner] = 1

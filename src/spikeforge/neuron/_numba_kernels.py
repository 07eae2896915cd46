"""Numba CPU kernels for the LIF time recurrence (forward and reverse scans).

Imported lazily by :mod:`spikeforge.neuron.backend`; the PyTorch functions in
:mod:`spikeforge.neuron.lif` are the reference these kernels are tested against.

Layouts: time-major, flattened over batch and neurons: ``[T, M]`` with ``M = B * N`` contiguous.
Kernels are parallel over independent rows or neurons; the time recurrence is sequential.
"""

from __future__ import annotations

import numba as nb
import numpy as np

_CHUNK = 512


@nb.njit(parallel=True, cache=True)
def lif_forward(net, beta, threshold, code, scale, spikes, spikes_float, surrogate):
    """u[t] = beta*v[t-1] + net[t]; s[t] = u[t] >= threshold; v[t] = u[t]*(1 - s[t]); v[-1] = 0.

    Writes the spikes as uint8 (``spikes``, kept for backward) and in the float dtype
    (``spikes_float``, the layer's output), and what backward needs of the membrane, evaluated
    here so backward never reads u: ``surrogate`` = sigma'(u[t] - threshold) for code 1
    (inverse square, 1/(scale|x| + 1)^2), or its exponent -scale|x| for code 0 (exponential;
    the caller applies ``exp``, which torch vectorises and Numba does not).
    """
    steps, width = net.shape
    n_chunks = (width + _CHUNK - 1) // _CHUNK
    for c in nb.prange(n_chunks):
        lo = c * _CHUNK
        hi = min(lo + _CHUNK, width)
        v = np.zeros(hi - lo, dtype=net.dtype)
        for t in range(steps):
            for j in range(lo, hi):
                u = beta * v[j - lo] + net[t, j]
                fired = u >= threshold
                spikes[t, j] = fired
                spikes_float[t, j] = 1.0 if fired else 0.0
                x = abs(u - threshold) * scale
                if code == 1:
                    d = x + 1.0
                    surrogate[t, j] = 1.0 / (d * d)
                else:
                    surrogate[t, j] = -x
                v[j - lo] = 0.0 if fired else u


@nb.njit(parallel=True, cache=True)
def lif_backward(grad_spikes, surrogate_grad, spikes, beta, grad_net):
    """Reverse scan: d[t] = g[t]*sigma'[t] + beta*(1 - s[t])*d[t+1]; writes d into grad_net.

    The reset is treated as a constant (no gradient through the spike that caused it).
    """
    steps, width = grad_spikes.shape
    n_chunks = (width + _CHUNK - 1) // _CHUNK
    for c in nb.prange(n_chunks):
        lo = c * _CHUNK
        hi = min(lo + _CHUNK, width)
        carry = np.zeros(hi - lo, dtype=grad_spikes.dtype)
        for t in range(steps - 1, -1, -1):
            for j in range(lo, hi):
                keep = 0.0 if spikes[t, j] else beta
                d = grad_spikes[t, j] * surrogate_grad[t, j] + keep * carry[j - lo]
                grad_net[t, j] = d
                carry[j - lo] = d


@nb.njit(parallel=True, cache=True)
def to_spikes_checked(x, out):
    """Copy a float 0/1 matrix into uint8 ``out``; return the number of entries not 0 or 1."""
    rows, cols = x.shape
    bad = 0
    for r in nb.prange(rows):
        for c in range(cols):
            value = x[r, c]
            if value == 1.0:
                out[r, c] = 1
            else:
                out[r, c] = 0
                if value != 0.0:
                    bad += 1
    return bad

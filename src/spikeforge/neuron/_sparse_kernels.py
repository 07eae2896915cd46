"""Numba CPU kernels of the sparse spiking backward (Perez-Nieves & Goodman 2021).

Imported lazily by :mod:`spikeforge.neuron.sparse`, whose PyTorch path is the reference.

Layouts: the current is time-major ``[T, B, N]``; an *active entry* ``e`` is one ``(t, b, j)``
with ``|u - threshold| < active_bound``. The forward stores entries batch item by batch item,
each batch item's entries in time order, as five flat arrays: ``row[e] = t * B + b``,
``neuron[e] = j``, ``surrogate[e] = sigma'(u - threshold)``, ``successor[e]``, the next active
entry of the same ``(b, j)`` when no spike reset the neuron from ``t`` up to it (-1 otherwise),
and ``span_start[e]``, the first step whose gradient this entry carries: one after the neuron's
previous active entry or previous spike, whichever is later (0 if none).

Between active entries the gradient only leaks back in time: ``d[t] = beta^(t_e - t) d[t_e]`` for
``span_start[e] <= t <= t_e`` and zero before the span (a spike reset the neuron there, or an
older active entry takes over). The backward walks each batch item's entries in reverse time
order, so parallel work over batch items never writes the same row of the input gradient.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np


@nb.njit(inline="always")
def _surrogate(x, code, scale):
    a = abs(x) * scale
    if code == 1:
        d = a + 1.0
        return 1.0 / (d * d)
    return math.exp(-a)


@nb.njit(parallel=True, cache=True)
def lif_forward_count(current, beta, threshold, bound, spikes_float, counts):
    """LIF scan per batch item; writes the float spikes and the active-entry count per item.

    ``current``/``spikes_float``: ``[T, B, N]``; ``counts``: ``[B]`` int64.
    """
    steps, batch, width = current.shape
    for b in nb.prange(batch):
        v = np.zeros(width, dtype=current.dtype)
        n = 0
        for t in range(steps):
            for j in range(width):
                u = beta * v[j] + current[t, b, j]
                fired = u >= threshold
                spikes_float[t, b, j] = 1.0 if fired else 0.0
                if abs(u - threshold) < bound:
                    n += 1
                v[j] = 0.0 if fired else u
        counts[b] = n


@nb.njit(parallel=True, cache=True)
def lif_forward_gather(
    current,
    beta,
    threshold,
    bound,
    code,
    scale,
    offsets,
    row,
    neuron,
    surrogate,
    successor,
    span_start,
):
    """Second pass of the same scan: write the active entries from ``offsets[b]`` on."""
    steps, batch, width = current.shape
    for b in nb.prange(batch):
        v = np.zeros(width, dtype=current.dtype)
        newest = np.full(width, -1, dtype=np.int64)  # the neuron's last entry since its reset
        first = np.zeros(width, dtype=np.int64)  # first step the next entry's span can reach
        e = offsets[b]
        for t in range(steps):
            for j in range(width):
                u = beta * v[j] + current[t, b, j]
                fired = u >= threshold
                x = u - threshold
                if abs(x) < bound:
                    row[e] = t * batch + b
                    neuron[e] = j
                    surrogate[e] = _surrogate(x, code, scale)
                    successor[e] = -1
                    span_start[e] = first[j]
                    if newest[j] >= 0:
                        successor[newest[j]] = e
                    newest[j] = e
                    first[j] = t + 1
                    e += 1
                if fired:
                    newest[j] = -1
                    first[j] = t + 1
                v[j] = 0.0 if fired else u


@nb.njit(parallel=True, cache=True)
def count_spikes(spikes, counts):
    """Non-zeros per row of a 0/1 matrix ``[R, I]``; returns how many entries are not 0 or 1."""
    rows, cols = spikes.shape
    bad = 0
    for r in nb.prange(rows):
        n = 0
        for c in range(cols):
            value = spikes[r, c]
            if value != 0:
                n += 1
                if value != 1:
                    bad += 1
        counts[r] = n
    return bad


@nb.njit(parallel=True, cache=True)
def gather_spikes(spikes, offsets, columns):
    """Column indices of the ones of each row (compressed sparse rows)."""
    rows, cols = spikes.shape
    for r in nb.prange(rows):
        e = offsets[r]
        for c in range(cols):
            if spikes[r, c] != 0:
                columns[e] = c
                e += 1


@nb.njit(parallel=True, cache=True)
def sparse_backward(
    grad_spikes,
    grad_given,
    per_entry,
    row,
    neuron,
    surrogate,
    successor,
    span_start,
    entry_offsets,
    beta_powers,
    weight,
    input_offsets,
    input_columns,
    grad_entries,
    grad_weight_parts,
    grad_input,
    up_offsets,
    up_row,
    up_neuron,
    up_values,
    want_weight,
    want_input,
    want_upstream,
):
    """Gradients from the active entries alone.

    Per entry, newest first: ``d[e] = g[e] sigma'[e] + beta^(t_s - t_e) d[successor]``; then for
    every step ``t`` of its span, with ``d_t = beta^(t_e - t) d[e]`` and ``r = t * B + b``:
    ``dW[j, i] += d_t`` for every input spike ``i`` of row ``r`` (``grad_weight_parts`` holds
    one ``[O, I]`` partial sum per thread), ``dx[r, :] += d_t W[j, :]`` (``want_input``, dense
    ``[T*B, I]`` zero-filled) or, at the upstream layer's active entries ``u`` of row ``r``,
    ``up_values[u] += d_t W[j, up_neuron[u]]`` (``want_upstream``, zero-filled).
    ``grad_spikes``: ``[T*B, N]``, or, when ``per_entry``, ``grad_given[e]`` holds ``g`` at each
    entry (the downstream layer sent its gradient only there). ``beta_powers[k] = beta^k``.
    """
    batch = entry_offsets.shape[0] - 1
    steps = beta_powers.shape[0] - 1
    in_width = weight.shape[1]
    for b in nb.prange(batch):
        part = grad_weight_parts[nb.get_thread_id()]
        # This item's input spikes, gathered once into time order: the spikes of steps
        # t0..t1 are spike_at[first_spike[t0] : first_spike[t1 + 1]], so a span's weight
        # gradient reads one contiguous run instead of one row per step.
        first_spike = np.empty(steps + 1, dtype=np.int64)
        first_spike[0] = 0
        for t in range(steps):
            r = t * batch + b
            first_spike[t + 1] = first_spike[t] + input_offsets[r + 1] - input_offsets[r]
        spike_column = np.empty(first_spike[steps], dtype=np.int64)
        spike_step = np.empty(first_spike[steps], dtype=np.int64)
        if want_weight:
            for t in range(steps):
                r = t * batch + b
                k = first_spike[t]
                for q in range(input_offsets[r], input_offsets[r + 1]):
                    spike_column[k] = input_columns[q]
                    spike_step[k] = t
                    k += 1
        # upstream entries of this item at step t: up_first[t] .. up_first[t + 1] - 1
        # and their steps, so that the span loops below need no division
        up_first = np.empty(steps + 1 if want_upstream else 1, dtype=np.int64)
        up_step = np.empty(up_offsets[b + 1] - up_offsets[b] if want_upstream else 0, np.int64)
        if want_upstream:
            u = up_offsets[b]
            for t in range(steps + 1):
                while u < up_offsets[b + 1] and up_row[u] // batch < t:
                    up_step[u - up_offsets[b]] = up_row[u] // batch
                    u += 1
                up_first[t] = u
        for e in range(entry_offsets[b + 1] - 1, entry_offsets[b] - 1, -1):
            t_e = row[e] // batch
            j = neuron[e]
            g = grad_given[e] if per_entry else grad_spikes[row[e], j]
            d = g * surrogate[e]
            s = successor[e]
            if s >= 0:
                d += beta_powers[row[s] // batch - t_e] * grad_entries[s]
            grad_entries[e] = d
            if d == 0.0:
                continue
            t_0 = span_start[e]
            if want_weight:
                part_j = part[j]
                for k in range(first_spike[t_0], first_spike[t_e + 1]):
                    part_j[spike_column[k]] += d * beta_powers[t_e - spike_step[k]]
            if want_upstream:
                w_j = weight[j]
                base = up_offsets[b]
                for u in range(up_first[t_0], up_first[t_e + 1]):
                    d_t = d * beta_powers[t_e - up_step[u - base]]
                    up_values[u] += d_t * w_j[up_neuron[u]]
            if want_input:
                for t in range(t_e, t_0 - 1, -1):
                    d_t = d * beta_powers[t_e - t]
                    r = t * batch + b
                    for i in range(in_width):
                        grad_input[r, i] += d_t * weight[j, i]


@nb.njit(parallel=True, cache=True)
def csr_current(offsets, columns, weight_t, current):
    """``current[r, :] = sum of weight_t[i, :]`` over the input spikes ``i`` of row ``r``
    (the synaptic map ``W b`` of sparse binary ``b``; ``weight_t`` is ``W^T``, ``[I, O]``)."""
    rows = offsets.shape[0] - 1
    width = weight_t.shape[1]
    for r in nb.prange(rows):
        for o in range(width):
            current[r, o] = 0.0
        for k in range(offsets[r], offsets[r + 1]):
            i = columns[k]
            for o in range(width):
                current[r, o] += weight_t[i, o]


@nb.njit(parallel=True, cache=True)
def rows_dot_at_entries(grad_rows, weight, entry_offsets, row, neuron, out):
    """``out[e] = sum_o grad_rows[row[e], o] * weight[o, neuron[e]]``: a dense map's input
    gradient ``grad_rows @ W`` evaluated at the upstream active entries only."""
    batch = entry_offsets.shape[0] - 1
    width = weight.shape[0]
    for b in nb.prange(batch):
        for e in range(entry_offsets[b], entry_offsets[b + 1]):
            r = row[e]
            j = neuron[e]
            acc = 0.0
            for o in range(width):
                acc += grad_rows[r, o] * weight[o, j]
            out[e] = acc


@nb.njit(parallel=True, cache=True)
def csr_weight_grad(offsets, columns, grad_rows, parts):
    """``parts[thread, i, :] += grad_rows[r, :]`` for every input spike ``(r, i)``: the weight
    gradient ``(grad_rows^T b)^T`` of a dense map with sparse binary input ``b``."""
    rows = offsets.shape[0] - 1
    width = grad_rows.shape[1]
    for r in nb.prange(rows):
        part = parts[nb.get_thread_id()]
        for k in range(offsets[r], offsets[r + 1]):
            i = columns[k]
            for o in range(width):
                part[i, o] += grad_rows[r, o]


@nb.njit(parallel=True, cache=True)
def count_spike_words(words, counts, wrong):
    """:func:`count_spikes` for uint8 rows read 8 bytes at a time (``words``: ``[R, I/8]``
    uint64, little-endian): all-zero words, most of a sparse input, cost one test. Writes the
    ones per row into ``counts`` and the bytes that are neither 0 nor 1 into ``wrong``."""
    rows, width = words.shape
    for r in nb.prange(rows):
        n = 0
        bad = 0
        for w in range(width):
            word = words[r, w]
            if word != 0:
                for k in range(8):
                    byte = (word >> np.uint64(8 * k)) & np.uint64(0xFF)
                    if byte != 0:
                        n += 1
                    if byte > 1:
                        bad += 1
        counts[r] = n
        wrong[r] = bad


@nb.njit(parallel=True, cache=True)
def gather_spike_words(words, offsets, columns):
    """:func:`gather_spikes` for uint8 rows read 8 bytes at a time."""
    rows, width = words.shape
    for r in nb.prange(rows):
        e = offsets[r]
        for w in range(width):
            word = words[r, w]
            if word != 0:
                for k in range(8):
                    if (word >> np.uint64(8 * k)) & np.uint64(0xFF):
                        columns[e] = 8 * w + k
                        e += 1

"""Numba CPU kernels of the sparse spiking backward (Perez-Nieves & Goodman 2021).

Imported lazily by :mod:`spikeforge.neuron.sparse`, whose PyTorch path is the reference.

Layouts: the current is time-major ``[T, B, N]``; an *active entry* ``e`` is one ``(t, b, j)``
with ``|u - threshold| < active_bound``. The forward stores entries batch item by batch item,
each batch item's entries in time order, as the rows of an int32 ``[4, n]`` array (the forward
kernels take the rows as four flat arrays) and a float array: ``step[e] = t``,
``neuron[e] = j``, ``successor[e]``, the next active entry of the same ``(b, j)`` when no spike
reset the neuron from ``t`` up to it (-1 otherwise), ``span_start[e]``, the first step whose
gradient this entry carries: one after the neuron's previous active entry or previous spike,
whichever is later (0 if none), and ``surrogate[e] = sigma'(u - threshold)``.

Between active entries the gradient only leaks back in time: ``d[t] = beta^(t_e - t) d[t_e]`` for
``span_start[e] <= t <= t_e`` and zero before the span (a spike reset the neuron there, or an
older active entry takes over). The backward walks each batch item's entries in reverse time
order, so parallel work over batch items never writes the same row of the input gradient.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

# Per-thread scratch rows are allocated this many elements (at least 64 bytes) longer than they
# are used, so that no cache line holds the ends of two threads' rows (written at every step)
THREAD_GAP = 16

# rows of the [4, n] int32 entry arrays (see the module docstring)
ENTRY_STEP, ENTRY_NEURON, ENTRY_SUCCESSOR, ENTRY_SPAN = 0, 1, 2, 3


@nb.njit(inline="always")
def _surrogate(x, code, scale):
    a = abs(x) * scale
    if code == 1:
        d = a + 1.0
        return 1.0 / (d * d)
    return math.exp(-a)


@nb.njit(inline="always")
def _current_row(t, b, batch, from_rows, current, offsets_in, columns_in, weight_t, out):
    """The synaptic current of row ``r = t * B + b`` into ``out``: ``current[t, b]``, or, with
    ``from_rows``, the sum of ``weight_t[i]`` over the input spikes ``i`` of row ``r`` (compressed
    rows ``offsets_in``/``columns_in``, summed in column order)."""
    width = out.shape[0]
    if from_rows:
        r = t * batch + b
        for j in range(width):
            out[j] = 0.0
        for q in range(offsets_in[r], offsets_in[r + 1]):
            w = weight_t[columns_in[q]]
            for j in range(width):
                out[j] += w[j]
    else:
        row = current[t, b]
        for j in range(width):
            out[j] = row[j]


@nb.njit(parallel=True, cache=True)
def lif_forward_scan(
    current,
    from_rows,
    offsets_in,
    columns_in,
    weight_t,
    beta,
    threshold,
    bound,
    code,
    scale,
    spikes_float,
    spike_counts,
    row_spikes,
    entry_counts,
    entry_base,
    entry_limit,
    step,
    neuron,
    surrogate,
    successor,
    span_start,
    spike_base,
    spike_limit,
    spike_slots,
):
    """The LIF scan of each batch item, in one pass: the float spikes, the spike count of every
    row ``t * B + b`` (``row_spikes``) and of every neuron over time (``spike_counts[b, j] =
    sum_t s[t, b, j]``, zero-filled), the number of active entries (``entry_counts[b]``), and the
    entries themselves and the spikes' columns, written batch item by batch item.

    Item ``b``'s entries go to ``entry_base[b]`` on, at most ``entry_limit[b]`` of them (counting
    goes on past the limit: the caller sees the overflow and scans again with exact room); its
    spikes' columns go to ``spike_base[b]`` on in time order, at most ``spike_limit[b]``. An entry's
    successor is an index in the same layout.

    The current is ``current`` ``[T, B, N]``, or, with ``from_rows``, made row by row from the
    input's compressed rows and ``weight_t`` (``W^T``, ``[I, N]``; ``current`` is then unused), so
    that a sparse input never has its ``[T, B, N]`` current written out.
    """
    steps, batch, width = spikes_float.shape
    for b in nb.prange(batch):
        v = np.zeros(width, dtype=spikes_float.dtype)
        newest = np.full(width, -1, dtype=np.int64)  # the neuron's last entry since its reset
        first = np.zeros(width, dtype=np.int64)  # first step the next entry's span can reach
        u_row = np.empty(width, dtype=spikes_float.dtype)
        cur = np.empty(width, dtype=spikes_float.dtype)
        per_neuron = spike_counts[b]
        n_entries = 0
        n_spikes = 0
        for t in range(steps):
            _current_row(t, b, batch, from_rows, current, offsets_in, columns_in, weight_t, cur)
            # the scan of the row, branch-free (vectorised); then one rarely taken branch per
            # neuron for the few that are active or fire
            fired_here = 0
            for j in range(width):
                u = beta * v[j] + cur[j]
                u_row[j] = u
                fired = u >= threshold
                spikes_float[t, b, j] = 1.0 if fired else 0.0
                per_neuron[j] += 1.0 if fired else 0.0
                fired_here += fired
                v[j] = 0.0 if fired else u
            row_spikes[t * batch + b] = fired_here
            for j in range(width):
                x = u_row[j] - threshold
                if x >= 0.0 or abs(x) < bound:
                    if abs(x) < bound:
                        if n_entries < entry_limit[b]:
                            e = entry_base[b] + n_entries
                            step[e] = t
                            neuron[e] = j
                            surrogate[e] = _surrogate(x, code, scale)
                            successor[e] = -1
                            span_start[e] = first[j]
                            if newest[j] >= 0:
                                successor[newest[j]] = e
                            newest[j] = e
                        n_entries += 1
                        first[j] = t + 1
                    if x >= 0.0:  # fired: u >= threshold
                        newest[j] = -1
                        first[j] = t + 1
                        if n_spikes < spike_limit[b]:
                            spike_slots[spike_base[b] + n_spikes] = j
                        n_spikes += 1
        entry_counts[b] = n_entries


@nb.njit(parallel=True, cache=True)
def move_entries(
    counts, slot_base, offsets, step, neuron, surrogate, successor, span_start, out_step,
    out_neuron, out_surrogate, out_successor, out_span_start,
):  # fmt: skip
    """Entries written from ``slot_base[b]`` on (:func:`lif_forward_scan`) moved to
    ``offsets[b]`` on, successors renumbered."""
    batch = counts.shape[0]
    for b in nb.prange(batch):
        for k in range(counts[b]):
            src, dst = slot_base[b] + k, offsets[b] + k
            out_step[dst] = step[src]
            out_neuron[dst] = neuron[src]
            out_surrogate[dst] = surrogate[src]
            out_span_start[dst] = span_start[src]
            s = successor[src]
            out_successor[dst] = -1 if s < 0 else offsets[b] + (s - slot_base[b])


@nb.njit(parallel=True, cache=True)
def spikes_to_rows(row_spikes, spike_base, spike_slots, spike_offsets, spike_columns):
    """Spike columns written batch item by batch item in time order (from ``spike_base[b]`` on)
    to compressed rows ``r = t * B + b`` (``spike_offsets``)."""
    batch = spike_base.shape[0]
    steps = row_spikes.shape[0] // batch
    for b in nb.prange(batch):
        src = spike_base[b]
        for t in range(steps):
            r = t * batch + b
            dst = spike_offsets[r]
            for q in range(row_spikes[r]):
                spike_columns[dst + q] = spike_slots[src + q]
            src += row_spikes[r]


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


# A row of D with fewer than O / _DENSE_ROW_DIVISOR non-zeros is used as the list of its live
# neurons (one scalar operation each); a fuller one as a whole row (O / vector-width operations).
# Measured on this CPU.
_DENSE_ROW_DIVISOR = 8

# reassociation lets LLVM vectorise the row dot products; no nnan/ninf, so NaN still propagates
_VECTOR_MATH = {"reassoc", "contract", "arcp"}


@nb.njit(parallel=True, cache=True, fastmath=_VECTOR_MATH)
def sparse_backward(
    grad,
    per_entry,
    grad_counts,
    with_counts,
    entries,
    surrogate,
    entry_offsets,
    beta_powers,
    weight,
    weight_t,
    input_offsets,
    input_columns,
    up_entries,
    up_offsets,
    want_weight,
    want_input,
    want_upstream,
    fill_indices,
    grad_entries,
    grad_weight_parts,
    grad_input,
    up_values,
    up_indices,
    row_buffers,
    live_buffers,
    end_buffers,
    end_counts,
):
    """Gradients from the active entries alone, written into ``grad_entries`` (``dL/dnet`` at
    each entry), ``grad_weight_parts`` (``[P, I, O]``: one partial ``dW^T`` per thread, each
    zeroed here by its thread; the total is left in ``grad_weight_parts[0]``), ``grad_input``
    (zero-filled), ``up_values`` (zero-filled) and ``up_indices``, each empty when not asked
    for. Per-thread scratch (``P`` threads, rows :data:`THREAD_GAP` longer than used):
    ``row_buffers`` ``[P, O + gap]``, ``live_buffers`` ``[P, 2, O + gap]`` int32, ``end_buffers``
    ``[P, T + 1, O]`` int32, ``end_counts`` ``[P, T + gap]`` int64. All are the caller's tensors,
    so that the memory is torch's.

    ``entries``: ``[4, n]`` rows ``ENTRY_STEP``, ``ENTRY_NEURON``, ``ENTRY_SUCCESSOR``,
    ``ENTRY_SPAN`` (see the module docstring), ``surrogate[e] = sigma'[e]``. Per batch item
    ``b``, newest entry first: ``d[e] = g[e] sigma'[e] + beta^(t_s - t_e) d[successor]``. Then
    the steps are swept downwards holding one row ``D[t, :] = dL/dnet[t]``:
    ``D[t, j] = beta^(t_e - t) d[e]`` over each entry's span ``span_start[e] <= t <= t_e``
    (kept as ``D[t] = beta D[t + 1]`` on the live neurons, set to ``d[e]`` at the entry), zero
    elsewhere. A row with few live neurons is used as their list, a fuller one as a whole row
    for contiguous vector operations. From the rows that some span reaches:

    * ``dW^T[i, :] += D[t, :]`` for every input spike ``i`` of row ``r = t * B + b`` (compressed
      rows ``input_offsets``/``input_columns``);
    * ``up_values[u] = D[t, :] . W^T[j, :]`` at the upstream layer's active entries ``u =
      (t, b, j)`` of row ``r`` (``want_upstream``: ``up_entries``/``up_offsets`` laid out like
      ``entries``; ``weight_t`` is ``W^T``, ``[I, O]``), and, with ``fill_indices``, their COO
      coordinates ``up_indices[:, u] = (t, b, j)``;
    * ``dx[r, :] = sum_j D[t, j] W[j, :]`` (``want_input``: dense ``[T*B, I]``).

    Rows no span reaches are skipped, and a row costs the smaller of its live neurons and ``O``
    divided by the vector width, so the cost follows the input spikes, the upstream entries and
    the spans (plus one scaling of the row per step while it has live neurons).
    ``grad``: ``[T*B, N]``, or, when ``per_entry``, ``[1, n]``, ``g`` at each entry (the
    downstream layer sent its gradient only there); with ``with_counts``, ``grad_counts[b, j]``,
    the gradient of the spike counts ``sum_t s[t, b, j]`` (a spike-rate regulariser's), is added
    to ``g`` at every entry of ``(b, j)``. ``beta_powers[k] = beta^k``.
    """
    step, neuron = entries[ENTRY_STEP], entries[ENTRY_NEURON]
    successor, span_start = entries[ENTRY_SUCCESSOR], entries[ENTRY_SPAN]
    up_step, up_neuron = up_entries[ENTRY_STEP], up_entries[ENTRY_NEURON]
    batch = entry_offsets.shape[0] - 1
    steps = beta_powers.shape[0] - 1
    in_width, width = weight_t.shape
    beta = beta_powers[1]
    dense_from = max(width // _DENSE_ROW_DIVISOR, 1)
    # a thread zeroes its partial dW^T (in its own cache) before its first batch item
    zeroed = np.zeros(row_buffers.shape[0], dtype=np.bool_)
    for b in nb.prange(batch):
        thread = nb.get_thread_id()
        part = _own_part(grad_weight_parts, zeroed, thread)
        # the row D[t, :], the live neurons (and each one's place in that list), the neurons
        # whose span begins one step above t (ends[t, :n_end[t]])
        row, ends = row_buffers[thread, :width], end_buffers[thread]
        n_end = end_counts[thread, :steps]
        live_list, place = live_buffers[thread, 0, :width], live_buffers[thread, 1, :width]
        first, last = entry_offsets[b], entry_offsets[b + 1]
        if fill_indices:
            for u in range(up_offsets[b], up_offsets[b + 1]):
                up_indices[0, u], up_indices[1, u], up_indices[2, u] = up_step[u], b, up_neuron[u]
        for e in range(last - 1, first - 1, -1):
            j = neuron[e]
            g = grad[0, e] if per_entry else grad[step[e] * batch + b, j]
            if with_counts:
                g += grad_counts[b, j]
            d = g * surrogate[e]
            s = successor[e]
            if s >= 0:
                d += beta_powers[step[s] - step[e]] * grad_entries[s]
            grad_entries[e] = d
        # sweep the steps downwards holding D[t, :] as one dense row: D[t] = beta D[t + 1] where
        # a span goes on, D[t_e, j] = d[e] where one starts (at its entry), 0 below a span's
        # first step. Spans of one neuron never overlap; at a step, ends apply before starts
        n_end[:] = 0
        for e in range(first, last):
            below = span_start[e] - 1
            if grad_entries[e] != 0.0 and below >= 0:
                ends[below, n_end[below]] = neuron[e]
                n_end[below] += 1
        row[:] = 0.0
        live = 0
        e = last - 1
        u = up_offsets[b + 1] - 1
        # above the newest entry's step D is zero: the sweep starts there
        top = step[last - 1] if last > first else -1
        for t in range(top, -1, -1):
            if live > 0:
                for o in range(width):
                    row[o] *= beta
            for c in range(n_end[t]):
                j = ends[t, c]
                row[j] = 0.0
                live -= 1
                moved = live_list[live]
                live_list[place[j]] = moved
                place[moved] = place[j]
            while e >= first and step[e] == t:
                if grad_entries[e] != 0.0:
                    j = neuron[e]
                    row[j] = grad_entries[e]
                    live_list[live] = j
                    place[j] = live
                    live += 1
                e -= 1
            while want_upstream and u >= up_offsets[b] and up_step[u] > t:
                u -= 1  # entries at steps where D was zero: their gradient stays 0
            if live == 0:
                continue
            # a row with few live neurons is used as their list, a fuller one as a whole
            # (contiguous vector operations)
            dense = live >= dense_from
            r = t * batch + b
            if want_weight:
                for q in range(input_offsets[r], input_offsets[r + 1]):
                    part_i = part[input_columns[q]]
                    if dense:
                        for o in range(width):
                            part_i[o] += row[o]
                    else:
                        for c in range(live):
                            j = live_list[c]
                            part_i[j] += row[j]
            while want_upstream and u >= up_offsets[b] and up_step[u] == t:
                w_i = weight_t[up_neuron[u]]
                if dense:
                    acc = row[0] * w_i[0]
                    for o in range(1, width):
                        acc += row[o] * w_i[o]
                else:
                    acc = row[live_list[0]] * w_i[live_list[0]]
                    for c in range(1, live):
                        acc += row[live_list[c]] * w_i[live_list[c]]
                up_values[u] = acc
                u -= 1
            if want_input:
                out = grad_input[r]
                for c in range(live):
                    j = live_list[c]
                    d_t = row[j]
                    w_j = weight[j]
                    for i in range(in_width):
                        out[i] += d_t * w_j[i]
    if want_weight:
        _add_parts(grad_weight_parts, zeroed)


@nb.njit(inline="always")
def _own_part(parts, zeroed, thread):
    """The calling thread's partial sum, zeroed (in its own cache) at the thread's first use."""
    part = parts[thread]
    if not zeroed[thread]:
        part[:, :] = 0.0
        zeroed[thread] = True
    return part


@nb.njit(parallel=True, cache=True)
def _add_parts(parts, zeroed):
    """``parts[0] += parts[k]`` for every other thread's partial sum ``k`` that was used
    (``zeroed[k]``), in thread order; ``parts[0]`` is zeroed first if its thread got no batch item.
    The rows are split between the threads, each adding its share of all parts."""
    if not zeroed[0]:
        parts[0] = 0.0
    count, rows = parts.shape[0], parts.shape[1]
    if count == 1:
        return
    for share in nb.prange(count):
        low, high = rows * share // count, rows * (share + 1) // count
        total = parts[0]
        for k in range(1, count):
            if zeroed[k]:
                part = parts[k]
                for i in range(low, high):
                    total_i, part_i = total[i], part[i]
                    for o in range(part_i.shape[0]):
                        total_i[o] += part_i[o]


# rows of the readout's [3, B, O] peak record: first step of the maximum, steps that reach it,
# last of them
PEAK_FIRST, PEAK_TIES, PEAK_LAST = 0, 1, 2

# The readout's rows are padded to a multiple of READOUT_LANES floats (zeros past the real
# outputs): loops over a padded row then run as whole vector operations, with no remainder.
READOUT_LANES = 16


@nb.njit(parallel=True, cache=True)
def readout_forward(offsets, columns, weight_t, beta, use_max, membrane, scores, peaks):
    """Leaky readout of sparse binary input: ``v[t] = beta v[t-1] + W b[t]`` per batch item
    (``W b[t]`` summed over the spikes of row ``t * B + b``; ``weight_t`` is ``W^T`` padded to
    whole blocks of :data:`READOUT_LANES` columns); ``scores[b]`` = ``max_t v[t]`` (``use_max``,
    and then the trace ``membrane`` ``[B, T, O]``, which the backward reads where steps tie) or
    ``(1/T) sum_t v[t]`` (``membrane`` unused). ``peaks`` ``[3, B, O]``: the first
    step of the maximum (row ``PEAK_FIRST``), how many steps reach it (``PEAK_TIES``) and the
    last of them (``PEAK_LAST``)."""
    batch, width = scores.shape
    steps = (offsets.shape[0] - 1) // batch
    padded = weight_t.shape[1]
    for b in nb.prange(batch):
        v = np.zeros(padded, dtype=scores.dtype)
        best = np.full(width, -np.inf, dtype=scores.dtype)
        total = np.zeros(width, dtype=scores.dtype)
        first = np.full(width, -1, dtype=np.int32)
        latest = np.full(width, -1, dtype=np.int32)
        count = np.zeros(width, dtype=np.int32)
        for t in range(steps):
            r = t * batch + b
            for o in range(padded):
                v[o] *= beta
            for k in range(offsets[r], offsets[r + 1]):
                w_i = weight_t[columns[k]]
                for o in range(padded):
                    v[o] += w_i[o]
            for o in range(width):
                if use_max:
                    membrane[b, t, o] = v[o]
                total[o] += v[o]
                if v[o] > best[o] or v[o] != v[o]:  # a NaN is the max from then on, as in amax
                    best[o], first[o], latest[o], count[o] = v[o], t, t, 1
                elif v[o] == best[o]:
                    count[o] += 1
                    latest[o] = t
        for o in range(width):
            scores[b, o] = best[o] if use_max else total[o] / steps
            peaks[PEAK_FIRST, b, o], peaks[PEAK_TIES, b, o] = first[o], count[o]
            peaks[PEAK_LAST, b, o] = latest[o]


@nb.njit(parallel=True, cache=True, fastmath=_VECTOR_MATH)
def readout_backward(
    grad_scores,
    membrane,
    scores,
    peaks,
    beta_powers,
    beta_sums,
    use_max,
    offsets,
    columns,
    weight_t,
    up_entries,
    up_offsets,
    want_weight,
    want_upstream,
    fill_indices,
    grad_weight_parts,
    up_values,
    up_indices,
    row_buffers,
):
    """Backward of :func:`readout_forward` from ``grad_scores`` ``[B, O]``, written into
    ``grad_weight_parts`` (``[P, I, O]``, padded: one partial ``dW^T`` per thread, each zeroed
    here by its thread; the total is left in ``grad_weight_parts[0]``), ``up_values``
    (zero-filled) and ``up_indices``, each empty when not asked for; ``row_buffers``:
    per-thread scratch ``[P, T + 1, O]`` (padded; the spare row keeps threads off each other's
    cache lines, :data:`THREAD_GAP`). All are the caller's tensors, so that the memory is
    torch's.

    ``c[t] = dL/d(W b[t]) = sum_{t' >= t} beta^(t'-t) dL/dv[t']`` (a per-thread ``[T, O]``
    buffer padded like ``weight_t``), in closed form rather than by the recurrence:
    ``dL/dv[t'] = g / n_ties`` at the steps where ``v`` equals the max (``use_max``; ties share, as
    ``torch.amax``), so ``c[t] = (g / n_ties) sum over tied t' >= t of beta^(t'-t)``; else
    ``dL/dv = g / T`` at every step and ``c[t] = (g / T) sum_{k < T-t} beta^k``
    (``beta_powers[k] = beta^k``, ``beta_sums[k] = sum_{m < k} beta^m``). ``c`` is zero after
    the last step of a maximum (``peaks``, from :func:`readout_forward`), and only the steps up
    to it are visited. Then ``dW^T[i, :] += c[t]`` for every input spike ``i`` of row
    ``t * B + b`` and ``up_values[u] = c[t] . W^T[j, :]`` at the upstream layer's active entries
    ``u = (t, b, j)`` (``up_entries``/``up_offsets``, laid out as :func:`sparse_backward`'s
    ``entries``: all the upstream sparse backward reads), with ``fill_indices`` also their COO
    coordinates ``up_indices[:, u] = (t, b, j)``.
    """
    batch, width = scores.shape
    steps = (offsets.shape[0] - 1) // batch
    padded = weight_t.shape[1]
    up_step, up_neuron = up_entries[ENTRY_STEP], up_entries[ENTRY_NEURON]
    peak_step, ties, last_tie = peaks[PEAK_FIRST], peaks[PEAK_TIES], peaks[PEAK_LAST]
    zeroed = np.zeros(row_buffers.shape[0], dtype=np.bool_)
    for b in nb.prange(batch):
        thread = nb.get_thread_id()
        part = _own_part(grad_weight_parts, zeroed, thread)
        last = steps - 1  # the last step where c can be non-zero
        if use_max:
            last = 0
            for o in range(width):
                last = max(last, last_tie[b, o])
        c = row_buffers[thread]
        c[: last + 1, :] = 0.0
        for o in range(width):
            if not use_max:
                share = grad_scores[b, o] / steps
                for t in range(steps):
                    c[t, o] = share * beta_sums[steps - t]
            elif ties[b, o] == 1:
                peak = peak_step[b, o]
                for t in range(peak + 1):
                    c[t, o] = grad_scores[b, o] * beta_powers[peak - t]
            elif ties[b, o] > 1:
                share = grad_scores[b, o] / ties[b, o]
                for peak in range(peak_step[b, o], last_tie[b, o] + 1):
                    if membrane[b, peak, o] == scores[b, o]:
                        for t in range(peak + 1):
                            c[t, o] += share * beta_powers[peak - t]
        if want_weight:
            for t in range(last + 1):
                r = t * batch + b
                c_t = c[t]
                for k in range(offsets[r], offsets[r + 1]):
                    part_i = part[columns[k]]
                    for o in range(padded):
                        part_i[o] += c_t[o]
        if want_upstream:
            for u in range(up_offsets[b], up_offsets[b + 1]):
                t = up_step[u]
                if fill_indices:
                    up_indices[0, u], up_indices[1, u], up_indices[2, u] = t, b, up_neuron[u]
                if t > last:
                    continue
                c_t = c[t]
                w_i = weight_t[up_neuron[u]]
                total = c_t[0] * w_i[0]
                for o in range(1, padded):
                    total += c_t[o] * w_i[o]
                up_values[u] = total
    if want_weight:
        _add_parts(grad_weight_parts, zeroed)


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

"""Sparse spiking gradient descent: a BPTT backward whose cost scales with activity.

Perez-Nieves & Goodman, "Sparse Spiking Gradient Descent" (NeurIPS 2021). The forward is the
LIF layer of :mod:`spikeforge.neuron.lif` unchanged (Bondarev's model: reset to zero, no synaptic
current). A neuron is *active* at ``(t, b, j)`` when its pre-reset membrane is near threshold::

    A[t] = |u[t] - threshold| < active_bound        (the paper: 0.2 with threshold 1)

The dense backward of :mod:`spikeforge.neuron.lif` is
``d[t] = g[t] sigma'[t] + beta (1 - s[t]) d[t+1]`` with ``d = dL/dnet`` and ``g = dL/ds``. The
sparse backward evaluates the surrogate at active entries only (zero elsewhere); the gradient
still leaks back in time through the membrane, as in the paper, until a spike resets it::

    d[t] = A[t] g[t] sigma'[t] + beta (1 - s[t]) d[t+1]
    dL/dW = sum over (t, b, j) of d[t, b, j] b[t, b, :]
    dL/db[t, b, :] = sum over j of d[t, b, j] W[j, :]

So ``d`` is non-zero only on the *span* of each active entry: the steps back from it to the
neuron's previous active entry or previous spike, where ``d[t] = beta^(t_e - t) d[t_e]``. This is
exactly the dense backward with the surrogate multiplied by ``A`` (the test oracle
:func:`spiking_linear_masked_reference`), and the dense backward when the bound covers every
neuron (``active_bound = inf``).

The forward's scan (one pass, writing the entries and spikes into room reserved per batch item;
a second pass only for an item that outgrows it) also writes the layer's output spikes as
compressed rows, which the next sparse layer or the readout reads instead of scanning the float
spikes.

What is kept for backward: the active entries (step ``t``, neuron ``j``, sigma', the next
active entry of the same neuron within its reset segment, and the first step of the entry's span:
20 bytes each), the input spikes as compressed sparse rows (the column of every one), and the
weight (sparse layers store it input-major, ``W^T`` contiguous, so that the kernels' ``dW^T``
is the gradient's own layout). The Numba backend (CPU), per batch item, computes ``d`` at the
entries, then sweeps the steps downwards holding the row ``d[t, :]`` (scaled by ``beta`` each
step while a span goes on), and at the steps where some span reaches adds it to ``dW^T[i, :]``
per input spike ``i`` and dots it with ``W[:, i]`` per upstream active entry: contiguous row
operations whose number follows the input spikes and the active entries, not ``T * B``. When
the input comes from another sparse layer, the input gradient is sent back at that layer's active
entries only (a sparse COO tensor); the accumulator readout (:func:`sparse_readout`) does the
same. The PyTorch backend does the same work in whole-tensor operations
(:mod:`spikeforge.neuron.sparse_torch`): entries gathered by one sort, the chain recurrence by
pointer jumping, the weight and input gradients as sparse-dense products; it keeps the entries
and the input spikes as compressed rows of ``X^T`` for backward and passes dense input gradients
between layers. On CUDA with Triton (:mod:`spikeforge.neuron._triton_kernels`) one kernel scans
the membrane and counts each neuron's active entries, a second lists them neuron by neuron at
offsets from those counts, and in backward a third writes ``dL/dnet`` from the entries alone;
the products are then ``X^T D`` (``X^T`` sparse) and ``D W``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from spikeforge._spike_rows import attach_rows, attached_rows, column_dtype
from spikeforge.neuron.lif import (
    _as_spike_bytes,
    _check_layer_shapes,
    lif_scan,
    not_binary_error,
    resolve_backend,
    spike_bytes_unchecked,
    spiking_linear_reference,
    triton_kernels_for,
)
from spikeforge.neuron.sparse_torch import (
    EntryList,
    compact_input,
    gather_active_entries,
    offsets_from_counts,
    rows_are_smaller,
    sparse_backward_torch,
    weight_grad,
)
from spikeforge.neuron.surrogates import get_surrogate

__all__ = [
    "active_set",
    "reads_out_sparsely",
    "spike_counts",
    "sparse_readout",
    "sparse_spiking_linear",
    "spiking_linear_masked_reference",
]


def active_set(membrane: torch.Tensor, threshold: float, active_bound: float) -> torch.Tensor:
    """Boolean mask ``|u - threshold| < active_bound`` of a pre-reset membrane ``u[T, B, N]``."""
    return (membrane - threshold).abs() < active_bound


def spiking_linear_masked_reference(
    spikes_in: torch.Tensor,
    weight: torch.Tensor,
    beta: float,
    threshold: float,
    surrogate: str = "inverse-square",
    scale: float | None = None,
    active_bound: float | None = None,
) -> torch.Tensor:
    """``[T,B,I]`` -> ``[T,B,O]`` spikes by a per-step loop under autograd whose surrogate
    derivative is multiplied by the active set ``A[t]`` (the reset path and the leak keep their
    gradient): what the sparse backward computes, computed naively (test oracle).
    """
    bound = get_surrogate(surrogate).active_bound if active_bound is None else active_bound
    return spiking_linear_reference(spikes_in, weight, beta, threshold, surrogate, scale, bound)


# Below this input density the Numba forward builds the synaptic current from the input's ones
# (a gather-add per spike) instead of the dense matmul; measured faster on this CPU.
_CSR_FORWARD_DENSITY = 0.05


class _ActiveEntries:
    """The active set of one layer's forward, attached to its output spikes so that the next
    layer (or the readout) can send back its gradient at these entries only, as a sparse COO
    tensor (the Numba backend only). Its indices ``(t, b, j)`` are written by the first
    consumer's backward kernel, which visits every entry anyway (:meth:`wants_indices`)."""

    def __init__(self, ints, entry_offsets, shape):
        self.ints, self.entry_offsets, self.shape = ints, entry_offsets, shape
        self.count = ints.shape[1]
        self._indices: torch.Tensor | None = None

    def release(self) -> None:
        """Drop the entry arrays and the COO indices. Called at the end of the producing layer's
        backward, after every consumer's (autograd runs consumers first): a graph the caller
        keeps after ``backward()`` (its loss until the next one is assigned) then holds no entry
        memory. A later backward through a retained graph has the consumers write the indices
        again."""
        self.ints = self.entry_offsets = self._indices = None

    def wants_indices(self) -> bool:
        """Whether the COO indices are still to be written: a consumer's backward kernel, which
        visits every entry, then writes them beside its values and hands them to
        :meth:`sparse_grad`."""
        return self._indices is None

    def values_of(self, grad: torch.Tensor) -> torch.Tensor | None:
        """The values of a sparse gradient laid out on these entries (None if it is not)."""
        if not grad.is_sparse or grad._nnz() != self.count or self._indices is None:
            return None
        indices = grad._indices()
        if indices.data_ptr() == self._indices.data_ptr() or torch.equal(indices, self._indices):
            return grad._values()
        return None

    def sparse_grad(self, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The gradient ``values`` at these entries as a sparse COO tensor. ``indices``: the
        buffer the consumer's kernel filled if :meth:`wants_indices` said so (kept for any later
        consumer), else unused."""
        if self._indices is None:
            self._indices = indices
        return torch.sparse_coo_tensor(self._indices, values, self.shape, check_invariants=False)


_HANDLE = "_spikeforge_active_entries"


def _handle_of(spikes: torch.Tensor) -> _ActiveEntries | None:
    """The active entries of the sparse layer whose output ``spikes`` are, while that layer's
    backward has not yet released them (else, or for any other tensor, None)."""
    handle = getattr(spikes, _HANDLE, None)
    return None if handle is None or handle.ints is None else handle


# Room for each batch item's active entries (and spikes) in the forward's single scan, as a
# fraction of T * N, unless the caller passes a hint (``stats["scan_room"]``: SpikingLinear passes
# a little more than its previous batch's fullest item); an item with more is scanned again with
# exact room. The room changes the speed and transient memory of the forward, never its result.
_SCAN_ROOM = 0.1


def _entry_arrays(n: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Empty arrays for ``n`` entries: the int32 ``[4, n]`` rows (step, neuron, successor, span
    start; :mod:`~spikeforge.neuron._sparse_kernels`) and the surrogate derivatives."""
    return torch.empty(4, n, dtype=torch.int32), torch.empty(n, dtype=dtype)


def _kernel_views(entries: tuple[torch.Tensor, torch.Tensor]) -> tuple[np.ndarray, ...]:
    """The entry arrays as the forward kernels take them: step, neuron, surrogate, successor,
    span start."""
    ints, surrogate = entries[0].numpy(), entries[1].numpy()
    return ints[0], ints[1], surrogate, ints[2], ints[3]


def _scan_numba(source, weight_t, shape, constants, room_fraction):
    """The Numba forward of one layer: ``(spikes, spike counts, entries + entry offsets, spike
    row offsets, spike columns, fullest item)``, the last as a fraction of ``T * N``. One scan
    writes the entries and spike columns into ``room_fraction * T * N`` places reserved per batch
    item, then they are moved into place; if an item outgrows its room, a second scan writes them
    with exact room (the counts of the first)."""
    from spikeforge.neuron import _sparse_kernels as kernels

    steps, batch, width = shape
    dtype = weight_t.dtype
    typed = weight_t.numpy().dtype.type
    beta, threshold, bound, code, scale = constants
    args = (*source, weight_t.numpy(), typed(beta), typed(threshold), typed(bound), code)
    args = (*args, typed(scale))
    spikes = torch.empty(steps, batch, width, dtype=dtype)
    spike_counts = torch.zeros(batch, width, dtype=dtype)
    row_spikes = torch.empty(steps * batch, dtype=torch.int64)
    counts = torch.empty(batch, dtype=torch.int64)
    outputs = (spikes.numpy(), spike_counts.numpy(), row_spikes.numpy(), counts.numpy())
    room = max(64, math.ceil(room_fraction * steps * width))
    base = torch.arange(batch, dtype=torch.int64) * room
    limit = torch.full((batch,), room, dtype=torch.int64)
    slots = _entry_arrays(batch * room, dtype)
    spike_slots = torch.empty(batch * room, dtype=column_dtype(width))
    kernels.lif_forward_scan(
        *args,
        *outputs,
        base.numpy(),
        limit.numpy(),
        *_kernel_views(slots),
        base.numpy(),
        limit.numpy(),
        spike_slots.numpy(),
    )
    entry_offsets = offsets_from_counts(counts)
    spike_offsets = offsets_from_counts(row_spikes)
    item_spikes = row_spikes.view(steps, batch).sum(0)
    entries = _entry_arrays(int(entry_offsets[-1]), dtype)
    fullest = max(int(counts.max()), int(item_spikes.max()))
    if fullest <= room:
        kernels.move_entries(
            counts.numpy(),
            base.numpy(),
            entry_offsets.numpy(),
            *_kernel_views(slots),
            *_kernel_views(entries),
        )
    else:  # scan again, with exactly the room each item needs
        base = torch.zeros(batch, dtype=torch.int64)
        torch.cumsum(item_spikes[:-1], 0, out=base[1:])
        spike_slots = torch.empty(int(item_spikes.sum()), dtype=column_dtype(width))
        spike_counts.zero_()
        kernels.lif_forward_scan(
            *args,
            *outputs,
            entry_offsets.numpy(),
            counts.numpy(),
            *_kernel_views(entries),
            base.numpy(),
            item_spikes.numpy(),
            spike_slots.numpy(),
        )
    spike_columns = torch.empty(int(spike_offsets[-1]), dtype=column_dtype(width))
    kernels.spikes_to_rows(
        row_spikes.numpy(), base.numpy(), spike_slots.numpy(), spike_offsets.numpy(),
        spike_columns.numpy(),
    )  # fmt: skip
    fullest_fraction = fullest / max(steps * width, 1)
    return (
        spikes,
        spike_counts,
        (*entries, entry_offsets),
        spike_offsets,
        spike_columns,
        fullest_fraction,
    )


def _input_rows(spikes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The compressed rows of a 0/1 input ``[T, B, I]``: those its producer attached (a sparse
    layer's forward scan, the latency encoder; :mod:`spikeforge._spike_rows`), else a scan of
    the tensor for its ones."""
    return attached_rows(spikes) or _compact_rows(spikes)


def _compact_rows(spikes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """0/1 rows ``[R, I]`` -> (offsets ``[R+1]`` int64, column of every one); errors if not 0/1."""
    from spikeforge.neuron import _sparse_kernels as kernels

    flat = spikes.reshape(-1, spikes.shape[-1]).contiguous()
    counts = torch.empty(flat.shape[0], dtype=torch.int64)
    # bytes whose rows are whole 8-byte words are scanned a word at a time
    words = (
        flat.numpy().view(np.uint64)
        if flat.dtype == torch.uint8 and flat.shape[1] % 8 == 0
        else None
    )
    if words is not None:
        wrong = np.empty(flat.shape[0], dtype=np.int64)
        kernels.count_spike_words(words, counts.numpy(), wrong)
        bad = int(wrong.sum())
    else:
        bad = kernels.count_spikes(flat.numpy(), counts.numpy())
    if bad:
        raise not_binary_error(bad)
    offsets = offsets_from_counts(counts)
    columns = torch.empty(int(offsets[-1]), dtype=column_dtype(flat.shape[1]))
    if words is not None:
        kernels.gather_spike_words(words, offsets.numpy(), columns.numpy())
    else:
        kernels.gather_spikes(flat.numpy(), offsets.numpy(), columns.numpy())
    return offsets, columns


class _SparseSpikingLinearFunction(torch.autograd.Function):
    """Dense forward; backward from the active entries only (see the module docstring)."""

    @staticmethod
    def forward(
        ctx,
        spikes_in,
        weight,
        beta,
        threshold,
        surrogate,
        scale,
        bound,
        backend,
        matmul_dtype,
        stats,
    ):
        steps, batch, _ = spikes_in.shape
        width = weight.shape[0]
        upstream = _handle_of(spikes_in) if backend == "numba" else None
        if backend == "numba":
            offsets_in, columns = _input_rows(spikes_in)
            # a sparse input's current is made row by row inside the scans from the input's ones
            # (never written out as [T, B, N]); a denser one is one matmul
            from_rows = (
                matmul_dtype == weight.dtype == torch.float32
                and columns.numel() < _CSR_FORWARD_DENSITY * spikes_in.numel()
            )
            if from_rows:
                current = torch.empty(1, 1, 1, dtype=weight.dtype)
                weight_t = weight.detach().t().contiguous()
            else:
                current = _dense_current(spikes_in, weight, matmul_dtype)
                weight_t = torch.empty(1, 1, dtype=weight.dtype)
            spikes, spike_counts, entries, spike_offsets, spike_columns, fullest = _scan_numba(
                (current.numpy(), from_rows, offsets_in.numpy(), columns.numpy()),
                weight_t,
                (steps, batch, width),
                (beta, threshold, bound, surrogate.code, scale),
                stats.get("scan_room") or _SCAN_ROOM,
            )
            stats["scan_fullest"] = fullest
            ints, surrogate_at, entry_offsets = entries
            n = ints.shape[1]
            ctx.own = _ActiveEntries(ints, entry_offsets, (steps, batch, width))
            ctx.upstream = upstream
            up = (upstream.ints, upstream.entry_offsets) if upstream else ()
            ctx.save_for_backward(
                weight, ints, surrogate_at, entry_offsets, offsets_in, columns, *up
            )
        else:
            current = _dense_current(spikes_in, weight, matmul_dtype)
            kernels = triton_kernels_for(current)
            ctx.by_column = kernels is not None
            if ctx.by_column:  # CUDA: Triton kernels, entries listed column by column
                spikes, entries, kept_input = _triton_forward(
                    kernels, spikes_in, current, (beta, threshold, bound, surrogate, scale)
                )
            else:
                spikes, membrane = lif_scan(current, beta, threshold)
                entries = gather_active_entries(
                    membrane, spikes, threshold, bound, surrogate, scale
                )
                del membrane
                kept_input = compact_input(_as_spike_bytes(spikes_in, "torch"))
            spike_counts = spikes.sum(0)
            n = entries[1].shape[0]
            ctx.save_for_backward(kept_input, weight, *entries)
        ctx.params = (beta, backend, steps, batch, width)
        ctx.input_shape = tuple(spikes_in.shape)
        ctx.input_is_float = spikes_in.is_floating_point()
        stats["active_fraction"] = n / max(steps * batch * width, 1)
        stats["active_entries"] = n
        if backend == "numba":
            stats["_entries"] = ctx.own  # the next layer sends its gradient back at these
            # the output spikes as compressed rows, written by the scan: the next layer and the
            # readout read them instead of scanning the float spikes
            stats["_rows"] = (spike_offsets, spike_columns)
        # unused outputs get None gradients (the spike counts are read only by regularisers)
        ctx.set_materialize_grads(False)
        return spikes, spike_counts

    @staticmethod
    def backward(ctx, grad_spikes, grad_counts):
        beta, backend, steps, batch, width = ctx.params
        want_weight = ctx.needs_input_grad[1]
        want_input = ctx.needs_input_grad[0] and ctx.input_is_float
        if backend == "numba":
            grad_weight, grad_input = _numba_backward(
                ctx, grad_spikes, grad_counts, beta, want_weight, want_input
            )
        elif ctx.by_column:
            grad_weight, grad_input = _triton_backward(
                ctx, grad_spikes, grad_counts, beta, want_weight, want_input
            )
        else:
            kept_input, weight, *saved = ctx.saved_tensors
            entries = EntryList(*saved)
            at = (entries.step, entries.batch, entries.neuron)
            grad = torch.zeros_like(entries.surrogate)
            if grad_spikes is not None:
                grad = _dense(grad_spikes)[at].to(grad.dtype)
            if grad_counts is not None:  # d(sum_t s[t])/ds[t] = 1 at every step
                grad = grad + grad_counts[at[1:]].to(grad.dtype)
            grad_weight, grad_input = sparse_backward_torch(
                grad,
                entries,
                kept_input,
                ctx.input_shape,
                weight,
                beta,
                want_weight,
                want_input,
            )
        if grad_input is not None and not grad_input.is_sparse:
            grad_input = grad_input.view(steps, batch, -1)
        return grad_input, grad_weight, None, None, None, None, None, None, None, None


def _dense(grad: torch.Tensor) -> torch.Tensor:
    return grad.to_dense() if grad.is_sparse else grad


def _triton_forward(kernels, spikes_in, current, constants):
    """Spikes ``[T, B, O]``, the entries listed by column and the kept input of the CUDA form;
    the sizes of the entry list and of the input's rows and the input check are read from the
    GPU together, once."""
    beta, threshold, bound, surrogate, scale = constants
    steps = current.shape[0]
    spikes, membrane, counts = kernels.lif_forward(current, beta, threshold, bound)
    inputs_u8, bad = spike_bytes_unchecked(spikes_in)
    flat_input = inputs_u8.reshape(-1, inputs_u8.shape[-1])
    offsets = offsets_from_counts(counts)
    input_offsets = offsets_from_counts(flat_input.sum(0, dtype=torch.int64))
    bad = torch.as_tensor(bad, device=offsets.device)
    n, n_spikes, bad = torch.stack([offsets[-1], input_offsets[-1], bad]).tolist()
    if bad:
        raise not_binary_error(bad)
    step, offset, successor, span_start = kernels.gather_entries(
        membrane.view(steps, -1), spikes.view(steps, -1), offsets, n, threshold, bound
    )
    entries = (offsets, step, surrogate.derivative(offset, scale), successor, span_start)
    compact = rows_are_smaller(n_spikes, flat_input.numel())
    kept = kernels.input_rows(flat_input, input_offsets, n_spikes) if compact else inputs_u8
    return spikes, entries, kept


def _triton_backward(ctx, grad_spikes, grad_counts, beta, want_weight, want_input):
    """The CUDA form: ``D = dL/dnet`` ``[T*B, O]`` from the entries by one Triton kernel
    (zero outside their spans), then ``dL/dW = D^T X`` (``X`` sparse) and ``dL/dX = D W``."""
    from spikeforge.neuron import _triton_kernels as kernels

    kept_input, weight, *entries = ctx.saved_tensors
    steps, batch, in_width = ctx.input_shape
    if grad_spikes is not None:
        grad_spikes = _dense(grad_spikes).reshape(steps, -1).to(weight.dtype)
        if grad_spikes.stride(-1) != 1:
            grad_spikes = grad_spikes.contiguous()
    if grad_counts is not None:
        grad_counts = grad_counts.reshape(-1).to(weight.dtype)
    grad_current = kernels.sparse_backward_current(grad_spikes, grad_counts, entries, steps, beta)
    grad_current = grad_current.view(steps * batch, -1)
    grad_weight = weight_grad(grad_current, kept_input, in_width) if want_weight else None
    grad_input = grad_current @ weight.detach() if want_input else None
    return grad_weight, grad_input


@functools.lru_cache(maxsize=32)
def _beta_tables(beta: float, steps: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """``(beta^k, sum_{m < k} beta^m)`` for ``k = 0 .. steps``, computed in float64, stored as
    ``dtype``; read-only (shared by every call with these arguments)."""
    powers = beta ** np.arange(steps + 1, dtype=np.float64)
    sums = np.concatenate([[0.0], np.cumsum(powers[:-1])])
    tables = powers.astype(dtype), sums.astype(dtype)
    for table in tables:
        table.flags.writeable = False
    return tables


def _numba_backward(ctx, grad_spikes, grad_counts, beta, want_weight, want_input):
    import numba

    from spikeforge.neuron import _sparse_kernels as kernels

    weight, ints, surrogate_at, entry_offsets, offsets_in, columns, *up = ctx.saved_tensors
    steps, batch, width = ctx.own.shape
    dtype = weight.dtype
    if grad_spikes is None:  # only the spike counts were used
        grad, per_entry = torch.zeros(1, ints.shape[1], dtype=dtype), True
    else:
        given = ctx.own.values_of(grad_spikes)
        per_entry = given is not None
        grad = given.view(1, -1) if per_entry else _dense(grad_spikes).view(steps * batch, width)
        grad = grad.to(dtype).contiguous()
    with_counts = grad_counts is not None
    counts = grad_counts.to(dtype).contiguous() if with_counts else grad
    sparse_input = want_input and ctx.upstream is not None
    dense_input = want_input and not sparse_input
    if sparse_input:
        up_ints, up_offsets = up
        fill_indices = ctx.upstream.wants_indices()
    else:  # unused by the kernel
        up_ints, up_offsets, fill_indices = ints, entry_offsets, False
    weight_t = weight.detach().t().contiguous()  # W^T, [I, O]: a view of input-major weights
    weight_t_np, in_width = weight_t.numpy(), weight_t.shape[0]
    threads, gap = numba.get_num_threads(), kernels.THREAD_GAP
    n_up = up_ints.shape[1] if sparse_input else 0
    outputs = (
        torch.empty(ints.shape[1], dtype=dtype),  # dL/dnet at each entry
        torch.empty(threads, in_width, width if want_weight else 0, dtype=dtype),  # dW^T parts
        torch.zeros(steps * batch if dense_input else 0, in_width, dtype=dtype),
        torch.zeros(n_up, dtype=dtype),  # the gradient at the upstream entries
        torch.empty(3, n_up if fill_indices else 0, dtype=torch.int64),  # and their indices
    )
    scratch = (
        torch.empty(threads, width + gap, dtype=dtype),
        torch.empty(threads, 2, width + gap, dtype=torch.int32),
        torch.empty(threads, steps + 1, width, dtype=torch.int32),
        torch.empty(threads, steps + gap, dtype=torch.int64),
    )
    kernels.sparse_backward(
        grad.numpy(),
        per_entry,
        counts.numpy(),
        with_counts,
        ints.numpy(),
        surrogate_at.numpy(),
        entry_offsets.numpy(),
        _beta_tables(beta, steps, weight_t_np.dtype)[0],
        weight.detach().contiguous().numpy() if dense_input else weight_t_np,
        weight_t_np,
        offsets_in.numpy(),
        columns.numpy(),
        up_ints.numpy(),
        up_offsets.numpy(),
        want_weight,
        dense_input,
        sparse_input,
        fill_indices,
        *(array.numpy() for array in outputs + scratch),
    )
    _, grad_weight_parts, grad_input, up_values, up_indices = outputs
    # dW^T, the threads' parts added into the first by the kernel: dL/dW as a transposed view,
    # the layout of the weights (spikeforge.nn.layers.input_major), which autograd keeps as it
    # is instead of copying
    grad_weight = grad_weight_parts[0].t() if want_weight else None
    ctx.own.release()  # every consumer of this layer's entries is done with them
    if sparse_input:
        return grad_weight, ctx.upstream.sparse_grad(up_values, up_indices)
    return grad_weight, grad_input if dense_input else None


def _dense_current(spikes_in, weight, matmul_dtype):
    steps, batch, _ = spikes_in.shape
    inputs = spikes_in.to(matmul_dtype)
    current = inputs.view(steps * batch, -1) @ weight.to(matmul_dtype).t()
    return current.to(weight.dtype).view(steps, batch, -1)


def sparse_spiking_linear(
    spikes_in: torch.Tensor,
    weight: torch.Tensor,
    beta: float,
    threshold: float,
    surrogate: str = "inverse-square",
    scale: float | None = None,
    active_bound: float | None = None,
    backend: str = "auto",
    matmul_dtype: torch.dtype | None = None,
    stats: dict | None = None,
) -> torch.Tensor:
    """One spiking layer ``[T, B, I]`` -> ``[T, B, O]`` with the sparse backward.

    Same forward and arguments as :func:`spikeforge.neuron.spiking_linear`, plus:

    Args:
        active_bound: half-width of the active set ``|u - threshold| < active_bound``; None uses
            the surrogate's own (0.2 for ``inverse-square``; ``inf``, i.e. dense, for ``exp``).
        stats: if a dict is given, the forward stores ``active_fraction`` (active entries over
            ``T*B*O``) and ``active_entries`` in it.
    """
    _check_layer_shapes(spikes_in, weight)
    sur = get_surrogate(surrogate)
    scale = sur.default_scale if scale is None else float(scale)
    bound = sur.active_bound if active_bound is None else float(active_bound)
    if not bound > 0 or math.isnan(bound):
        raise ValueError(f"active_bound must be positive (inf = every neuron); got {bound}")
    backend = resolve_backend(backend, weight.device)
    matmul_dtype = weight.dtype if matmul_dtype is None else matmul_dtype
    handle = getattr(spikes_in, _HANDLE, None)
    if spikes_in.dtype == torch.bool:
        spikes_in = spikes_in.to(torch.uint8)
    spikes_in = spikes_in.contiguous()
    if handle is not None:
        setattr(spikes_in, _HANDLE, handle)
    stats = {} if stats is None else stats
    spikes, counts = _SparseSpikingLinearFunction.apply(
        spikes_in,
        weight,
        float(beta),
        float(threshold),
        sur,
        scale,
        bound,
        backend,
        matmul_dtype,
        stats,
    )
    if "_entries" in stats:
        setattr(spikes, _HANDLE, stats.pop("_entries"))
        attach_rows(spikes, *stats.pop("_rows"))
    setattr(spikes, _COUNTS, counts)
    return spikes


_COUNTS = "_spikeforge_spike_counts"


def spike_counts(spikes: torch.Tensor) -> torch.Tensor:
    """``c[b, j] = sum_t s[t, b, j]`` of time-major spikes ``[T, B, N]``, in the graph.

    For the output of a sparse-backward layer these are the counts its forward scan already
    made, a second output of the layer: their gradient (a spike-rate regulariser's) reaches the
    sparse backward as ``[B, N]`` and is added at the active entries, instead of being broadcast
    over time into a dense ``[T, B, N]`` gradient. Otherwise ``spikes.sum(0)``.
    """
    counts = getattr(spikes, _COUNTS, None)
    return spikes.sum(0) if counts is None else counts


class _SparseReadoutFunction(torch.autograd.Function):
    """Leaky readout of a sparse layer's spikes, fused: forward from the input's ones, backward
    to the weight and to the input at the producer's active entries only (a sparse COO
    gradient). See :func:`sparse_readout`."""

    @staticmethod
    def forward(ctx, spikes_in, weight, beta, mode, upstream):
        from spikeforge.neuron import _sparse_kernels as kernels

        steps, batch, _ = spikes_in.shape
        outputs, inputs = weight.shape
        offsets, columns = _input_rows(spikes_in)
        # W^T with its rows padded to whole vector blocks (zeros past the outputs)
        padded = -(-outputs // kernels.READOUT_LANES) * kernels.READOUT_LANES
        weight_t = torch.zeros(inputs, padded, dtype=weight.dtype)
        weight_t[:, :outputs] = weight.detach().t()
        use_max = mode == "max"
        # the trace is kept only where the backward reads it: at tied maxima
        membrane = torch.empty(batch, steps if use_max else 0, outputs, dtype=weight.dtype)
        scores = torch.empty(batch, outputs, dtype=weight.dtype)
        # per output: the first step of the maximum, how many steps tie there, the last of them
        peaks = torch.empty(3, batch, outputs, dtype=torch.int32)
        kernels.readout_forward(
            offsets.numpy(),
            columns.numpy(),
            weight_t.numpy(),
            weight_t.numpy().dtype.type(beta),
            use_max,
            membrane.numpy(),
            scores.numpy(),
            peaks.numpy(),
        )
        ctx.upstream, ctx.beta, ctx.use_max, ctx.steps = upstream, beta, use_max, steps
        ctx.save_for_backward(
            weight_t, membrane, scores, peaks, offsets, columns, upstream.ints,
            upstream.entry_offsets,
        )  # fmt: skip
        return scores

    @staticmethod
    def backward(ctx, grad_scores):
        import numba

        from spikeforge.neuron import _sparse_kernels as kernels

        weight_t, membrane, scores, peaks, offsets, columns, up_ints, up_offsets = ctx.saved_tensors
        steps = ctx.steps
        want_weight, want_input = ctx.needs_input_grad[1], ctx.needs_input_grad[0]
        fill_indices = want_input and ctx.upstream.wants_indices()
        weight_t_np = weight_t.numpy()
        threads, (inputs, padded) = numba.get_num_threads(), weight_t.shape
        n_up = up_ints.shape[1] if want_input else 0
        buffers = (
            torch.empty(threads, inputs, padded if want_weight else 0, dtype=weight_t.dtype),
            torch.zeros(n_up, dtype=weight_t.dtype),  # the gradient at the upstream entries
            torch.empty(3, n_up if fill_indices else 0, dtype=torch.int64),  # and their indices
            # scratch: c[t] per thread, one spare row each (THREAD_GAP)
            torch.empty(threads, steps + 1, padded, dtype=weight_t.dtype),
        )
        kernels.readout_backward(
            grad_scores.to(weight_t.dtype).contiguous().numpy(),
            membrane.numpy(),
            scores.numpy(),
            peaks.numpy(),
            *_beta_tables(ctx.beta, steps, weight_t_np.dtype),
            ctx.use_max,
            offsets.numpy(),
            columns.numpy(),
            weight_t_np,
            up_ints.numpy(),
            up_offsets.numpy(),
            want_weight,
            want_input,
            fill_indices,
            *(array.numpy() for array in buffers),
        )
        grad_weight_parts, values, indices, _ = buffers
        grad_weight = None
        if want_weight:  # dW^T padded: dL/dW in the readout weight's own layout
            grad_weight = grad_weight_parts[0, :, : scores.shape[1]].t().contiguous()
        grad_input = None
        if want_input:
            grad_input = ctx.upstream.sparse_grad(values, indices)
        return grad_input, grad_weight, None, None, None


def reads_out_sparsely(spikes: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`sparse_readout` applies: ``spikes`` come from a sparse-backward layer on
    the Numba backend (its consumer can send the gradient back at that layer's active entries
    only) and ``weight`` is a float32 CPU tensor."""
    return (
        _handle_of(spikes) is not None
        and weight.device.type == "cpu"
        and weight.dtype == torch.float32
    )


def sparse_readout(spikes_in: torch.Tensor, weight: torch.Tensor, beta: float, mode: str):
    """Class scores ``[B, O]`` of a non-spiking leaky readout ``v[t] = beta v[t-1] + W b[t]``:
    ``max_t v[t]`` (``mode="max"``, Perez-Nieves & Goodman 2021) or ``(1/T) sum_t v[t]``
    (``"sum"``), for spikes ``b`` ``[T, B, I]`` from a sparse-backward layer on the Numba
    backend and a float32 CPU weight ``[O, I]`` (:func:`reads_out_sparsely`).

    The forward and the weight gradient run over the input's ones; the input gradient is
    computed only at the producer's active entries, all its sparse backward reads.
    """
    if spikes_in.dim() != 3 or spikes_in.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"input of shape {tuple(spikes_in.shape)} has {spikes_in.shape[-1]} features but the "
            f"weight expects {weight.shape[1]}"
        )
    if mode not in ("max", "sum"):
        raise ValueError(f"sparse_readout reads out 'max' or 'sum' over time; got {mode!r}")
    if not reads_out_sparsely(spikes_in, weight):
        raise ValueError(
            "sparse_readout needs spikes from a sparse-backward layer on the numba backend and "
            "a float32 CPU weight; use AccumulatorReadout, which falls back to a dense readout"
        )
    upstream = _handle_of(spikes_in)
    return _SparseReadoutFunction.apply(spikes_in, weight, float(beta), mode, upstream)

"""The sparse spiking backward in PyTorch tensor operations (any device).

Perez-Nieves & Goodman, "Sparse Spiking Gradient Descent" (NeurIPS 2021); the equations are in
:mod:`spikeforge.neuron.sparse`. The Numba kernels there walk the active entries one batch item at
a time; here the same work is written as whole-tensor operations, none of which loops over time
steps or entries in Python (on CUDA with Triton, :mod:`spikeforge.neuron._triton_kernels` takes
the entries and the recurrence instead; :func:`compact_input` and :func:`weight_grad` serve both):

* forward (:func:`gather_active_entries`): the active entries ``(t, b, j)`` of the pre-reset
  membrane, ``sigma'`` at each, the first step of each entry's span (one after the neuron's
  previous active entry or spike) and its successor, the next active entry of the same neuron
  when no spike comes between: neighbours in the list of active entries and spikes sorted
  neuron by neuron, then by time;
* backward (:func:`sparse_backward_torch`): ``d[e] = g[e] sigma'[e] + beta^(t_s - t_e) d[s]`` is a
  linear recurrence along each neuron's chain of successors, solved by pointer jumping in
  ``ceil(log2(T + 1))`` rounds; each entry's span ``D[t, b, j] = beta^(t_e - t) d[e]`` for
  ``span_start[e] <= t <= t_e`` becomes a matrix ``D`` ``[T*B, O]``; then ``dL/dW^T = X^T D``
  (``X^T``: the input spikes, as a compressed-sparse-row matrix) and ``dL/dX = D W`` (``D``
  sparse) are sparse-dense products.

Nothing of size ``T * B * O`` or ``T * B * I`` is kept for backward: the entries (a few per cent
of ``T * B * O`` at most), the input spikes as compressed rows of ``X^T`` (or its bytes, if
smaller) and the weight.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch

# the CSR input and the COO spans are built by this module from valid indices
warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta", UserWarning)
warnings.filterwarnings("ignore", "Sparse invariant checks are implicitly disabled", UserWarning)

__all__ = [
    "EntryList",
    "gather_active_entries",
    "compact_input",
    "offsets_from_counts",
    "rows_are_smaller",
    "solve_chains",
    "sparse_backward_torch",
    "weight_grad",
]


class EntryList(NamedTuple):
    """Active entries, neuron by neuron (sorted by ``(b * O + j) * T + t``)."""

    step: torch.Tensor  # t, int64 [n]
    batch: torch.Tensor  # b, int64 [n]
    neuron: torch.Tensor  # j, int64 [n]
    surrogate: torch.Tensor  # sigma'(u - threshold), float [n]
    successor: torch.Tensor  # index of the next entry of the chain, or -1; int64 [n]
    span_start: torch.Tensor  # first step this entry's gradient reaches; int64 [n]


def gather_active_entries(
    membrane: torch.Tensor,
    spikes: torch.Tensor,
    threshold: float,
    bound: float,
    surrogate,
    scale: float,
) -> EntryList:
    """The active set ``|u - threshold| < bound`` of a pre-reset membrane ``u`` ``[T, B, O]``
    (``spikes``: the layer's 0/1 output) as :class:`EntryList`.

    The *events* of a neuron are its active entries and its spikes. Listed neuron by neuron in
    time order (one sort of the events), an entry's span starts one after the event before it,
    and its successor is the event after it when that event is active and the entry did not fire.
    """
    steps, batch, width = membrane.shape
    offset = membrane - threshold
    active = offset.abs() < bound
    fired = spikes != 0
    t, b, j = (active | fired).nonzero(as_tuple=True)
    key, _ = ((b * width + j) * steps + t).sort()  # neuron by neuron, then time
    t, cell = key % steps, key // steps
    b, j = cell // width, cell % width
    is_entry, did_fire = active[t, b, j], fired[t, b, j]
    same_cell_next = torch.zeros_like(is_entry)
    same_cell_next[:-1] = cell[1:] == cell[:-1]
    previous = torch.full_like(t, -1)
    previous[1:] = torch.where(same_cell_next[:-1], t[:-1], -1)
    entry_index = torch.cumsum(is_entry, 0) - 1
    continues = torch.zeros_like(is_entry)
    continues[:-1] = same_cell_next[:-1] & is_entry[1:]
    continues &= ~did_fire
    successor = torch.full_like(t, -1)
    successor[:-1] = torch.where(continues[:-1], entry_index[1:], -1)
    t, b, j = t[is_entry], b[is_entry], j[is_entry]
    sigma = surrogate.derivative(offset[t, b, j], scale)
    return EntryList(t, b, j, sigma, successor[is_entry], previous[is_entry] + 1)


def solve_chains(
    a: torch.Tensor, c: torch.Tensor, successor: torch.Tensor, longest: int
) -> torch.Tensor:
    """``d[e] = a[e] + c[e] d[successor[e]]`` (``d = a`` where ``successor`` is -1) for chains no
    longer than ``longest``, by pointer jumping: after round k every entry holds the sum over its
    next ``2^k`` chain members, so ``ceil(log2(longest + 1))`` rounds of gathers suffice."""
    n = a.shape[0]
    end = torch.full((1,), n, dtype=successor.dtype, device=successor.device)
    total = torch.cat([a, a.new_zeros(1)])
    factor = torch.cat([torch.where(successor >= 0, c, torch.zeros_like(c)), c.new_zeros(1)])
    jump = torch.cat([torch.where(successor >= 0, successor, end), end])
    for _ in range(max(1, math.ceil(math.log2(longest + 1)))):
        total = total + factor * total[jump]
        factor = factor * factor[jump]
        jump = jump[jump]
    return total[:n]


def offsets_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """``[0, c0, c0 + c1, ...]`` (int64, ``counts.numel() + 1``, on the counts' device): where
    each row's (or column's) list starts in a compressed layout."""
    offsets = torch.zeros(counts.numel() + 1, dtype=torch.int64, device=counts.device)
    torch.cumsum(counts.reshape(-1), 0, out=offsets[1:])
    return offsets


def rows_are_smaller(spikes: int, entries: int) -> bool:
    """Whether :func:`compact_input` keeps an input of ``entries`` 0/1 values with ``spikes``
    ones as compressed rows (fewer than one spike in eight, int32 indices) or as its bytes."""
    return 8 * spikes < entries < 2**31


def compact_input(inputs_u8: torch.Tensor) -> torch.Tensor:
    """What the backward keeps of the ``[T, B, I]`` 0/1 input: the transposed input ``X^T``
    ``[I, T*B]`` in compressed sparse rows when that is smaller (:func:`rows_are_smaller`), as
    one int32 tensor: the ``I + 1`` row offsets, then the row ``t * B + b`` of every spike, input
    by input; else the bytes themselves."""
    flat = inputs_u8.reshape(-1, inputs_u8.shape[-1])
    offsets = offsets_from_counts(flat.sum(0, dtype=torch.int64))
    if not rows_are_smaller(int(offsets[-1]), flat.numel()):
        return inputs_u8
    rows = flat.t().nonzero()[:, 1]  # sorted by input, then by row
    return torch.cat([offsets, rows]).to(torch.int32)


def weight_grad(grad_current: torch.Tensor, kept_input: torch.Tensor, in_width: int):
    """``dL/dW = D^T X`` ``[O, I]`` from ``D = dL/dnet`` ``[T*B, O]`` and the layer's input
    kept by :func:`compact_input`: ``(X^T D)^T`` with ``X^T`` a sparse (CSR) matrix, or a dense
    product when the bytes were kept."""
    rows = grad_current.shape[0]
    if kept_input.dtype == torch.uint8:
        return grad_current.t() @ kept_input.reshape(rows, in_width).to(grad_current.dtype)
    offsets, spike_rows = kept_input[: in_width + 1], kept_input[in_width + 1 :]
    inputs_t = torch.sparse_csr_tensor(
        offsets,
        spike_rows,
        torch.ones(spike_rows.shape[0], dtype=grad_current.dtype, device=grad_current.device),
        (in_width, rows),
        check_invariants=False,
    )
    return (inputs_t @ grad_current).t()


def sparse_backward_torch(
    grad_at_entries: torch.Tensor,
    entries: EntryList,
    kept_input: torch.Tensor,
    input_shape: tuple[int, int, int],
    weight: torch.Tensor,
    beta: float,
    want_weight: bool,
    want_input: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Weight ``[O, I]`` and input ``[T, B, I]`` gradients from ``g`` at the active entries.

    ``kept_input``: :func:`compact_input` of the layer's input of ``input_shape``.
    ``dL/dW^T = X^T D`` with ``X^T`` sparse (the input spikes) and ``D`` laid out dense
    ``[T*B, O]`` (written only on the spans; a product of two sparse matrices measured twice as
    slow on the CPU and no smaller at its peak); ``dL/dX = D W`` with ``D`` sparse.
    """
    steps, batch, in_width = input_shape
    out_width = weight.shape[0]
    dtype, device = weight.dtype, weight.device
    powers = beta ** torch.arange(steps + 1, device=device, dtype=torch.float64)
    powers = powers.to(dtype)
    t, b, j = entries.step, entries.batch, entries.neuron
    successor = entries.successor
    gap = (entries.step[successor.clamp(min=0)] - t).clamp(min=0)
    d = solve_chains(grad_at_entries * entries.surrogate, powers[gap], successor, steps)
    # every entry's span, spread out: D[t_e - k, b, j] = beta^k d[e], 0 <= k <= t_e - span_start
    lengths = t - entries.span_start + 1
    owner = torch.repeat_interleave(lengths)
    back = torch.arange(owner.shape[0], device=device) - (torch.cumsum(lengths, 0) - lengths)[owner]
    rows = (t[owner] - back) * batch + b[owner]
    columns = j[owner]
    values = d[owner] * powers[back]
    grad_weight = grad_input = None
    if want_weight:
        spread = torch.zeros(steps * batch, out_width, dtype=dtype, device=device)
        spread[rows, columns] = values  # spans of one neuron never overlap: written once each
        grad_weight = weight_grad(spread, kept_input, in_width)
        del spread
    if want_input:
        spread = torch.sparse_coo_tensor(
            torch.stack([rows, columns]), values, (steps * batch, out_width), check_invariants=False
        )
        grad_input = torch.sparse.mm(spread, weight.detach()).view(steps, batch, in_width)
    return grad_weight, grad_input

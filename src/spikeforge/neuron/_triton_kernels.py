"""Triton kernels for the LIF layers on CUDA: one launch per scan instead of several per step.

On a GPU the PyTorch forms of the scans (:func:`spikeforge.neuron.lif.lif_scan`, the reverse
recurrence of :func:`spikeforge.neuron.lif.dense_bptt_grads`) launch several kernels per time
step; at T = 100 and a few hundred neurons those launches, not the arithmetic, set the time. Here
each program takes ``BLOCK`` neurons (columns of the ``[T, B*N]`` layout) through all T steps.

* :func:`lif_forward`: ``u[t] = beta v[t-1] + net[t]``, ``s[t] = [u[t] >= threshold]``,
  ``v[t] = u[t](1 - s[t])`` (Bondarev's vector-matrix LIF); optionally each column's count of
  active entries ``|u - threshold| < bound`` (Perez-Nieves & Goodman 2021).
* :func:`lif_backward`: ``d[t] = g[t] sigma'[t] + beta (1 - s[t]) d[t+1]`` (dense BPTT).
* :func:`gather_entries`: the active entries column by column in time order, each with its span
  start (one after the column's previous event: active entry or spike) and its successor (the
  next event, when that is an active entry and this entry did not fire): the same list as
  :func:`spikeforge.neuron.sparse_torch.gather_active_entries`, written directly at offsets from
  the counts (:func:`~spikeforge.neuron.sparse_torch.offsets_from_counts`) instead of by a
  sort.
* :func:`input_rows`: the layer's 0/1 input ``X`` as compressed sparse rows of ``X^T`` (one
  program per input, a prefix sum per chunk of rows): what the sparse backward keeps of it.
* :func:`sparse_backward_current`: ``D[t] = dL/dnet[t]`` from the entries alone (Perez-Nieves &
  Goodman's sparse backward): at entry ``e``, ``D = g sigma' + beta D[t+1]`` when ``e`` has a
  successor, ``g sigma'`` otherwise; between entries ``D`` decays by ``beta`` back to the span
  start and is zero before it.

The multiplications and additions are kept apart (``enable_fp_fusion=False``: no fused
multiply-add), so the scans' results are bit-identical to the PyTorch loops; the sparse backward
differs from :func:`spikeforge.neuron.sparse_torch.sparse_backward_torch` only in rounding (it
multiplies by ``beta`` step by step where that one takes ``beta**gap``). float32 only; the
callers fall back to the PyTorch forms for other dtypes and on the CPU.

Tested against those forms in ``tests/neuron/test_triton_kernels.py``, on CUDA where there is a
GPU and on the CPU in Triton's interpreter (``TRITON_INTERPRET=1``) where there is not;
``tests/test_gpu.py`` compares the CUDA layers with the CPU's Numba ones.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

__all__ = [
    "lif_forward",
    "lif_backward",
    "gather_entries",
    "input_rows",
    "sparse_backward_current",
]

_BLOCK = 128
_NO_FUSION = {"enable_fp_fusion": False}


def _grid(columns: int):
    return (triton.cdiv(columns, _BLOCK),)


def _launch_options() -> dict:
    # the interpreter takes no compile options
    return {} if os.environ.get("TRITON_INTERPRET") == "1" else _NO_FUSION


@triton.jit
def _program_columns(columns, BLOCK: tl.constexpr):
    """This program's ``BLOCK`` columns of a ``[T, columns]`` tensor, which of them exist, and
    ``columns`` as int64 (so that ``t * stride + column`` cannot overflow int32)."""
    column = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    return column, column < columns, tl.zeros([BLOCK], dtype=tl.int64) + columns


@triton.jit
def _lif_forward_kernel(
    current,
    spikes,
    membrane,
    counts,
    STEPS: tl.constexpr,
    columns,
    beta,
    threshold,
    bound,
    COUNT: tl.constexpr,
    BLOCK: tl.constexpr,
):
    column, inside, stride = _program_columns(columns, BLOCK)
    v = tl.zeros([BLOCK], dtype=tl.float32)
    active = tl.zeros([BLOCK], dtype=tl.int32)
    for t in range(STEPS):
        at = t * stride + column
        u = beta * v + tl.load(current + at, mask=inside, other=0.0)
        s = (u >= threshold).to(tl.float32)
        tl.store(spikes + at, s, mask=inside)
        tl.store(membrane + at, u, mask=inside)
        if COUNT:
            active += (tl.abs(u - threshold) < bound).to(tl.int32)
        v = u * (1.0 - s)
    if COUNT:
        tl.store(counts + column, active, mask=inside)


def lif_forward(
    current: torch.Tensor, beta: float, threshold: float, bound: float | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(spikes, membrane, counts)`` of the LIF scan over ``current`` ``[T, ...]`` (float32):
    spikes 0/1 and the pre-reset membrane ``u`` in the current's shape; with ``bound``, each
    column's number of active entries (int32, the shape of one step)."""
    current = current.contiguous()
    steps = current.shape[0]
    columns = current[0].numel()
    spikes, membrane = torch.empty_like(current), torch.empty_like(current)
    counts = torch.empty(current.shape[1:], dtype=torch.int32, device=current.device)
    _lif_forward_kernel[_grid(columns)](
        current,
        spikes,
        membrane,
        counts,
        steps,
        columns,
        beta,
        threshold,
        0.0 if bound is None else bound,
        COUNT=bound is not None,
        BLOCK=_BLOCK,
        **_launch_options(),
    )
    return spikes, membrane, counts if bound is not None else None


@triton.jit
def _lif_backward_kernel(
    grad,
    grad_step_stride,
    surrogate_grad,
    spikes_u8,
    out,
    STEPS: tl.constexpr,
    columns,
    beta,
    BLOCK: tl.constexpr,
):
    column, inside, stride = _program_columns(columns, BLOCK)
    carry = tl.zeros([BLOCK], dtype=tl.float32)
    grad_stride = tl.zeros([BLOCK], dtype=tl.int64) + grad_step_stride
    for back in range(STEPS):
        t = STEPS - 1 - back
        at = t * stride + column
        g = tl.load(grad + t * grad_stride + column, mask=inside, other=0.0)
        slope = tl.load(surrogate_grad + at, mask=inside, other=0.0)
        keep = beta * (1.0 - tl.load(spikes_u8 + at, mask=inside, other=0).to(tl.float32))
        carry = g * slope + keep * carry
        tl.store(out + at, carry, mask=inside)


def lif_backward(
    grad_spikes: torch.Tensor, surrogate_grad: torch.Tensor, spikes_u8: torch.Tensor, beta: float
) -> torch.Tensor:
    """``d`` ``[T, C]`` of the dense BPTT recurrence; ``grad_spikes`` ``[T, C]`` may have
    step stride 0 (a gradient broadcast over time), its columns must be contiguous."""
    steps, columns = surrogate_grad.shape
    out = torch.empty_like(surrogate_grad)
    _lif_backward_kernel[_grid(columns)](
        grad_spikes,
        grad_spikes.stride(0),
        surrogate_grad.contiguous(),
        spikes_u8.contiguous(),
        out,
        steps,
        columns,
        beta,
        BLOCK=_BLOCK,
        **_launch_options(),
    )
    return out


@triton.jit
def _gather_entries_kernel(
    membrane,
    spikes,
    offsets,
    step_out,
    offset_out,
    successor_out,
    span_out,
    STEPS: tl.constexpr,
    columns,
    threshold,
    bound,
    BLOCK: tl.constexpr,
):
    column, inside, stride = _program_columns(columns, BLOCK)
    index = tl.load(offsets + column, mask=inside, other=0)
    last_event = tl.full([BLOCK], -1, dtype=tl.int32)
    open_entry = tl.full([BLOCK], -1, dtype=tl.int64)  # an entry whose successor is not yet known
    for t in range(STEPS):
        at = t * stride + column
        offset = tl.load(membrane + at, mask=inside, other=0.0) - threshold
        fired = tl.load(spikes + at, mask=inside, other=0.0) != 0
        active = (tl.abs(offset) < bound) & inside
        event = (active | fired) & inside
        link = active & (open_entry >= 0)
        tl.store(successor_out + tl.where(link, open_entry, 0), index, mask=link)
        tl.store(step_out + index, t, mask=active)
        tl.store(offset_out + index, offset, mask=active)
        tl.store(span_out + index, last_event + 1, mask=active)
        open_entry = tl.where(event, tl.where(active & ~fired, index, -1), open_entry)
        last_event = tl.where(event, t, last_event)
        index += active.to(tl.int64)


def gather_entries(
    membrane: torch.Tensor,
    spikes: torch.Tensor,
    offsets: torch.Tensor,
    count: int,
    threshold: float,
    bound: float,
) -> tuple[torch.Tensor, ...]:
    """The ``count`` active entries of ``membrane`` ``[T, C]`` column by column, then by time:
    ``(step int32, u - threshold, successor int64 (-1: none), span_start int32)``; ``offsets``:
    :func:`~spikeforge.neuron.sparse_torch.offsets_from_counts` of the counts from
    :func:`lif_forward` with the same ``bound``."""
    steps, columns = membrane.shape
    device = membrane.device
    step = torch.empty(count, dtype=torch.int32, device=device)
    offset = torch.empty(count, dtype=membrane.dtype, device=device)
    successor = torch.full((count,), -1, dtype=torch.int64, device=device)
    span_start = torch.empty(count, dtype=torch.int32, device=device)
    _gather_entries_kernel[_grid(columns)](
        membrane.contiguous(),
        spikes.contiguous(),
        offsets,
        step,
        offset,
        successor,
        span_start,
        steps,
        columns,
        threshold,
        bound,
        BLOCK=_BLOCK,
        **_launch_options(),
    )
    return step, offset, successor, span_start


@triton.jit
def _input_rows_kernel(
    inputs, offsets, out, rows, width, CHUNKS: tl.constexpr, BLOCK: tl.constexpr
):
    i = tl.program_id(0).to(tl.int64)
    base = tl.load(offsets + i)
    for chunk in range(CHUNKS):
        row = chunk * BLOCK + tl.arange(0, BLOCK)
        fired = tl.load(inputs + row.to(tl.int64) * width + i, mask=row < rows, other=0) != 0
        ones = fired.to(tl.int32)
        tl.store(out + base + tl.cumsum(ones, 0) - ones, row, mask=fired)
        base += tl.sum(ones, 0)


def input_rows(inputs_u8: torch.Tensor, offsets: torch.Tensor, count: int) -> torch.Tensor:
    """The transposed 0/1 input ``X^T`` of ``inputs_u8`` ``[R, I]`` in compressed sparse rows,
    as :func:`spikeforge.neuron.sparse_torch.compact_input` keeps it: one int32 tensor of the
    ``I + 1`` row offsets (``offsets``: the spikes per input through
    :func:`~spikeforge.neuron.sparse_torch.offsets_from_counts`) and then the ``count`` row
    numbers of the spikes, input by input, in order."""
    rows, width = inputs_u8.shape
    kept = torch.empty(width + 1 + count, dtype=torch.int32, device=inputs_u8.device)
    kept[: width + 1] = offsets
    block = 1024
    _input_rows_kernel[(width,)](
        inputs_u8.contiguous(),
        offsets,
        kept[width + 1 :],
        rows,
        width,
        CHUNKS=triton.cdiv(rows, block),
        BLOCK=block,
    )
    return kept


@triton.jit
def _sparse_backward_kernel(
    grad,
    grad_step_stride,
    grad_counts,
    offsets,
    step,
    surrogate,
    successor,
    span_start,
    out,
    STEPS: tl.constexpr,
    columns,
    beta,
    HAS_GRAD: tl.constexpr,
    HAS_COUNTS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    column, inside, stride = _program_columns(columns, BLOCK)
    first = tl.load(offsets + column, mask=inside, other=0)
    entry = tl.load(offsets + column + 1, mask=inside, other=0) - 1  # the column's last entry
    extra = tl.zeros([BLOCK], dtype=tl.float32)
    if HAS_COUNTS:  # d(sum_t s[t])/ds[t] = 1 at every step
        extra = tl.load(grad_counts + column, mask=inside, other=0.0)
    carry = tl.zeros([BLOCK], dtype=tl.float32)
    grad_stride = tl.zeros([BLOCK], dtype=tl.int64) + grad_step_stride
    span = tl.full([BLOCK], STEPS, dtype=tl.int32)  # no open span yet
    for back in range(STEPS):
        t = STEPS - 1 - back
        has = entry >= first
        safe = tl.where(has, entry, 0)
        hit = has & (tl.load(step + safe, mask=has, other=-1) == t)
        g = extra
        if HAS_GRAD:
            g = tl.load(grad + t * grad_stride + column, mask=hit, other=0.0) + extra
        a = g * tl.load(surrogate + safe, mask=hit, other=0.0)
        chained = tl.load(successor + safe, mask=hit, other=-1) >= 0
        at_entry = a + tl.where(chained, beta * carry, 0.0)
        between = tl.where(t >= span, beta * carry, 0.0)
        carry = tl.where(hit, at_entry, between)
        span = tl.where(hit, tl.load(span_start + safe, mask=hit, other=0), span)
        entry = tl.where(hit, entry - 1, entry)
        tl.store(out + t * stride + column, carry, mask=inside)


def sparse_backward_current(
    grad_spikes: torch.Tensor | None,
    grad_counts: torch.Tensor | None,
    entries: tuple[torch.Tensor, ...],
    steps: int,
    beta: float,
) -> torch.Tensor:
    """``D`` ``[T, C]`` (``dL/dnet``, zero outside the entries' spans) from ``g = dL/ds`` at
    the entries (the column ``offsets``, then ``step, sigma', successor, span_start`` as
    :func:`gather_entries` lists them);
    ``grad_spikes`` ``[T, C]`` (step stride may be 0), ``grad_counts`` ``[C]``: either may be
    None."""
    offsets, step, surrogate, successor, span_start = entries
    columns = offsets.shape[0] - 1
    out = torch.empty(steps, columns, dtype=surrogate.dtype, device=surrogate.device)
    _sparse_backward_kernel[_grid(columns)](
        out if grad_spikes is None else grad_spikes,
        0 if grad_spikes is None else grad_spikes.stride(0),
        out if grad_counts is None else grad_counts.contiguous(),
        offsets,
        step,
        surrogate,
        successor,
        span_start,
        out,
        steps,
        columns,
        beta,
        HAS_GRAD=grad_spikes is not None,
        HAS_COUNTS=grad_counts is not None,
        BLOCK=_BLOCK,
        **_launch_options(),
    )
    return out

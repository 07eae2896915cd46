"""Compressed rows of a 0/1 spike tensor, carried on the tensor by the code that made it.

A sparse-backward layer on the CPU reads its input as compressed rows: for each row
``r = t * B + b`` of the ``[T*B, N]`` view of time-major spikes ``[T, B, N]``, the columns of its
ones in ascending order (``offsets`` ``[T*B + 1]`` int64, ``columns`` of :func:`column_dtype`).
An encoder that already knows where its spikes are (the latency code: one spike per input at a
known step) attaches them with :func:`attach_rows`, and the layer takes them with
:func:`attached_rows` instead of scanning the whole tensor for its ones. The record is tied to the
tensor's version counter: after any in-place change to the tensor (or to a view of it) it is no
longer returned, and the layer scans the tensor as it would without it.
"""

from __future__ import annotations

import torch

__all__ = ["attach_rows", "attached_rows", "column_dtype"]

_ATTRIBUTE = "_spikeforge_spike_rows"


def column_dtype(width: int) -> torch.dtype:
    """The integer type of the column indices of compressed rows ``width`` wide."""
    return torch.int16 if width <= 32767 else torch.int32


def attach_rows(spikes: torch.Tensor, offsets: torch.Tensor, columns: torch.Tensor) -> None:
    """Record ``(offsets, columns)`` as the compressed rows of ``spikes`` ``[T, B, N]`` as it
    is now."""
    setattr(spikes, _ATTRIBUTE, (spikes._version, offsets, columns))


def attached_rows(spikes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The rows recorded by :func:`attach_rows`, or None if there are none or ``spikes`` was
    changed in place since."""
    record = getattr(spikes, _ATTRIBUTE, None)
    if record is None:
        return None
    version, offsets, columns = record
    return (offsets, columns) if spikes._version == version else None

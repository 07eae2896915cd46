"""Run PyTorch's CPU vector-math kernels once, on one thread, before any multi-threaded use.

In the torch 2.13.0 CPU wheel, the first multi-threaded ``exp`` of a large float32 tensor (the
exponential surrogate of :mod:`spikeforge.neuron.lif`, ``[T, B*N]``) sometimes came out with about
11 correct bits in the half of the tensor the main thread computed: relative errors near 1e-4
instead of 1e-7. Only that first call was affected. We measured it in about 1 process in 4 to 8 of a
fresh ``make`` virtualenv with 2 threads and Numba's OpenMP threads active. It made the same
config train differently from one run to the next (``make demo``: 94.50% in most runs, 94.59%
or 94.78% in others). After one call on a tensor too small to be split across threads, every
later call gave the accurate result in every process we ran (24 of 24, against 12 of 16
without). The cause looks like lazily initialised, per-thread state in the vector-math library
that a concurrent first call leaves wrong. The modules that make such calls run
:func:`warm_up` when they are imported; it costs microseconds.
"""

from __future__ import annotations

import torch

__all__ = ["warm_up"]

_DONE = False


def warm_up() -> None:
    """Call ``exp``, ``log`` and ``sqrt`` once each, float32 and float64, on 64 elements (one
    thread: far below torch's grain for splitting work)."""
    global _DONE
    if _DONE:
        return
    for dtype in (torch.float32, torch.float64):
        x = torch.full((64,), 0.5, dtype=dtype)
        torch.exp(x)
        torch.log(x)
        torch.sqrt(x)
    _DONE = True

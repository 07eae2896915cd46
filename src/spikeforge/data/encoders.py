"""Encoders from intensities ``[B, N]`` in [0, 1] to time-major spikes ``[T, B, N]`` (uint8).

* Rate (Poisson/Bernoulli) coding, as in Bondarev: at every step an input of intensity p spikes
  with probability p, independently.
* Latency (time-to-first-spike) coding, as in Perez-Nieves & Goodman 2021 (after Zenke's
  tutorials): an input of intensity x > x_thr spikes once, at ``t = tau * ln(x / (x - x_thr))``
  milliseconds; dimmer inputs never spike.
"""

from __future__ import annotations

import torch

from spikeforge import _vector_math
from spikeforge._spike_rows import attach_rows, column_dtype

_vector_math.warm_up()  # before any multi-threaded log: see spikeforge._vector_math

__all__ = ["poisson_encode", "latency_encode"]


def _check_intensities(intensities: torch.Tensor) -> None:
    if intensities.dim() != 2:
        raise ValueError(
            f"encoders take intensities of shape [B, N]; got {tuple(intensities.shape)} "
            "(flatten images first, e.g. images.flatten(1) / 255)"
        )
    if not intensities.is_floating_point():
        raise ValueError("encoders take float intensities in [0, 1]; divide uint8 pixels by 255")
    if torch.isnan(intensities).any():
        raise ValueError("intensities contain NaN; clean the input before encoding")
    if intensities.numel() == 0:  # an empty batch: an empty code
        return
    low, high = float(intensities.min()), float(intensities.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"intensities must lie in [0, 1]; got values in [{low:.3g}, {high:.3g}]")


def poisson_encode(
    intensities: torch.Tensor,
    steps: int,
    generator: torch.Generator | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Bernoulli rate coding: ``spikes[t, b, i] ~ Bernoulli(intensities[b, i])``.

    Args:
        intensities: ``[B, N]`` floats in [0, 1].
        steps: number of time steps T (>= 1).
        generator: seeds the draw; the same generator state gives the same spikes.
        backend: ``numba`` (CPU, a counter-based stream: cost scales with non-zero inputs),
            ``torch`` (``torch.rand`` on the input's device), or ``auto`` (numba on CPU).

    Returns:
        uint8 spikes ``[T, B, N]`` on the input's device.
    """
    _check_intensities(intensities)
    if steps < 1:
        raise ValueError(f"steps must be at least 1; got {steps}")
    batch, inputs = intensities.shape
    use_numba = backend == "numba" or (backend == "auto" and intensities.device.type == "cpu")
    if use_numba:
        try:
            from spikeforge.data import _encoder_kernels as kernels
        except ImportError:
            if backend == "numba":
                raise ImportError("backend 'numba' needs Numba: pip install numba") from None
            use_numba = False
    if use_numba:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        out = torch.empty((steps, batch, inputs), dtype=torch.uint8)
        probability = intensities.detach().to(torch.float32).contiguous()
        kernels.bernoulli_spikes(probability.numpy(), steps, seed, out.numpy())
        return out
    if backend not in ("auto", "torch"):
        raise ValueError(f"unknown backend {backend!r}; choose auto, torch or numba")
    draws = torch.rand(
        (steps, batch, inputs), generator=generator, device=intensities.device, dtype=torch.float32
    )
    return (draws < intensities.to(torch.float32)).to(torch.uint8)


def latency_encode(
    intensities: torch.Tensor,
    steps: int,
    tau: float = 20.0,
    intensity_threshold: float = 0.2,
    dt: float = 1.0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Time-to-first-spike coding: one spike per input at ``tau * ln(x / (x - x_thr))`` ms.

    Args:
        intensities: ``[B, N]`` floats in [0, 1].
        steps: number of time steps T; spikes later than ``(T - 1) * dt`` are dropped.
        tau: effective time constant in ms (20 in Perez-Nieves & Goodman's code).
        intensity_threshold: x_thr; inputs at or below it never spike (0.2 there).
        dt: step length in ms.
        device: where to build the code (default: the intensities' device). The spike steps are
            computed where the intensities are, and only they move (``[B, N]`` int64 instead of
            the ``[T, B, N]`` uint8 code), so the code is the same on every device.

    Returns:
        uint8 spikes ``[T, B, N]``, at most one spike per input. On the CPU (with Numba) the
        tensor also carries its ones as compressed rows (:mod:`spikeforge._spike_rows`), which
        a sparse-backward layer reads instead of scanning the tensor.
    """
    _check_intensities(intensities)
    if steps < 1:
        raise ValueError(f"steps must be at least 1; got {steps}")
    x = intensities.to(torch.float32)
    fires = x > intensity_threshold
    safe = torch.where(fires, x, torch.ones_like(x))
    time_ms = tau * torch.log(safe / (safe - intensity_threshold).clamp_min(1e-12))
    step = torch.floor(time_ms / dt).long()
    step = torch.where(fires & (step < steps), step, -1)  # -1: no spike
    device = x.device if device is None else torch.device(device)
    step = step.to(device)
    out = torch.zeros((steps, *x.shape), dtype=torch.uint8, device=device)
    if device.type == "cpu":
        try:
            from spikeforge.data import _encoder_kernels as kernels
        except ImportError:  # no Numba: the PyTorch code below
            kernels = None
        if kernels is not None:
            batch, inputs = x.shape
            offsets = torch.empty(steps * batch + 1, dtype=torch.int64)
            columns = torch.empty(int((step >= 0).sum()), dtype=column_dtype(inputs))
            kernels.latency_spikes(
                step.contiguous().numpy(), steps, out.numpy(), offsets.numpy(), columns.numpy()
            )
            attach_rows(out, offsets, columns)
            return out
    batch_idx, input_idx = (step >= 0).nonzero(as_tuple=True)
    out[step[batch_idx, input_idx], batch_idx, input_idx] = 1
    return out

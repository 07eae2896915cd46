"""Convolutional STDP with winner-take-all LIF neurons, learned window by window or with
mini-batches of convolution windows.

Method: Shimmyo & Okuyama, "Mini-batch training along convolution windows for representation
learning based on spike time dependent plasticity rule"; the layer follows Tavanaei, Kirby &
Maida (2018), "Training spiking ConvNets by STDP and gradient descent".

A layer holds ``k`` filters ``w[k, p*p]`` with weights in [0, 1]. Each ``p x p`` window of an
input spike map (zero padded, one window per pixel) drives ``k`` LIF neurons for ``T`` steps::

    v_j(t) = beta * v_j(t-1) + sum_i w_ji x_i(t)
    j* = argmax_j v_j(t) spikes if v_j*(t) >= threshold; every v of that window then resets to 0

(winner-take-all: lateral inhibition between the filters at one location; ties go to the lower
filter index). The rule, applied at each postsynaptic spike of filter ``j`` at step ``t``::

    dw_ji = a (1 - w_ji)   if input i spiked in the last ``pre_window`` steps (t - pre_window, t]
    dw_ji = a (0 - w_ji)   otherwise

i.e. ``dw_j = a (pre - w_j)`` with ``pre`` in {0, 1}; weights stay in [0, 1] (clipped).

Order of computation (``window_batch = n``): windows are taken in order (image, row, column) and
``n`` consecutive windows are simulated with the same filters at once; each window's update is the
sum over its postsynaptic spikes, and the batch applies the mean of those updates (per filter
over the windows in which it fired, ``average = "firing"``, or over all ``n`` windows, ``"all"``)
in one step. ``n = 1`` is the conventional sequential order: each window's update is applied
before the next window is computed. A window whose inputs never spike cannot make an output
spike (thresholds are positive), so it is skipped in every order; the result is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "AVERAGES",
    "ConvSTDPParams",
    "image_windows",
    "wta_lif_scan",
    "presynaptic_activity",
    "window_stdp_update",
    "average_update",
    "apply_update",
    "learn_window_batch",
    "learn_windows",
    "reconstruct",
    "reconstruction_errors",
    "conv_wta_spikes",
    "conv_wta_pooled",
    "initial_filters",
]

AVERAGES = ("firing", "all")


@dataclass(frozen=True)
class ConvSTDPParams:
    """Settings of the layer and its rule.

    Attributes:
        kernel: filter side ``p`` (windows are ``p x p``; Tavanaei: 5).
        beta: membrane leak per step (1 = integrate-and-fire).
        threshold: firing threshold ``s`` (> 0).
        learning_rate: ``a`` of the rule, in (0, 1].
        pre_window: steps ``L`` an input spike counts as "spiked" for the rule (>= 1).
        average: batch reduction of the per-window updates, ``firing`` or ``all``.
    """

    kernel: int = 5
    beta: float = 1.0
    threshold: float = 4.0
    learning_rate: float = 0.01
    pre_window: int = 1
    average: str = "firing"

    def __post_init__(self) -> None:
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"kernel must be a positive odd number; got {self.kernel}")
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta must lie in [0, 1]; got {self.beta}")
        if not 0.0 < self.threshold < float("inf"):
            raise ValueError(f"threshold must be positive; got {self.threshold}")
        if not 0.0 < self.learning_rate <= 1.0:
            raise ValueError(f"learning_rate must lie in (0, 1]; got {self.learning_rate}")
        if self.pre_window < 1:
            raise ValueError(f"pre_window must be at least 1; got {self.pre_window}")
        if self.average not in AVERAGES:
            raise ValueError(f"average must be one of {', '.join(AVERAGES)}; got {self.average!r}")


def initial_filters(
    filters: int, kernel: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Filters ``w[k, p*p]`` drawn uniformly from [0, 1] (float32)."""
    return torch.rand((filters, kernel * kernel), generator=generator)


def image_windows(maps: torch.Tensor, kernel: int) -> torch.Tensor:
    """Every ``p x p`` window of zero-padded maps, one per pixel.

    Args:
        maps: ``[..., B, H, W]`` (e.g. spikes ``[T, B, H, W]`` or intensities ``[B, H, W]``).
        kernel: ``p`` (odd).

    Returns:
        ``[B * H * W, ..., p * p]`` windows in order (image, row, column), same dtype.
    """
    pad = kernel // 2
    lead = maps.dim() - 3
    padded = F.pad(maps, (pad, pad, pad, pad))
    views = padded.unfold(-2, kernel, 1).unfold(-2, kernel, 1)  # [..., B, H, W, p, p]
    order = (lead, lead + 1, lead + 2, *range(lead))
    views = views.permute(*order, lead + 3, lead + 4)  # [B, H, W, ..., p, p]
    batch, height, width = views.shape[:3]
    return views.reshape(batch * height * width, *views.shape[3 : 3 + lead], kernel * kernel)


def wta_lif_scan(currents: torch.Tensor, beta: float, threshold: float) -> torch.Tensor:
    """Winner-take-all LIF over time for independent windows.

    ``v(t) = beta v(t-1) + I(t)``; the neuron with the largest ``v`` spikes if it reaches
    ``threshold``, and that window's potentials reset to 0.

    Args:
        currents: ``I[n, T, k]`` input currents of ``n`` windows, ``k`` filters (a transposed
            view of a time-major ``[T, n, k]`` tensor is read without a copy).

    Returns:
        uint8 spikes ``[n, T, k]`` (at most one per window and step), a view of a time-major
        tensor.
    """
    n, steps, k = currents.shape
    by_step = currents.transpose(0, 1)  # [T, n, k]
    spikes = torch.zeros((steps, n, k), dtype=torch.uint8, device=currents.device)
    potential = currents.new_zeros((n, k))
    for t in range(steps):
        potential.mul_(beta).add_(by_step[t])
        top, winner = potential.max(dim=1)
        fired = (top >= threshold).nonzero().squeeze(1)
        if fired.numel():
            spikes[t, fired, winner[fired]] = 1
            potential[fired] = 0.0
    return spikes.transpose(0, 1)


def presynaptic_activity(windows: torch.Tensor, pre_window: int) -> torch.Tensor:
    """``pre[n, t, i] = 1`` if input ``i`` spiked at a step in ``(t - pre_window, t]``.

    Args:
        windows: 0/1 input spikes ``[n, T, P]`` (float).
    """
    if pre_window == 1:
        return windows
    total = windows.cumsum(dim=1)
    before = torch.zeros_like(total)
    before[:, pre_window:] = total[:, :-pre_window]
    return ((total - before) > 0).to(windows.dtype)


def window_stdp_update(
    weights: torch.Tensor, pre: torch.Tensor, post: torch.Tensor, learning_rate: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed update of a batch of windows and how many windows each filter fired in.

    ``sum_m dw^(m)_j = a * (sum_{m,t} post[m,t,j] pre[m,t,:] - (sum_{m,t} post[m,t,j]) w_j)``:
    one matrix product over all windows and steps.

    Args:
        weights: ``w[k, P]`` used to simulate the batch.
        pre: presynaptic indicator ``[n, T, P]`` (:func:`presynaptic_activity`).
        post: output spikes ``[n, T, k]``.
        learning_rate: ``a``.

    Returns:
        ``(summed_update [k, P], firing_windows [k])``.
    """
    k, inputs = weights.shape
    flat_post = post.reshape(-1, k)
    potentiation = flat_post.T @ pre.reshape(-1, inputs)
    spikes_per_filter = flat_post.sum(dim=0)
    summed = learning_rate * (potentiation - spikes_per_filter[:, None] * weights)
    firing_windows = (post.sum(dim=1) > 0).sum(dim=0)
    return summed, firing_windows


def average_update(
    summed: torch.Tensor, firing_windows: torch.Tensor, windows: int, average: str
) -> torch.Tensor:
    """Mean update of a batch: per filter over the windows it fired in (``firing``) or over
    all ``windows`` of the batch (``all``). With one window both are that window's update."""
    if average == "firing":
        return summed / firing_windows.clamp_min(1).to(summed.dtype)[:, None]
    if average == "all":
        return summed / max(windows, 1)
    raise ValueError(f"average must be one of {', '.join(AVERAGES)}; got {average!r}")


def apply_update(weights: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
    """``clip(w + dw, 0, 1)`` (a new tensor)."""
    return (weights + update).clamp_(0.0, 1.0)


def learn_window_batch(
    weights: torch.Tensor, windows: torch.Tensor, params: ConvSTDPParams, learn: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Simulate one batch of windows with the same filters and apply the averaged update.

    Args:
        weights: filters ``w[k, P]``.
        windows: 0/1 input spikes ``[n, T, P]`` (any dtype).
        params: layer and rule settings.
        learn: False simulates only.

    Returns:
        ``(new_weights, counts [n, k], kept [n] bool)``: output spike counts of each window and
        which windows had input spikes (the others were skipped; their counts are 0).
    """
    n = windows.shape[0]
    kept = windows.reshape(n, -1).amax(dim=1) > 0
    counts = weights.new_zeros((n, weights.shape[0]))
    if not bool(kept.any()):
        return weights, counts, kept
    active = windows[kept].to(weights.dtype)
    currents = active @ weights.T  # [m, T, k]
    post = wta_lif_scan(currents, params.beta, params.threshold).to(weights.dtype)
    counts[kept] = post.sum(dim=1)
    if learn:
        pre = presynaptic_activity(active, params.pre_window)
        summed, firing = window_stdp_update(weights, pre, post, params.learning_rate)
        weights = apply_update(weights, average_update(summed, firing, n, params.average))
    return weights, counts, kept


def learn_windows(
    weights: torch.Tensor,
    windows: torch.Tensor,
    window_batch: int,
    params: ConvSTDPParams,
    learn: bool = True,
    intensities: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Learn from windows in order, ``window_batch`` at a time (the last batch may be shorter).

    Args:
        weights: filters ``w[k, P]``.
        windows: 0/1 input spikes ``[n, T, P]`` in order.
        window_batch: windows simulated with the same filters before an update (1 = sequential).
        params: layer and rule settings.
        learn: False simulates only (one batch of all windows).
        intensities: optional ``[n, P]`` window intensities; when given, each window's
            reconstruction error (:func:`reconstruction_errors`) is computed with the filters
            that simulated it.

    Returns:
        ``(new_weights, counts [n, k], errors [n] or None)``.
    """
    if window_batch < 1:
        raise ValueError(f"window_batch must be at least 1; got {window_batch}")
    n = windows.shape[0]
    step = window_batch if learn else max(n, 1)
    counts = weights.new_zeros((n, weights.shape[0]))
    errors = None if intensities is None else weights.new_zeros(n)
    for start in range(0, n, step):
        stop = min(start + step, n)
        used = weights
        weights, counts[start:stop], _ = learn_window_batch(
            weights, windows[start:stop], params, learn
        )
        if errors is not None:
            errors[start:stop] = reconstruction_errors(
                intensities[start:stop], counts[start:stop], used
            )
    return weights, counts, errors


def reconstruct(counts: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Each window rebuilt from the filters weighted by its spike counts (its sparse code).

    ``x_hat = sum_j c_j w_j / sum_j c_j`` (0 for a window without output spikes). With one
    spike per window this is the winning filter itself.

    Args:
        counts: output spike counts ``c[n, k]``.
        weights: filters ``w[k, P]``.

    Returns:
        ``[n, P]``.
    """
    total = counts.sum(dim=1, keepdim=True)
    return (counts @ weights) / total.clamp_min(1.0)


def reconstruction_errors(
    intensities: torch.Tensor, counts: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Squared error of each window's reconstruction summed over its pixels.

    ``e_n = sum_i (x_ni - x_hat_ni)^2`` with ``x`` the window's intensities in [0, 1]; the
    reconstruction MSE of an image is ``sum_n e_n / (H W P)`` over its ``H W`` windows.

    Args:
        intensities: ``[n, P]``; counts: ``[n, k]``; weights: ``[k, P]``.

    Returns:
        ``[n]``.
    """
    return ((intensities - reconstruct(counts, weights)) ** 2).sum(dim=1)


def conv_wta_spikes(
    spikes: torch.Tensor, filters: torch.Tensor, params: ConvSTDPParams, channels_last: bool = False
) -> torch.Tensor:
    """The layer over whole spike maps: ``[T, B, H, W]`` -> ``[T, B, k, H, W]`` (uint8).

    The currents of all windows come from one ``conv2d`` (same padding); the winner-take-all
    scan is :func:`wta_lif_scan`, so this equals simulating each window on its own.

    Args:
        spikes: 0/1 input maps ``[T, B, H, W]``.
        filters: ``w[k, p*p]``.
        params: layer settings.
        channels_last: return ``[T, B, H, W, k]`` instead (no transposing copy).
    """
    steps, batch, height, width = spikes.shape
    k = filters.shape[0]
    kernel = params.kernel
    x = spikes.reshape(steps * batch, 1, height, width).to(filters.dtype)
    currents = F.conv2d(x, filters.reshape(k, 1, kernel, kernel), padding=kernel // 2)
    # [T*B, k, H, W] -> time-major windows [T, B*H*W, k], read by the scan as [n, T, k].
    by_step = currents.reshape(steps, batch, k, height * width).transpose(2, 3)
    by_step = by_step.reshape(steps, batch * height * width, k)
    out = wta_lif_scan(by_step.transpose(0, 1), params.beta, params.threshold).transpose(0, 1)
    out = out.reshape(steps, batch, height, width, k)
    return out if channels_last else out.permute(0, 1, 4, 2, 3)


def conv_wta_pooled(
    spikes: torch.Tensor,
    filters: torch.Tensor,
    params: ConvSTDPParams,
    pool: int,
    backend: str = "auto",
) -> torch.Tensor:
    """The layer followed by OR pooling: ``[T, B, H, W]`` -> ``[T, B, H/pool, W/pool, k]``.

    A pooled unit spikes at a step when any layer unit in its ``pool x pool`` block does (max
    pooling of binary spikes); rows and columns beyond a whole block are dropped.

    Args:
        spikes: 0/1 input maps ``[T, B, H, W]``.
        filters: ``w[k, p*p]``.
        params: layer settings.
        pool: block size and stride (1: no pooling).
        backend: ``torch`` (:func:`conv_wta_spikes`; any device), ``numba`` (a fused kernel
            driven by the input spikes; CPU) or ``auto`` (numba on CPU when installed).

    Returns:
        uint8 ``[T, B, H // pool, W // pool, k]``.
    """
    if backend not in ("auto", "torch", "numba"):
        raise ValueError(f"unknown backend {backend!r}; choose auto, torch or numba")
    on_cpu = spikes.device.type == "cpu"
    if backend == "numba" and not on_cpu:
        raise ValueError("backend 'numba' runs on CPU only; use backend 'torch' on CUDA")
    if backend in ("auto", "numba") and on_cpu:
        try:
            from spikeforge.stdp import _conv_kernels
        except ImportError:
            if backend == "numba":
                raise ImportError("backend 'numba' needs Numba: pip install numba") from None
        else:
            steps, batch, height, width = spikes.shape
            k = filters.shape[0]
            out = torch.zeros((steps, batch, height // pool, width // pool, k), dtype=torch.uint8)
            _conv_kernels.conv_wta_pool(
                spikes.to(torch.uint8).contiguous().numpy(),
                filters.detach().to(torch.float32).reshape(k, params.kernel, params.kernel).numpy(),
                float(params.beta),
                float(params.threshold),
                pool,
                out.numpy(),
            )
            return out
    maps = conv_wta_spikes(spikes, filters, params, channels_last=True)
    height, width = maps.shape[2], maps.shape[3]
    rows, cols = height // pool, width // pool
    pooled = maps[:, :, 0 : rows * pool : pool, 0 : cols * pool : pool]
    for dy in range(pool):  # OR over the block: cheaper than amax on uint8
        for dx in range(pool):
            if dy or dx:
                pooled = pooled | maps[:, :, dy : rows * pool : pool, dx : cols * pool : pool]
    return pooled.contiguous()

"""Batched mode of the Diehl & Cook (2015) network: several images at once, updates averaged.

A DIFFERENT ORDER OF COMPUTATION from the per-image reference (:func:`present_image`), for GPUs.
The per-image semantics apply each image's STDP updates before the next image is shown; here a
batch of B images is shown to B copies of the network that all start from the same point, and
their learning is combined only at the end of the batch. With B = 1 it is the reference exactly
(tested to 1e-10); with B > 1 results change, as they do in BindsNET with batch > 1, so the batch
size and the reduction are named settings. The idea is the mini-batch STDP of Shimmyo & Okuyama
(applied there to the windows of a convolutional layer, :mod:`spikeforge.stdp.conv`), applied here
across images; the network itself is Diehl & Cook (2015), see :mod:`spikeforge.stdp.diehl_cook`.

One batch of images ``x_1 .. x_B`` from weights ``w`` [K, N], thresholds ``theta`` [N] and
state ``s``:

1. when learning, ``w <- normalize_columns(w)`` (as :func:`present_image` before a presentation);
2. copy b (b = 1..B) starts from ``(w, theta, s)`` and runs the reference dynamics of
   :func:`simulate_reference` step for step, with its own weights ``w_b``: its STDP (pre-spike
   depression, post-spike potentiation, clipping to ``[0, w_max]``) changes ``w_b`` during the
   presentation, exactly as the reference changes ``w`` during one image;
3. the re-show rule per copy: a copy whose excitatory layer fired fewer than ``min_spikes`` times
   is shown its image again, brighter by ``rate_step_hz``, after normalising its own ``w_b``
   (the copies still pending run together as a smaller batch), at most ``max_presentations``
   times; all its presentations count in its change;
4. reduction (``reduction``), with ``Δw_b = w_b - w`` and ``Δθ_b = θ_b - θ``:

   - ``mean``: ``w <- w + mean_b Δw_b`` and ``θ <- θ + mean_b Δθ_b`` (computed as
     ``mean_b w_b``: a convex combination of weights each of which the reference rule kept in
     bounds, so no clipping is needed);
   - ``sum``: ``w <- clip(w + Σ_b Δw_b, 0, w_max)`` on the entries that changed (the reference
     clips only what it updates), ``θ <- θ + Σ_b Δθ_b`` (B images' worth of growth and decay);

5. the rest of the state (membranes, conductances, traces, refractory counters, last spikes,
   clock) becomes that of the batch's last image, as if it had been shown last.

Input spikes are drawn with :func:`poisson_events` from one generator in the order (attempt,
image): every image's first presentation, then the second presentations of the images still
pending, and so on. With B = 1 this is the reference's order.

The simulation is vectorised torch over a leading batch axis and runs on CPU or CUDA unchanged;
float64 (default) matches the NumPy reference, float32 is allowed. Per step it touches only the
weight rows of inputs that spiked and the columns of neurons that spiked (gathers and scatters),
like the event-driven Numba engine, so its cost is O(B (N + spikes x N)) per step.
"""

from __future__ import annotations

import numpy as np
import torch

from spikeforge import _vector_math
from spikeforge.stdp.diehl_cook import (
    FLUSH_BELOW,
    DiehlCookNetwork,
    DiehlCookParams,
    NetworkState,
    events_to_raster,
    poisson_events,
)
from spikeforge.stdp.rules import normalize_columns

_vector_math.warm_up()  # before any multi-threaded exp: see spikeforge._vector_math

__all__ = ["BATCH_REDUCTIONS", "simulate_batch", "present_batch", "run_images_batched"]

BATCH_REDUCTIONS = ("mean", "sum")

_INTEGER_FIELDS = ("refractory_exc", "refractory_inh", "gap_exc", "pre_last", "clock")
_FLAG_FIELDS = ("exc_spiked", "inh_spiked")


def _flush(values: torch.Tensor) -> torch.Tensor:
    """Values below :data:`FLUSH_BELOW` set to 0 (all quantities flushed are >= 0)."""
    return torch.where(values < FLUSH_BELOW, torch.zeros_like(values), values)


def _implicit_step(
    v: torch.Tensor,
    step_over_tau: float,
    rest: float,
    g_exc: torch.Tensor,
    e_exc: float,
    g_inh: torch.Tensor,
    e_inh: float,
) -> torch.Tensor:
    """Backward-Euler membrane step, as :func:`spikeforge.stdp.diehl_cook._implicit_step`."""
    return (v + step_over_tau * (rest + g_exc * e_exc + g_inh * e_inh)) / (
        1.0 + step_over_tau * (1.0 + g_exc + g_inh)
    )


def _stack_state(
    state: NetworkState, batch: int, device: torch.device, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """B copies of ``state``: every array gets a leading batch axis [B, ...]."""
    out = {}
    for name, value in state.arrays().items():
        tensor = torch.from_numpy(np.ascontiguousarray(value)).to(device)
        if name in _FLAG_FIELDS:
            tensor = tensor.bool()
        elif name not in _INTEGER_FIELDS:
            tensor = tensor.to(dtype)
        out[name] = tensor.unsqueeze(0).repeat(batch, *([1] * tensor.dim()))
    return out


def _normalize(weights: torch.Tensor, total: float) -> torch.Tensor:
    """:func:`normalize_columns` of each [K, N] matrix of ``weights`` [B, K, N]."""
    sums = weights.sum(dim=1, keepdim=True)
    scale = torch.where(sums > 0, total / sums, torch.zeros_like(sums))
    return weights * scale


def simulate_batch(
    params: DiehlCookParams,
    state: dict[str, torch.Tensor],
    weights: torch.Tensor,
    rasters: torch.Tensor,
    steps_rest: int,
    learn: bool,
) -> torch.Tensor:
    """One presentation of B images to B network copies: :func:`simulate_reference` with a
    leading batch axis on every array, each copy learning into its own weights.

    Args:
        params: model constants.
        state: the :class:`NetworkState` fields as tensors [B, ...] (``clock`` [B, 1], spike flags
            bool), updated in place.
        weights: each copy's input -> excitatory weights [B, K, N], updated in place when
            ``learn``.
        rasters: input spikes, bool [B, steps_on, K]; then ``steps_rest`` silent steps follow.
        steps_rest: silent steps after the image.
        learn: apply STDP and adapt theta.

    Returns:
        Excitatory spike counts during the ``steps_on`` steps, int64 [B, N].
    """
    p, s = params, state
    batch, _, n_neurons = weights.shape
    steps_on = rasters.shape[1]
    dt = p.dt
    f = p.step_factors()  # per-step decay factors
    refractory_exc, refractory_inh, gap_exc = p.refractory_steps()
    conductance = p.neuron_model == "conductance"
    counts = torch.zeros(batch, n_neurons, dtype=torch.int64, device=weights.device)
    for t in range(steps_on + steps_rest):
        # 1. synaptic input: the weight rows of this step's input spikes, last step's exc/inh
        input_drive = torch.zeros_like(s["v_exc"])
        image_of = input_of = None
        if t < steps_on:
            pre_spikes = rasters[:, t]
            image_of, input_of = pre_spikes.nonzero(as_tuple=True)
            input_drive.index_add_(0, image_of, weights[image_of, input_of])
        inh_spiked = s["inh_spiked"].to(weights.dtype)
        inhibition = p.inh_to_exc * (inh_spiked.sum(1, keepdim=True) - inh_spiked)
        excitation = p.exc_to_inh * s["exc_spiked"].to(weights.dtype)
        s["post1"] = _flush(s["post1"] * f.decay_post1)
        s["post2"] = _flush(s["post2"] * f.decay_post2)
        # 2. depression at presynaptic spikes (after the weights were read)
        if image_of is not None:
            if learn and image_of.numel():
                depressed = weights[image_of, input_of] + -p.nu_pre * s["post1"][image_of]
                weights[image_of, input_of] = depressed.clamp(0.0, p.w_max)
            s["pre_last"] = torch.where(pre_spikes, s["clock"], s["pre_last"])
        # 3. membranes
        free_exc, free_inh = s["refractory_exc"] == 0, s["refractory_inh"] == 0
        s["refractory_exc"] = torch.where(free_exc, s["refractory_exc"], s["refractory_exc"] - 1)
        s["refractory_inh"] = torch.where(free_inh, s["refractory_inh"], s["refractory_inh"] - 1)
        s["gap_exc"] = torch.where(s["gap_exc"] > 0, s["gap_exc"] - 1, s["gap_exc"])
        if conductance:
            s["ge_exc"] = _flush(s["ge_exc"] * f.decay_ge + input_drive)
            s["gi_exc"] = _flush(s["gi_exc"] * f.decay_gi + inhibition)
            s["ge_inh"] = _flush(s["ge_inh"] * f.decay_ge + excitation)
            s["gi_inh"] = _flush(s["gi_inh"] * f.decay_gi)
            v_exc = _implicit_step(
                s["v_exc"], dt / p.exc_tau, p.exc_rest,
                f.mean_ge * s["ge_exc"], p.exc_e_rev, f.mean_gi * s["gi_exc"], p.exc_i_rev,
            )  # fmt: skip
            v_inh = _implicit_step(
                s["v_inh"], dt / p.inh_tau, p.inh_rest,
                f.mean_ge * s["ge_inh"], p.inh_e_rev, f.mean_gi * s["gi_inh"], p.inh_i_rev,
            )  # fmt: skip
        else:
            v_exc = p.exc_rest + (s["v_exc"] - p.exc_rest) * f.decay_exc + input_drive - inhibition
            v_inh = p.inh_rest + (s["v_inh"] - p.inh_rest) * f.decay_inh + excitation
        s["v_exc"] = torch.where(free_exc, v_exc, s["v_exc"])
        s["v_inh"] = torch.where(free_inh, v_inh, s["v_inh"])
        if learn:
            s["theta"] = s["theta"] * f.decay_theta
        # 4. threshold, reset, refractory, adaptation
        exc_spikes = free_exc & (s["gap_exc"] == 0) & (s["v_exc"] > p.exc_thresh + s["theta"])
        inh_spikes = free_inh & (s["v_inh"] > p.inh_thresh)
        s["v_exc"] = s["v_exc"].masked_fill(exc_spikes, p.exc_reset)
        s["v_inh"] = s["v_inh"].masked_fill(inh_spikes, p.inh_reset)
        s["refractory_exc"] = s["refractory_exc"].masked_fill(exc_spikes, refractory_exc)
        s["refractory_inh"] = s["refractory_inh"].masked_fill(inh_spikes, refractory_inh)
        s["gap_exc"] = s["gap_exc"].masked_fill(exc_spikes, gap_exc)
        if learn:
            s["theta"] = torch.where(exc_spikes, s["theta"] + p.theta_plus, s["theta"])
        # 5. potentiation at postsynaptic spikes (each spiking column of its own copy)
        if learn:
            image_of, neuron_of = exc_spikes.nonzero(as_tuple=True)
            if image_of.numel():
                pre_last = s["pre_last"][image_of]  # [P, K]
                age = s["clock"][image_of] - pre_last
                pre_trace = torch.exp((-age).to(weights.dtype) * dt / p.tau_pre)
                pre_trace = _flush(torch.where(pre_last >= 0, pre_trace, 0.0))
                if p.rule == "triplet":  # x_post2 read before this step's spikes set it to 1
                    pre_trace = pre_trace * s["post2"][image_of, neuron_of].unsqueeze(1)
                potentiated = weights[image_of, :, neuron_of] + p.nu_post * pre_trace
                weights[image_of, :, neuron_of] = potentiated.clamp(0.0, p.w_max)
        s["post1"] = s["post1"].masked_fill(exc_spikes, 1.0)
        s["post2"] = s["post2"].masked_fill(exc_spikes, 1.0)
        if t < steps_on:
            counts += exc_spikes
        s["exc_spiked"], s["inh_spiked"] = exc_spikes, inh_spikes
        s["clock"] = s["clock"] + 1
    return counts


def present_batch(
    network: DiehlCookNetwork,
    intensities: np.ndarray,
    rng: np.random.Generator,
    learn: bool,
    reduction: str = "mean",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float64,
) -> tuple[np.ndarray, np.ndarray]:
    """Show a batch of images to copies of ``network`` and reduce their learning (module doc).

    Args:
        network: updated in place (weights, theta, the last image's state).
        intensities: pixel intensities in [0, 1], shape [B, K], B >= 1.
        rng: the encoder's random stream (drawn in the order (attempt, image)).
        learn: STDP, theta adaptation and normalisation on.
        reduction: ``mean`` or ``sum`` of the images' weight and theta changes.
        device: torch device of the simulation (``cpu``, ``cuda``, ``cuda:N``).
        dtype: floating type of the simulation (float64 matches the reference).

    Returns:
        ``(counts[B, N], presentations[B])``: each image's spike counts of its last presentation
        and how many times it was shown.
    """
    intensities = np.asarray(intensities, np.float64)
    if intensities.ndim != 2 or intensities.shape[0] < 1:
        raise ValueError(f"need a batch of at least one image [B, K]; got {intensities.shape}")
    if reduction not in BATCH_REDUCTIONS:
        raise ValueError(
            f"reduction {reduction!r} is not valid; choose one of: {', '.join(BATCH_REDUCTIONS)}"
        )
    p = network.params
    batch = intensities.shape[0]
    n_inputs = network.weights.shape[0]
    device = torch.device(device)
    if learn:
        network.weights[:] = normalize_columns(network.weights, p.norm_total)
    start = torch.from_numpy(network.weights).to(device, dtype)
    weights = start.unsqueeze(0).repeat(batch, 1, 1)
    state = _stack_state(network.state, batch, device, dtype)
    counts = torch.zeros(batch, network.n_neurons, dtype=torch.int64, device=device)
    shown = np.zeros(batch, np.int64)
    pending = np.arange(batch)
    for attempt in range(p.max_presentations):
        rate = p.max_rate_hz + attempt * p.rate_step_hz
        rasters = np.stack(
            [
                events_to_raster(*poisson_events(rng, intensities[b] * rate, p.steps_on, p.dt),
                                 n_inputs)
                for b in pending
            ]
        )  # fmt: skip
        rows = torch.from_numpy(pending).to(device)
        sub_state = {name: value[rows] for name, value in state.items()}
        sub_weights = weights[rows]
        if learn and attempt > 0:
            sub_weights = _normalize(sub_weights, p.norm_total)
        raster_tensor = torch.from_numpy(rasters).to(device).bool()
        sub_counts = simulate_batch(p, sub_state, sub_weights, raster_tensor, p.steps_rest, learn)
        for name, value in sub_state.items():
            state[name][rows] = value
        weights[rows] = sub_weights
        counts[rows] = sub_counts
        shown[pending] = attempt + 1
        pending = pending[sub_counts.sum(1).cpu().numpy() < p.min_spikes]
        if pending.size == 0:
            break
    if learn:
        theta_start = torch.from_numpy(network.state.theta).to(device, dtype)
        if reduction == "mean":
            new_weights, new_theta = weights.mean(0), state["theta"].mean(0)
        else:
            change = (weights - start).sum(0)
            new_weights = torch.where(change != 0, (start + change).clamp(0.0, p.w_max), start)
            new_theta = theta_start + (state["theta"] - theta_start).sum(0)
        network.weights[:] = new_weights.cpu().double().numpy()
        state["theta"][-1] = new_theta
    for name, value in state.items():
        target = getattr(network.state, name)
        target[:] = value[-1].cpu().numpy().astype(target.dtype)
    return counts.cpu().numpy(), shown


def run_images_batched(
    network: DiehlCookNetwork,
    intensities: np.ndarray,
    rng: np.random.Generator,
    learn: bool,
    batch_size: int,
    reduction: str = "mean",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float64,
) -> tuple[np.ndarray, np.ndarray]:
    """Present images in consecutive batches of ``batch_size`` (the last may be smaller).

    Returns:
        ``(counts[M, N], presentations[M])``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1; got {batch_size}")
    count = intensities.shape[0]
    out = np.zeros((count, network.n_neurons), np.int64)
    shown = np.zeros(count, np.int64)
    for first in range(0, count, batch_size):
        last = min(first + batch_size, count)
        out[first:last], shown[first:last] = present_batch(
            network, intensities[first:last], rng, learn, reduction, device, dtype
        )
    return out, shown

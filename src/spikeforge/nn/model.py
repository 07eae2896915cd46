"""A fully connected SNN built from a layer list: spiking LIF layers then an accumulator readout."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from spikeforge.nn.layers import AccumulatorReadout, SpikingLinear

__all__ = ["SpikingMLP", "Recording", "bondarev_thresholds"]


def bondarev_thresholds(sizes: Sequence[int], factors: Sequence[float] = (5.0, 3.0)) -> list[float]:
    """Thresholds ``factor_l * sqrt(3 / h_l)`` with h_l the width of hidden layer l (Bondarev).

    For 784-300-300-10 this gives 5*sqrt(3/300) = 0.5 and 3*sqrt(3/300) = 0.3.
    """
    hidden = sizes[1:-1]
    if len(factors) != len(hidden):
        raise ValueError(f"need one threshold factor per hidden layer ({len(hidden)})")
    return [f * math.sqrt(3.0 / h) for f, h in zip(factors, hidden, strict=True)]


@dataclass
class Recording:
    """What one forward pass did, for plots: per hidden layer spikes and membranes ``[T,B,N]``,
    and the readout membrane ``[T, B, classes]``."""

    spikes: list[torch.Tensor]
    membranes: list[torch.Tensor]
    readout_membrane: torch.Tensor


class SpikingMLP(nn.Module):
    """``sizes[0] -> ... -> sizes[-1]``: LIF layers for every hidden size, accumulator readout.

    Args:
        sizes: layer widths, e.g. ``[784, 300, 300, 10]``.
        beta: leak of the hidden layers (one value or one per hidden layer).
        thresholds: one threshold per hidden layer.
        surrogate: surrogate derivative name; surrogate_scale its slope.
        readout_beta: leak of the readout accumulator (1 = pure sum).
        backend: ``auto``, ``torch`` or ``numba``.
        precision: matmul operand precision of the hidden layers, ``float32`` or ``bfloat16``.
        backward: ``dense`` or ``sparse`` backward of the hidden layers; active_bound the
            sparse one's bound (None: the surrogate's own).
        readout: class scores from the readout membrane: ``last`` step, ``max`` or ``sum``
            over time.

    Shape:
        ``[T, B, sizes[0]]`` spikes -> ``[B, sizes[-1]]`` class scores.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        beta: float | Sequence[float],
        thresholds: Sequence[float],
        surrogate: str = "exp",
        surrogate_scale: float | None = None,
        readout_beta: float = 1.0,
        backend: str = "auto",
        precision: str = "float32",
        backward: str = "dense",
        active_bound: float | None = None,
        readout: str = "last",
    ) -> None:
        super().__init__()
        if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
            raise ValueError(f"sizes needs at least an input and an output width; got {sizes}")
        n_hidden = len(sizes) - 2
        betas = [float(beta)] * n_hidden if isinstance(beta, int | float) else list(beta)
        if len(betas) != n_hidden or len(thresholds) != n_hidden:
            raise ValueError(
                f"{n_hidden} hidden layers need {n_hidden} betas and thresholds; "
                f"got {len(betas)} and {len(thresholds)}"
            )
        self.hidden = nn.ModuleList(
            SpikingLinear(
                i, o, b, th, surrogate, surrogate_scale, backend, precision, backward, active_bound
            )
            for i, o, b, th in zip(sizes[:-2], sizes[1:-1], betas, thresholds, strict=True)
        )
        self.readout = AccumulatorReadout(sizes[-2], sizes[-1], readout_beta, readout)
        self.sizes = [int(s) for s in sizes]

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        return self.forward_with_spikes(spikes)[0]

    def forward_with_spikes(self, spikes: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Class scores ``[B, classes]`` and every hidden layer's spikes ``[T, B, N]`` (in the
        graph, for spike-rate regularisers)."""
        if spikes.dim() != 3 or spikes.shape[-1] != self.sizes[0]:
            raise ValueError(
                f"expected time-major spikes [T, B, {self.sizes[0]}]; got {tuple(spikes.shape)}"
            )
        hidden = []
        for layer in self.hidden:
            spikes = layer(spikes)
            hidden.append(spikes)
        return self.readout(spikes), hidden

    @torch.no_grad()
    def record(self, spikes: torch.Tensor) -> Recording:
        """Run forward and keep every layer's spikes and membranes."""
        all_spikes, membranes = [], []
        for layer in self.hidden:
            membranes.append(layer.membrane(spikes))
            spikes = layer(spikes)
            all_spikes.append(spikes)
        return Recording(all_spikes, membranes, self.readout.membrane(spikes))

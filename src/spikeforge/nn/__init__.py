"""PyTorch modules for spiking networks (time-major ``[T, B, N]``, no hidden state)."""

from spikeforge.nn.layers import AccumulatorReadout, SpikingLinear, uniform_fan_in_
from spikeforge.nn.model import Recording, SpikingMLP, bondarev_thresholds

__all__ = [
    "AccumulatorReadout",
    "Recording",
    "SpikingLinear",
    "SpikingMLP",
    "bondarev_thresholds",
    "uniform_fan_in_",
]

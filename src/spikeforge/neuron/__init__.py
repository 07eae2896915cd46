"""Neuron dynamics as pure functions over time-major tensors, and their surrogate gradients."""

from spikeforge.neuron.lif import (
    lif_scan,
    lif_step_reference,
    resolve_backend,
    spiking_linear,
    spiking_linear_reference,
)
from spikeforge.neuron.surrogates import SURROGATES, Surrogate, get_surrogate, surrogate_names

__all__ = [
    "SURROGATES",
    "Surrogate",
    "get_surrogate",
    "lif_scan",
    "lif_step_reference",
    "resolve_backend",
    "spiking_linear",
    "spiking_linear_reference",
    "surrogate_names",
]

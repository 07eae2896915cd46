"""Concatenate trained Diehl & Cook sub-models into one network, and keep a subset of its
neurons (Hanyu & Dang, "Accelerating distributed spike-timing-dependent-plasticity learning",
step 3).

A Diehl & Cook network is defined by its input weights ``w[K, N]`` and adaptive thresholds
``theta[N]``; its inhibition has no weights to copy: excitatory neuron i drives inhibitory neuron i
and every inhibitory neuron inhibits every excitatory neuron but its own partner, so the
inhibitory layer and its all-but-self connections are rebuilt for whatever N the weights have
(:class:`spikeforge.stdp.DiehlCookNetwork` derives them from ``weights.shape[1]``). Merging
sub-models of sizes ``N_1 .. N_S`` therefore gives

    w = [w_1 | w_2 | ... | w_S]   (columns side by side, [K, sum N_s])
    theta = [theta_1, ..., theta_S]

and a network whose other state (membranes, conductances, traces) starts at rest.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from spikeforge.stdp import DiehlCookNetwork, new_state

__all__ = ["concatenate_networks", "select_neurons"]


def concatenate_networks(networks: Sequence[DiehlCookNetwork]) -> DiehlCookNetwork:
    """One network holding every neuron of ``networks``, in order (sub-model 0's neurons first).

    Neuron ``j`` of the result is neuron ``j - offset_s`` of sub-model s, where ``offset_s`` is
    the summed size of the sub-models before s. Weights and thresholds are copied; the rest of
    the state starts at rest; parameters and engine are the first sub-model's.

    Raises:
        ValueError: no networks, or they differ in input count or model parameters.
    """
    if not networks:
        raise ValueError("need at least one network to concatenate")
    first = networks[0]
    n_inputs = first.weights.shape[0]
    for index, network in enumerate(networks):
        if network.weights.shape[0] != n_inputs:
            raise ValueError(
                f"network {index} has {network.weights.shape[0]} inputs, network 0 has {n_inputs}"
            )
        if network.params != first.params:
            raise ValueError(f"network {index} has other model parameters than network 0")
    weights = np.concatenate([n.weights for n in networks], axis=1)
    state = new_state(first.params, n_inputs, weights.shape[1])
    state.theta[:] = np.concatenate([n.state.theta for n in networks])
    return DiehlCookNetwork(first.params, weights, state, first.engine)


def select_neurons(network: DiehlCookNetwork, keep: np.ndarray) -> DiehlCookNetwork:
    """The network of the neurons ``keep`` (indices, in the order given): their weight columns
    and thresholds; inhibition rebuilt for ``len(keep)`` neurons, the rest of the state at rest."""
    keep = np.asarray(keep, np.int64)
    n_inputs, n_neurons = network.weights.shape
    if keep.ndim != 1 or keep.size == 0:
        raise ValueError(f"keep must be a non-empty list of neuron indices; got shape {keep.shape}")
    if keep.min() < 0 or keep.max() >= n_neurons or np.unique(keep).size != keep.size:
        raise ValueError(f"keep must hold distinct neuron indices in 0..{n_neurons - 1}")
    state = new_state(network.params, n_inputs, keep.size)
    state.theta[:] = network.state.theta[keep]
    return DiehlCookNetwork(
        network.params, np.ascontiguousarray(network.weights[:, keep]), state, network.engine
    )

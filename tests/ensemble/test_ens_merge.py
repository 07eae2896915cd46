"""Concatenating sub-models and selecting neurons keep every weight column and threshold."""

import numpy as np
import pytest

from spikeforge.ensemble import concatenate_networks, select_neurons
from spikeforge.stdp import DiehlCookNetwork, DiehlCookParams, present_image

PARAMS = DiehlCookParams(present_ms=30.0, rest_ms=5.0, max_rate_hz=200.0)


def _trained_like(n_neurons: int, seed: int) -> DiehlCookNetwork:
    network = DiehlCookNetwork.create(PARAMS, 16, n_neurons, seed)
    network.state.theta[:] = np.random.default_rng(seed).random(n_neurons) * 5
    network.state.v_exc[:] = -50.0  # state that must not be carried over
    return network


def test_concatenation_keeps_every_neuron():
    parts = [_trained_like(3, 0), _trained_like(2, 1), _trained_like(4, 2)]
    merged = concatenate_networks(parts)
    assert merged.n_neurons == 9 and merged.weights.shape == (16, 9)
    offset = 0
    for part in parts:
        for i in range(part.n_neurons):
            np.testing.assert_array_equal(merged.weights[:, offset + i], part.weights[:, i])
            assert merged.state.theta[offset + i] == part.state.theta[i]
        offset += part.n_neurons
    # inhibition and every other state array are sized for 9 neurons and start at rest
    assert merged.state.v_inh.shape == (9,) and np.all(merged.state.v_exc == PARAMS.exc_rest)
    counts, _ = present_image(merged, np.full(16, 0.8), np.random.default_rng(0), learn=False)
    assert counts.shape == (9,)
    merged.weights[0, 0] = -1.0
    assert parts[0].weights[0, 0] != -1.0  # a copy, not a view


def test_concatenation_refuses_mismatched_networks():
    with pytest.raises(ValueError, match="network 1 has 8 inputs, network 0 has 16"):
        concatenate_networks([_trained_like(2, 0), DiehlCookNetwork.create(PARAMS, 8, 2, 0)])
    other = DiehlCookNetwork.create(DiehlCookParams(rule="pair"), 16, 2, 0)
    with pytest.raises(ValueError, match="other model parameters"):
        concatenate_networks([_trained_like(2, 0), other])
    with pytest.raises(ValueError, match="at least one"):
        concatenate_networks([])


def test_select_neurons_keeps_columns_and_thresholds_in_order():
    network = _trained_like(6, 3)
    chosen = select_neurons(network, np.array([4, 0, 5]))
    np.testing.assert_array_equal(chosen.weights, network.weights[:, [4, 0, 5]])
    np.testing.assert_array_equal(chosen.state.theta, network.state.theta[[4, 0, 5]])
    assert chosen.state.pre_last.shape == (16,) and chosen.n_neurons == 3
    with pytest.raises(ValueError, match="distinct neuron indices in 0..5"):
        select_neurons(network, np.array([1, 1]))
    with pytest.raises(ValueError, match="distinct neuron indices in 0..5"):
        select_neurons(network, np.array([6]))

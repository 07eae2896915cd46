"""Traces, pair and triplet STDP on a hand-computed spike pair; weight normalisation."""

import math

import numpy as np
import pytest

from spikeforge.stdp import (
    current_based_params,
    depression_on_pre,
    new_state,
    normalize_columns,
    potentiation_on_post,
    simulate_reference,
)
from spikeforge.stdp._numba_engine import simulate_events
from spikeforge.stdp.diehl_cook import raster_to_events

NU_PRE, NU_POST = 1e-4, 1e-2


def test_rule_functions():
    post1 = np.array([0.5, 0.0, 1.0])
    dw = depression_on_pre(np.array([0, 1]), post1, NU_PRE)
    np.testing.assert_allclose(dw, [[0, 0, 0], [-0.5e-4, 0, -1e-4]])
    pre = np.array([1.0, 0.25])
    spikes = np.array([1, 0, 1])
    np.testing.assert_allclose(
        potentiation_on_post(pre, spikes, NU_POST), [[0.01, 0, 0.01], [0.0025, 0, 0.0025]]
    )
    post2 = np.array([0.5, 0.7, 0.0])
    np.testing.assert_allclose(
        potentiation_on_post(pre, spikes, NU_POST, post2), [[0.005, 0, 0], [0.00125, 0, 0]]
    )


def test_normalize_columns():
    w = np.array([[1.0, 0.0, 3.0], [3.0, 0.0, 1.0]])
    out = normalize_columns(w, 78.0)
    np.testing.assert_allclose(out.sum(0), [78.0, 0.0, 78.0])
    np.testing.assert_allclose(out[:, 0], [19.5, 58.5])
    assert out[0, 0] / out[1, 0] == pytest.approx(1 / 3)


def _pair_run(engine, rule):
    """Input 0 (weak) spikes at steps 0 and 6; input 1 (strong) at 3 and 10 makes post spikes."""
    params = current_based_params(rule=rule, w_max=100.0, nu_pre=NU_PRE, nu_post=NU_POST)
    weights = np.array([[1.0], [20.0]])
    raster = np.zeros((12, 2), np.uint8)
    raster[[0, 6], 0] = 1
    raster[[3, 10], 1] = 1
    state = new_state(params, 2, 1)
    spikes = []
    for t in range(raster.shape[0]):
        if engine == "reference":
            simulate_reference(params, state, weights, raster[t : t + 1], 0, True)
        else:
            simulate_events(params, state, weights, *raster_to_events(raster[t : t + 1]), 0, True)
        spikes.append(int(state.exc_spiked[0]))
    return weights, spikes


@pytest.mark.parametrize("engine", ["reference", "numba"])
def test_pair_rule_spike_pair(engine):
    weights, spikes = _pair_run(engine, "pair")
    assert [t for t, s in enumerate(spikes) if s] == [3, 10]
    x = math.exp
    w0 = 1.0 + NU_POST * x(-3 / 20)  # post at 3, input 0 spiked 3 steps before
    w0 -= NU_PRE * x(-3 / 20)  # pre at 6, post1 set at 3
    w0 += NU_POST * x(-4 / 20)  # post at 10, input 0 last spiked at 6
    w1 = 20.0 + NU_POST * 1.0  # its own spike at 3 sets x_pre = 1; post1 = 0 before
    w1 -= NU_PRE * x(-7 / 20)  # pre at 10 (depression reads post1 before the post spike)
    w1 += NU_POST * 1.0
    np.testing.assert_allclose(weights[:, 0], [w0, w1], rtol=1e-14)


@pytest.mark.parametrize("engine", ["reference", "numba"])
def test_triplet_rule_spike_pair(engine):
    weights, spikes = _pair_run(engine, "triplet")
    assert [t for t, s in enumerate(spikes) if s] == [3, 10]
    x = math.exp
    # first post spike: post2 was 0, no potentiation; second: post2 = exp(-7/40) before reset
    w0 = 1.0 - NU_PRE * x(-3 / 20) + NU_POST * x(-4 / 20) * x(-7 / 40)
    w1 = 20.0 - NU_PRE * x(-7 / 20) + NU_POST * 1.0 * x(-7 / 40)
    np.testing.assert_allclose(weights[:, 0], [w0, w1], rtol=1e-14)


def test_weights_clipped_to_bounds():
    params = current_based_params(w_max=1.0, nu_post=0.5)
    weights = np.array([[0.9], [1.0]])
    raster = np.zeros((1, 2), np.uint8)
    raster[0] = 1  # drive 1.9 mV: no post spike; depression with post1 = 0 leaves rows
    state = new_state(params, 2, 1)
    state.post1[:] = 1.0  # depression of 1e-4 per row
    simulate_reference(params, state, weights, raster, 0, True)
    decay = math.exp(-1 / 20)
    np.testing.assert_allclose(weights[:, 0], [0.9 - 1e-4 * decay, 1.0 - 1e-4 * decay])
    weights[:] = [[0.00001], [1.0]]
    simulate_reference(params, state, weights, raster, 0, True)
    assert weights[0, 0] == 0.0  # clipped at the lower bound

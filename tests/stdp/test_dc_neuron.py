"""One excitatory neuron of the Diehl & Cook network against hand-computed values."""

import math

import numpy as np
import pytest

from spikeforge.stdp import DiehlCookParams, current_based_params, new_state, simulate_reference
from spikeforge.stdp._numba_engine import simulate_events
from spikeforge.stdp.diehl_cook import raster_to_events


def _run(engine, params, weights, raster, learn=True):
    state = new_state(params, weights.shape[0], weights.shape[1])
    trace = []
    for t in range(raster.shape[0]):
        if engine == "reference":
            simulate_reference(params, state, weights, raster[t : t + 1], 0, learn)
        else:
            step_ptr, inputs = raster_to_events(raster[t : t + 1])
            simulate_events(params, state, weights, step_ptr, inputs, 0, learn)
        trace.append((state.v_exc[0], state.theta[0], state.v_inh[0], state.exc_spiked[0]))
    return trace, state


@pytest.mark.parametrize("engine", ["reference", "numba"])
def test_current_based_membrane_threshold_reset(engine):
    params = current_based_params(w_max=100.0, nu_pre=0.0, nu_post=0.0)
    decay = math.exp(-1.0 / 100.0)
    theta_decay = math.exp(-1.0 / 1e7)
    weights = np.array([[10.0]])
    raster = np.zeros((9, 1), np.uint8)
    raster[[0, 1, 8], 0] = 1
    trace, _ = _run(engine, params, weights, raster)
    v = [step[0] for step in trace]
    assert v[0] == pytest.approx(-55.0)  # -65 + 10
    # step 1: -65 + (-55 + 65) e^{-1/100} + 10 = -45.0995 > -52: spike, reset to -60
    assert trace[1][3] == 1 and v[1] == -60.0
    assert trace[1][1] == pytest.approx(0.05)  # theta += theta_plus
    # refractory for 5 steps (2..6): v held at reset; theta decays by exp(-dt / 1e7) per step
    assert v[2:7] == [-60.0] * 5
    assert trace[6][1] == pytest.approx(0.05 * theta_decay**5, rel=1e-15)
    # step 7: free again, no input: -65 + 5 e^{-1/100}; step 8 one input: + 10 -> -50.1 spikes
    assert v[7] == pytest.approx(-65.0 + 5.0 * decay)
    assert trace[7][3] == 0 and trace[8][3] == 1 and v[8] == -60.0
    assert trace[8][1] == pytest.approx(0.05 * theta_decay**7 + 0.05, rel=1e-15)
    # the inhibitory partner: exc spike at step 1 arrives at step 2: -60 + 22.5 > -40, reset -45
    assert trace[1][2] == -60.0
    assert trace[2][2] == -45.0
    # step 3: -60 + (-45 + 60) e^{-1/10}; inh refractory is 2 steps (3, 4) so v stays at -45
    assert trace[3][2] == -45.0 and trace[5][2] == pytest.approx(-60 + 15 * math.exp(-0.1))


@pytest.mark.parametrize("engine", ["reference", "numba"])
def test_conductance_step_hand_computed(engine):
    params = DiehlCookParams(nu_pre=0.0, nu_post=0.0)
    w = 2.0
    weights = np.array([[w]])
    raster = np.zeros((2, 1), np.uint8)
    raster[0, 0] = 1
    trace, state = _run(engine, params, weights, raster)
    h = 1.0 / 100.0
    mean = 1.0 - math.exp(-1.0)  # (tau/dt)(1 - e^{-dt/tau}) with tau_ge = dt = 1 ms
    g = mean * w
    v1 = (-65.0 + h * (-65.0 + g * 0.0)) / (1.0 + h * (1.0 + g))  # backward Euler, E_exc = 0
    assert trace[0][0] == pytest.approx(v1, rel=1e-14)
    g2 = mean * w * math.exp(-1.0)
    v2 = (v1 + h * (-65.0 + g2 * 0.0)) / (1.0 + h * (1.0 + g2))
    assert trace[1][0] == pytest.approx(v2, rel=1e-14)
    assert state.ge_exc[0] == pytest.approx(w * math.exp(-1.0))


@pytest.mark.parametrize("engine", ["reference", "numba"])
def test_theta_fixed_when_not_learning(engine):
    params = current_based_params()
    weights = np.array([[30.0]])
    raster = np.ones((3, 1), np.uint8)
    trace, _ = _run(engine, params, weights, raster, learn=False)
    assert trace[0][3] == 1 and [step[1] for step in trace] == [0.0, 0.0, 0.0]
    assert weights[0, 0] == 30.0  # no STDP either


@pytest.mark.parametrize("engine", ["reference", "numba"])
def test_spike_gap_after_refractory(engine):
    """The authors' timer: after the refractory clamp v integrates, but no spike before the gap."""
    params = current_based_params(
        exc_refractory=1.0, exc_spike_gap=4.0, w_max=100.0, nu_pre=0.0, nu_post=0.0
    )
    weights = np.array([[30.0]])
    raster = np.ones((10, 1), np.uint8)
    trace, _ = _run(engine, params, weights, raster)
    assert [t for t, step in enumerate(trace) if step[3]] == [0, 4, 8]
    v = [step[0] for step in trace]
    assert v[1] == -60.0  # clamped (refractory, 1 step)
    assert v[2] == pytest.approx(-65.0 + 5.0 * math.exp(-0.01) + 30.0)  # integrates, no spike

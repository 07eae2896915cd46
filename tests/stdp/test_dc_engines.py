"""The event-driven Numba engine reproduces the dense reference engine."""

import numpy as np
import pytest

from spikeforge.stdp import DiehlCookNetwork, DiehlCookParams, current_based_params, run_images
from spikeforge.stdp.diehl_cook import events_to_raster, poisson_events, raster_to_events


def _images(count, inputs, seed):
    rng = np.random.default_rng(seed)
    images = rng.random((count, inputs)) * (rng.random((count, inputs)) < 0.4)
    return images


@pytest.mark.parametrize(
    "params",
    [
        DiehlCookParams(),
        DiehlCookParams(rule="pair", dt=0.5, present_ms=60.0, rest_ms=20.0),
        current_based_params(present_ms=80.0, rest_ms=30.0),
        current_based_params(rule="triplet", present_ms=80.0, rest_ms=30.0, min_spikes=40),
    ],
    ids=["conductance-triplet", "conductance-pair-dt0.5", "current-pair", "current-reshow"],
)
def test_fast_engine_equals_reference(params):
    images = _images(5, 64, seed=3)
    networks = {
        engine: DiehlCookNetwork.create(params, 64, 12, seed=7, engine=engine)
        for engine in ("reference", "numba")
    }
    for network in networks.values():
        network.weights *= 4.0  # 64 inputs need stronger weights than 784 to make spikes
    counts = {}
    for engine, network in networks.items():
        trained = run_images(network, images, np.random.default_rng(11), learn=True)
        frozen = run_images(network, images[:2], np.random.default_rng(12), learn=False)
        counts[engine] = (trained, frozen)
    assert counts["reference"][0].sum() > 10  # the case exercises spikes and learning
    for a, b in zip(counts["reference"], counts["numba"], strict=True):
        np.testing.assert_array_equal(a, b)
    reference, fast = networks["reference"], networks["numba"]
    np.testing.assert_allclose(fast.weights, reference.weights, rtol=1e-12, atol=1e-15)
    for name, value in reference.state.arrays().items():
        np.testing.assert_allclose(getattr(fast.state, name), value, rtol=1e-12, atol=1e-12)


def test_poisson_events_rates_and_layout():
    rng = np.random.default_rng(0)
    rates = np.array([0.0, 50.0, 200.0, 0.0])
    steps = 100_000
    step_ptr, inputs = poisson_events(rng, rates, steps, 1.0)
    raster = events_to_raster(step_ptr, inputs, 4)
    assert raster.shape == (steps, 4)
    assert raster[:, [0, 3]].sum() == 0
    for column, p in ((1, 0.05), (2, 0.2)):  # P(spike per step) = rate dt, within 5 sigma
        assert abs(raster[:, column].mean() - p) < 5 * np.sqrt(p * (1 - p) / steps)
    again = raster_to_events(raster)
    np.testing.assert_array_equal(again[0], step_ptr)
    np.testing.assert_array_equal(again[1], inputs)

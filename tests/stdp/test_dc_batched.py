"""The batched mode: batch size 1 is the per-image reference; a batch's update is the reduction
of the per-image updates from the same start; bad values fail clearly."""

import numpy as np
import pytest
import torch

from spikeforge.stdp import DiehlCookNetwork, DiehlCookParams, current_based_params, run_images
from spikeforge.stdp.diehl_cook import present_image
from spikeforge.stdp.diehl_cook_batched import present_batch, run_images_batched

INPUTS, NEURONS = 64, 12


def _images(count, seed):
    rng = np.random.default_rng(seed)
    return rng.random((count, INPUTS)) * (rng.random((count, INPUTS)) < 0.4)


def _network(params, engine="reference"):
    network = DiehlCookNetwork.create(params, INPUTS, NEURONS, seed=7, engine=engine)
    network.weights *= 4.0  # 64 inputs need stronger weights than 784 to make spikes
    return network


def _copy(network):
    return DiehlCookNetwork(
        network.params, network.weights.copy(), network.state.copy(), network.engine
    )


@pytest.mark.parametrize(
    "params",
    [
        DiehlCookParams(present_ms=120.0, rest_ms=40.0),
        current_based_params(present_ms=80.0, rest_ms=30.0),
        current_based_params(rule="triplet", present_ms=80.0, rest_ms=30.0, min_spikes=40),
    ],
    ids=["conductance-triplet", "current-pair", "current-reshow"],
)
def test_batch_size_one_equals_reference(params):
    images = _images(5, seed=3)
    reference, batched = _network(params), _network(params)
    expected = run_images(reference, images, np.random.default_rng(11), learn=True)
    counts, shown = run_images_batched(
        batched, images, np.random.default_rng(11), learn=True, batch_size=1
    )
    assert expected.sum() > 10  # the case exercises spikes and learning
    np.testing.assert_array_equal(counts, expected)
    if params.min_spikes == 40:
        assert shown.max() > 1  # the re-show path ran
    np.testing.assert_allclose(batched.weights, reference.weights, rtol=0, atol=1e-10)
    for name, value in reference.state.arrays().items():
        np.testing.assert_allclose(getattr(batched.state, name), value, rtol=0, atol=1e-10)
    frozen = run_images(reference, images[:2], np.random.default_rng(12), learn=False)
    again, _ = run_images_batched(batched, images[:2], np.random.default_rng(12), False, 1)
    np.testing.assert_array_equal(again, frozen)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_batch_update_is_reduction_of_per_image_updates(reduction):
    """Each image run alone from the same start (same input spikes: one presentation each, drawn
    in the same order); the batch's change is the mean (or clipped sum) of their changes."""
    params = current_based_params(present_ms=80.0, rest_ms=30.0, min_spikes=0)
    images = _images(4, seed=5)
    start = _network(params)
    start.state.theta[:] = 0.3  # a non-zero start, so the theta reduction is visible
    alone_rng = np.random.default_rng(21)
    alone_weights, alone_theta, alone_counts = [], [], []
    for image in images:
        network = _copy(start)
        counts, shown = present_image(network, image, alone_rng, learn=True)
        assert shown == 1
        alone_weights.append(network.weights)
        alone_theta.append(network.state.theta)
        alone_counts.append(counts)
    last_alone_state = network.state
    batched = _copy(start)
    counts, shown = present_batch(batched, images, np.random.default_rng(21), True, reduction)
    np.testing.assert_array_equal(counts, np.array(alone_counts))
    np.testing.assert_array_equal(shown, 1)
    normalized = start.params.norm_total * start.weights / start.weights.sum(0)
    weight_changes = np.array(alone_weights) - normalized
    theta_changes = np.array(alone_theta) - start.state.theta
    assert np.abs(weight_changes).max() > 1e-4  # learning happened
    if reduction == "mean":
        expected_w = normalized + weight_changes.mean(0)
        expected_theta = start.state.theta + theta_changes.mean(0)
    else:
        summed = weight_changes.sum(0)
        clipped = np.clip(normalized + summed, 0, params.w_max)
        expected_w = np.where(summed != 0, clipped, normalized)
        expected_theta = start.state.theta + theta_changes.sum(0)
    np.testing.assert_allclose(batched.weights, expected_w, rtol=0, atol=1e-10)
    np.testing.assert_allclose(batched.state.theta, expected_theta, rtol=0, atol=1e-10)
    # the rest of the state is that of the batch's last image
    np.testing.assert_allclose(batched.state.v_exc, last_alone_state.v_exc, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(batched.state.pre_last, last_alone_state.pre_last)


def test_float32_runs_close_to_float64():
    params = current_based_params(present_ms=60.0, rest_ms=20.0)
    images = _images(3, seed=8)
    wide, narrow = _network(params), _network(params)
    present_batch(wide, images, np.random.default_rng(2), True)
    present_batch(narrow, images, np.random.default_rng(2), True, dtype=torch.float32)
    assert narrow.weights.dtype == np.float64
    np.testing.assert_allclose(narrow.weights, wide.weights, atol=1e-3)


def test_bad_values():
    network = _network(current_based_params())
    with pytest.raises(ValueError, match="batch_size must be at least 1; got 0"):
        run_images_batched(network, _images(2, 0), np.random.default_rng(0), True, batch_size=0)
    with pytest.raises(ValueError, match="at least one image"):
        present_batch(network, np.zeros((0, INPUTS)), np.random.default_rng(0), True)
    with pytest.raises(ValueError, match="reduction 'max' is not valid"):
        present_batch(network, _images(2, 0), np.random.default_rng(0), True, reduction="max")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_equals_cpu():
    params = DiehlCookParams(present_ms=80.0, rest_ms=20.0)
    images = _images(6, seed=4)
    cpu, gpu = _network(params), _network(params)
    a, _ = run_images_batched(cpu, images, np.random.default_rng(1), True, 3)
    b, _ = run_images_batched(gpu, images, np.random.default_rng(1), True, 3, device="cuda")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(gpu.weights, cpu.weights, rtol=0, atol=1e-10)

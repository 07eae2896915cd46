"""Convolutional STDP: the rule by hand, the winner-take-all scan by hand, window extraction,
window_batch = 1 against a naive sequential loop, batch averaging against per-window updates,
reconstruction error of a known filter bank, and the conv path against the window path."""

import numpy as np
import pytest
import torch

from spikeforge.stdp.conv import (
    ConvSTDPParams,
    average_update,
    conv_wta_pooled,
    conv_wta_spikes,
    image_windows,
    learn_window_batch,
    learn_windows,
    presynaptic_activity,
    reconstruct,
    reconstruction_errors,
    window_stdp_update,
    wta_lif_scan,
)

W3 = torch.tensor([0.2, 0.5, 0.9, 0.0, 1.0, 0.3, 0.6, 0.4, 0.1])
PRE3 = torch.tensor([1.0, 0, 1, 0, 1, 1, 0, 0, 0])


def test_rule_on_a_hand_computed_3x3_window():
    # dw = 0.1 (1 - w) where the input spiked, 0.1 (0 - w) where it did not.
    expected = torch.tensor([0.08, -0.05, 0.01, 0.0, 0.0, 0.07, -0.06, -0.04, -0.01])
    summed, firing = window_stdp_update(
        W3[None], PRE3.reshape(1, 1, 9), torch.ones(1, 1, 1), learning_rate=0.1
    )
    torch.testing.assert_close(summed[0], expected)
    assert firing.tolist() == [1]


def test_one_window_end_to_end_updates_only_the_winner_and_keeps_bounds():
    # Filter 0 gets w . x = 0.2 + 0.9 + 1.0 + 0.3 = 2.4 >= 2 and wins; filter 1 gets 0.4 and
    # stays silent, so its weights must not move.
    filters = torch.stack([W3, torch.full((9,), 0.1)])
    params = ConvSTDPParams(kernel=3, threshold=2.0, learning_rate=0.1)
    new, counts, kept = learn_window_batch(filters, PRE3.reshape(1, 1, 9), params)
    assert counts.tolist() == [[1.0, 0.0]] and kept.tolist() == [True]
    torch.testing.assert_close(new[0], W3 + 0.1 * (PRE3 - W3))
    torch.testing.assert_close(new[1], filters[1])
    # a = 1 moves the winner onto the pattern exactly: both bounds are reached, never crossed.
    params = ConvSTDPParams(kernel=3, threshold=2.0, learning_rate=1.0)
    new, _, _ = learn_window_batch(filters, PRE3.reshape(1, 1, 9), params)
    torch.testing.assert_close(new[0], PRE3)
    # Three spikes of one window with a = 0.9 sum past 1 and below 0: the result is clipped.
    window = PRE3.reshape(1, 1, 9).expand(1, 3, 9).contiguous()
    params = ConvSTDPParams(kernel=3, beta=0.0, threshold=2.0, learning_rate=0.9)
    new, counts, _ = learn_window_batch(filters, window, params)
    assert counts[0, 0] == 3
    assert new.min() >= 0 and new.max() <= 1
    torch.testing.assert_close(new[0], PRE3)


def test_winner_take_all_scan_by_hand():
    # beta 0.5, threshold 1. Step 0: v = (0.6, 0.8), no spike. Step 1: v = (0.3 + 0.9, 0.4 +
    # 0.5) = (1.2, 0.9): filter 0 spikes, both reset. Step 2: v = (0.7, 0.7): none (tie below
    # threshold). Step 3: v = (0.35 + 0.8, 0.35 + 0.8) = (1.15, 1.15): tie, the lower index wins.
    currents = torch.tensor([[[0.6, 0.8], [0.9, 0.5], [0.7, 0.7], [0.8, 0.8]]])
    spikes = wta_lif_scan(currents, beta=0.5, threshold=1.0)
    assert spikes[0].tolist() == [[0, 0], [1, 0], [0, 0], [1, 0]]


def test_presynaptic_window():
    x = torch.tensor([[[1.0], [0], [0], [1], [0]]])
    assert presynaptic_activity(x, 1).flatten().tolist() == [1, 0, 0, 1, 0]
    assert presynaptic_activity(x, 2).flatten().tolist() == [1, 1, 0, 1, 1]
    assert presynaptic_activity(x, 3).flatten().tolist() == [1, 1, 1, 1, 1]


def test_image_windows_are_zero_padded_patches_in_raster_order():
    maps = torch.arange(1, 2 * 4 * 5 + 1, dtype=torch.float32).reshape(2, 4, 5)
    windows = image_windows(maps, 3)
    assert windows.shape == (2 * 4 * 5, 9)
    padded = torch.nn.functional.pad(maps, (1, 1, 1, 1))
    for b, r, c in [(0, 0, 0), (0, 2, 3), (1, 3, 4), (1, 1, 0)]:
        expected = padded[b, r : r + 3, c : c + 3].flatten()
        torch.testing.assert_close(windows[b * 20 + r * 5 + c], expected)
    # A time axis in front moves behind the window index.
    spikes = torch.stack([maps, 2 * maps])  # [T=2, B, H, W]
    timed = image_windows(spikes, 3)
    assert timed.shape == (40, 2, 9)
    torch.testing.assert_close(timed[:, 1], 2 * windows)


def _naive_sequential(filters, windows, params):
    """Window after window, step after step, neuron after neuron, in float64."""
    w = filters.double().numpy().copy()
    k, inputs = w.shape
    a, lw = params.learning_rate, params.pre_window
    for x in windows.double().numpy():  # x: [T, P]
        steps = x.shape[0]
        v = np.zeros(k)
        update = np.zeros_like(w)
        for t in range(steps):
            for j in range(k):
                v[j] = params.beta * v[j] + sum(w[j, i] * x[t, i] for i in range(inputs))
            winner = int(np.argmax(v))
            if v[winner] >= params.threshold:
                pre = x[max(0, t - lw + 1) : t + 1].max(axis=0)
                for i in range(inputs):
                    target = 1.0 if pre[i] > 0 else 0.0
                    update[winner, i] += a * (target - w[winner, i])
                v[:] = 0.0
        w = np.clip(w + update, 0.0, 1.0)
    return w


@pytest.mark.parametrize("pre_window", [1, 3])
def test_window_batch_1_equals_a_naive_sequential_loop(pre_window):
    generator = torch.Generator().manual_seed(0)
    rates = torch.rand((40, 1, 9), generator=generator) * 0.8
    windows = (torch.rand((40, 6, 9), generator=generator) < rates).to(torch.uint8)
    windows[5] = 0  # a blank window: skipped, must change nothing
    filters = torch.rand((3, 9), generator=generator, dtype=torch.float64)
    params = ConvSTDPParams(
        kernel=3, beta=0.8, threshold=1.5, learning_rate=0.05, pre_window=pre_window
    )
    learned, counts, _ = learn_windows(filters, windows, 1, params)
    assert counts.sum() > 20  # the case exercises the rule many times
    np.testing.assert_allclose(
        learned.numpy(), _naive_sequential(filters, windows, params), atol=1e-12
    )
    # Batched learning is a different order: it must not coincide with the sequential one.
    batched, _, _ = learn_windows(filters, windows, 40, params)
    assert not torch.allclose(batched, learned)


@pytest.mark.parametrize("average", ["firing", "all"])
def test_averaged_update_is_the_mean_of_per_window_updates(average):
    generator = torch.Generator().manual_seed(1)
    windows = (torch.rand((25, 5, 9), generator=generator) < 0.4).to(torch.uint8)
    windows[3] = 0
    filters = torch.rand((4, 9), generator=generator, dtype=torch.float64) * 0.5 + 0.25
    params = ConvSTDPParams(kernel=3, threshold=1.2, learning_rate=0.01, average=average)
    per_window, fired = [], []
    for window in windows:
        new, counts, _ = learn_window_batch(filters, window[None], params)
        per_window.append(new - filters)  # no clipping: a is small, w is inside (0.25, 0.75)
        fired.append(counts[0] > 0)
    per_window, fired = torch.stack(per_window), torch.stack(fired)
    if average == "all":
        expected = per_window.mean(0)
    else:
        expected = per_window.sum(0) / fired.sum(0).clamp_min(1)[:, None]
    batched, _, _ = learn_window_batch(filters, windows, params)
    torch.testing.assert_close(batched - filters, expected)
    assert fired.any(1).sum() > 10 and not fired.all()


def test_average_update_reductions():
    summed = torch.tensor([[2.0, 4.0], [3.0, 3.0], [0.0, 0.0]])
    firing = torch.tensor([2, 3, 0])
    torch.testing.assert_close(
        average_update(summed, firing, 10, "firing"), torch.tensor([[1.0, 2], [1, 1], [0, 0]])
    )
    torch.testing.assert_close(average_update(summed, firing, 10, "all"), summed / 10)
    with pytest.raises(ValueError, match="average must be one of"):
        average_update(summed, firing, 10, "median")


def test_reconstruction_error_of_a_known_filter_bank():
    filters = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.5, 0.5, 1.0]])
    counts = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 3.0]])
    intensities = torch.tensor(
        [[1.0, 0.8, 0.0, 0.0], [0.5, 0.75, 0.25, 0.5], [0.2, 0.0, 0.0, 0.0], [0.0, 0.5, 0.5, 0.5]]
    )
    expected_reconstruction = torch.tensor(
        [[1.0, 1.0, 0.0, 0.0], [0.5, 0.75, 0.25, 0.5], [0.0, 0.0, 0.0, 0.0], [0.0, 0.5, 0.5, 1.0]]
    )
    torch.testing.assert_close(reconstruct(counts, filters), expected_reconstruction)
    # Squared errors: 0.2^2; exact; 0.2^2 (no spike: reconstructed as blank); 0.5^2.
    torch.testing.assert_close(
        reconstruction_errors(intensities, counts, filters), torch.tensor([0.04, 0.0, 0.04, 0.25])
    )


def test_conv_path_equals_the_window_path():
    generator = torch.Generator().manual_seed(2)
    spikes = (torch.rand((7, 3, 9, 8), generator=generator) < 0.3).to(torch.uint8)
    filters = torch.rand((5, 9), generator=generator)
    params = ConvSTDPParams(kernel=3, beta=0.9, threshold=1.0)
    maps = conv_wta_spikes(spikes, filters, params)  # [T, B, k, H, W]
    assert maps.shape == (7, 3, 5, 9, 8) and maps.dtype == torch.uint8
    _, counts, _ = learn_windows(filters, image_windows(spikes, 3), 1, params, learn=False)
    torch.testing.assert_close(
        maps.sum(0).permute(0, 2, 3, 1).reshape(-1, 5).float(), counts, rtol=0, atol=0
    )
    assert maps.sum(2).max() == 1  # winner-take-all: one filter per location and step
    last = conv_wta_spikes(spikes, filters, params, channels_last=True)
    assert torch.equal(last.permute(0, 1, 4, 2, 3), maps)


def test_params_are_checked():
    with pytest.raises(ValueError, match="kernel must be a positive odd"):
        ConvSTDPParams(kernel=4)
    with pytest.raises(ValueError, match="learning_rate must lie in"):
        ConvSTDPParams(learning_rate=0.0)
    with pytest.raises(ValueError, match="threshold must be positive"):
        ConvSTDPParams(threshold=-1.0)
    with pytest.raises(ValueError, match="window_batch must be at least 1"):
        learn_windows(torch.rand(2, 9), torch.zeros(3, 2, 9), 0, ConvSTDPParams(kernel=3))


def test_pooled_layer_numba_equals_torch_and_pools_by_or():
    generator = torch.Generator().manual_seed(3)
    spikes = (torch.rand((6, 4, 10, 9), generator=generator) < 0.3).to(torch.uint8)
    # Filters on a grid of 1/16: every sum is exact in float32 whatever the order of addition,
    # so the event-driven kernel and conv2d must agree spike for spike.
    filters = (torch.rand((5, 25), generator=generator) * 16).round() / 16
    params = ConvSTDPParams(kernel=5, beta=0.5, threshold=2.0)
    maps = conv_wta_spikes(spikes, filters, params, channels_last=True)  # [T, B, H, W, k]
    by_hand = maps[:, :, :10, :8].reshape(6, 4, 5, 2, 4, 2, 5).amax(dim=(3, 5))
    torch_pooled = conv_wta_pooled(spikes, filters, params, 2, backend="torch")
    numba_pooled = conv_wta_pooled(spikes, filters, params, 2, backend="numba")
    assert torch_pooled.shape == (6, 4, 5, 4, 5)
    assert torch.equal(torch_pooled, by_hand)
    assert torch.equal(numba_pooled, torch_pooled)
    assert 0.05 < torch_pooled.float().mean() < 0.95
    unpooled = conv_wta_pooled(spikes, filters, params, 1, backend="numba")
    assert torch.equal(unpooled, maps)
    with pytest.raises(ValueError, match="unknown backend"):
        conv_wta_pooled(spikes, filters, params, 2, backend="cupy")

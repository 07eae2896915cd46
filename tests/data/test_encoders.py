"""Encoders: spike rates, determinism, latency times, bad input."""

import math

import pytest
import torch

from spikeforge._spike_rows import attached_rows
from spikeforge.data import latency_encode, poisson_encode


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_poisson_rates_match_intensities(backend):
    p = torch.tensor([[0.0, 0.05, 0.3, 0.7, 1.0]]).repeat(200, 1)
    spikes = poisson_encode(p, 500, torch.Generator().manual_seed(0), backend=backend)
    assert spikes.dtype == torch.uint8 and spikes.shape == (500, 200, 5)
    rate = spikes.float().mean(dim=(0, 1))
    # 100,000 draws per input: a binomial standard error below 0.0015
    torch.testing.assert_close(rate, p[0], atol=0.006, rtol=0)
    assert rate[0] == 0 and rate[-1] == 1


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_poisson_seeded_and_independent_over_time(backend):
    p = torch.full((4, 300), 0.5)
    a = poisson_encode(p, 50, torch.Generator().manual_seed(7), backend=backend)
    b = poisson_encode(p, 50, torch.Generator().manual_seed(7), backend=backend)
    c = poisson_encode(p, 50, torch.Generator().manual_seed(8), backend=backend)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # consecutive steps are uncorrelated: P(both) ~ 0.25
    both = (a[1:] & a[:-1]).float().mean().item()
    assert abs(both - 0.25) < 0.02


def test_latency_spike_times():
    x = torch.tensor([[0.1, 0.2, 0.25, 0.5, 1.0]])
    spikes = latency_encode(x, 100, tau=20.0, intensity_threshold=0.2)
    t, _, i = spikes.nonzero(as_tuple=True)
    expected = {
        2: math.floor(20 * math.log(0.25 / 0.05)),
        3: math.floor(20 * math.log(0.5 / 0.3)),
        4: math.floor(20 * math.log(1.0 / 0.8)),
    }
    assert dict(zip(i.tolist(), t.tolist(), strict=True)) == expected
    assert spikes.sum() == 3  # inputs at or below the threshold never spike
    late = latency_encode(x, 5)
    assert late.sum() == 1  # spikes after the last step are dropped


def test_latency_code_carries_its_ones_as_compressed_rows():
    x = torch.rand(7, 50, generator=torch.Generator().manual_seed(0))
    spikes = latency_encode(x, 30)
    # the dense code from the formula, independently of the encoder's kernel
    expected = torch.zeros(30, 7, 50, dtype=torch.uint8)
    for b in range(7):
        for i in range(50):
            value = float(x[b, i])
            if value > 0.2:
                t = math.floor(20 * math.log(value / (value - 0.2)))
                if t < 30:
                    expected[t, b, i] = 1
    assert torch.equal(spikes, expected)
    offsets, columns = attached_rows(spikes)
    flat = spikes.reshape(30 * 7, 50)
    assert offsets.tolist() == [0, *flat.sum(1).cumsum(0).tolist()]
    assert columns.tolist() == flat.nonzero()[:, 1].tolist()  # row by row, ascending


def test_an_empty_batch_encodes_to_an_empty_code():
    empty = torch.zeros(0, 5)
    assert latency_encode(empty, 10).shape == (10, 0, 5)
    assert poisson_encode(empty, 10).shape == (10, 0, 5)
    assert attached_rows(latency_encode(empty, 10))[0].tolist() == [0]


def test_rows_are_not_returned_after_an_in_place_change():
    spikes = latency_encode(torch.rand(3, 20, generator=torch.Generator().manual_seed(1)), 10)
    assert attached_rows(spikes) is not None
    spikes[0, 0, 0] = 1 - spikes[0, 0, 0]
    assert attached_rows(spikes) is None
    assert attached_rows(spikes.clone()) is None  # a copy carries no rows


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (torch.rand(2, 3, 4), r"shape \[B, N\]"),
        (torch.tensor([[0.5, float("nan")]]), "NaN"),
        (torch.tensor([[1.5]]), r"in \[0, 1\]"),
        (torch.tensor([[1]], dtype=torch.uint8), "divide uint8 pixels by 255"),
    ],
)
def test_bad_intensities(bad, message):
    with pytest.raises(ValueError, match=message):
        poisson_encode(bad, 3)
    with pytest.raises(ValueError, match=message):
        latency_encode(bad, 3)

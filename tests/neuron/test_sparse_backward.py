"""The sparse backward (Perez-Nieves & Goodman 2021) against dense and masked references."""

from __future__ import annotations

import math

import pytest
import torch

from spikeforge.neuron import spiking_linear, spiking_linear_reference
from spikeforge.neuron.sparse import (
    active_set,
    sparse_spiking_linear,
    spiking_linear_masked_reference,
)

BACKENDS = ["numba", "torch"]


def _problem(seed=0, steps=15, batch=4, inputs=24, outputs=9, density=0.3):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.rand(steps, batch, inputs, generator=gen) < density).float().requires_grad_()
    w = (torch.randn(outputs, inputs, generator=gen) * 0.6).requires_grad_()
    g = torch.randn(steps, batch, outputs, generator=gen)
    return x, w, g


def _grads(out, g, x, w):
    return torch.autograd.grad((out * g).sum(), [x, w])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("surrogate", ["inverse-square", "exp"])
def test_unbounded_active_set_equals_dense_backward(backend, surrogate):
    x, w, g = _problem()
    sparse = sparse_spiking_linear(x, w, 0.9, 1.0, surrogate, None, math.inf, backend)
    dense = spiking_linear(x, w, 0.9, 1.0, surrogate, None, backend)
    oracle = spiking_linear_reference(x, w, 0.9, 1.0, surrogate)
    assert torch.equal(sparse, dense)
    grads = zip(
        _grads(sparse, g, x, w), _grads(dense, g, x, w), _grads(oracle, g, x, w), strict=True
    )
    for a, b, c in grads:
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bound", [0.5, 0.2, 0.05])
def test_finite_bound_equals_masked_dense_backward(backend, bound):
    x, w, g = _problem(seed=1)
    stats: dict = {}
    sparse = sparse_spiking_linear(
        x, w, 0.9, 1.0, "inverse-square", None, bound, backend, None, stats
    )
    masked = spiking_linear_masked_reference(x, w, 0.9, 1.0, "inverse-square", None, bound)
    dense = spiking_linear(x, w, 0.9, 1.0, "inverse-square", None, backend)
    assert torch.equal(sparse, masked)
    sparse_grads, masked_grads = _grads(sparse, g, x, w), _grads(masked, g, x, w)
    for a, b in zip(sparse_grads, masked_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # the bound really drops gradient: the plain dense backward differs
    assert not torch.allclose(sparse_grads[1], _grads(dense, g, x, w)[1], atol=1e-4)
    assert 0 < stats["active_fraction"] < 1


def test_public_entry_point_and_uint8_input():
    x, w, g = _problem(seed=2)
    via_lif = spiking_linear(
        x.detach().to(torch.uint8), w, 0.9, 1.0, "inverse-square", backward="sparse"
    )
    direct = sparse_spiking_linear(x.detach(), w, 0.9, 1.0, "inverse-square", None, 0.2)
    assert torch.equal(via_lif, direct)
    (gw,) = torch.autograd.grad((via_lif * g).sum(), [w])
    (gw2,) = torch.autograd.grad((direct * g).sum(), [w])
    torch.testing.assert_close(gw, gw2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_leaks_through_inactive_steps_and_stops_at_a_reset(backend):
    """Hand computation for one neuron: d[t] = A[t] g[t] s'[t] + beta (1 - s[t]) d[t+1]."""
    beta, k = 0.5, 100.0
    current = torch.tensor([0.9, 0.1, 0.45, 0.2, 0.5, 1.2, 0.3])
    # u = .9, .55, .725, .5625, .78125, 1.590625 (spike, reset), .3
    x = torch.eye(7).unsqueeze(1).requires_grad_()  # input i spikes only at step i
    w = current.view(1, 7).clone().requires_grad_()
    out = sparse_spiking_linear(x, w, beta, 1.0, "inverse-square", k, 0.3, backend)
    u = torch.tensor([0.9, 0.55, 0.725, 0.5625, 0.78125, 1.590625, 0.3])
    spikes = (u >= 1).float()
    assert out.view(7).tolist() == spikes.tolist()
    active = (u - 1).abs() < 0.3  # T F T F T F F
    g = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    sig = 1 / (k * (u - 1).abs() + 1) ** 2
    expected = torch.zeros(7)
    carry = 0.0
    for t in range(6, -1, -1):
        carry = float(active[t]) * g[t] * sig[t] + beta * (1 - spikes[t]) * carry
        expected[t] = carry
    # by hand: nothing is active at or after the spike at step 5, so d[5] = d[6] = 0, and
    # d[3] = beta d[4] leaks through the inactive step 3 (the old all-masked rule gave 0 there)
    assert expected[5] == 0 and expected[6] == 0
    torch.testing.assert_close(expected[3], beta * expected[4])
    assert expected[1] > 0 and expected[3] > 0
    gx, gw = torch.autograd.grad((out * g.view(7, 1, 1)).sum(), [x, w])
    torch.testing.assert_close(gw.view(7), expected)  # dW[0, i] = d[i] (input i at step i)
    torch.testing.assert_close(gx.view(7, 7).diagonal(), expected * current)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_spike_cuts_the_leak_of_a_later_active_entry(backend):
    """The span of an active entry stops at the neuron's previous spike."""
    beta, k = 0.5, 10.0
    current = torch.tensor([0.8, 1.0, 0.2, 0.85])  # u = .8, 1.4 (spike), .2, .95
    x = torch.eye(4).unsqueeze(1).requires_grad_()
    w = current.view(1, 4).clone().requires_grad_()
    out = sparse_spiking_linear(x, w, beta, 1.0, "inverse-square", k, 0.25, backend)
    g = torch.ones(4, 1, 1)
    (gw,) = torch.autograd.grad((out * g).sum(), [w])
    u = torch.tensor([0.8, 1.4, 0.2, 0.95])
    sig = 1 / (k * (u - 1).abs() + 1) ** 2
    # active: steps 0 and 3. d[3] = s'[3]; d[2] = beta d[3]; d[1] = 0 (spike at 1 resets:
    # inactive there, and the carry is cut); d[0] = s'[0].
    expected = torch.tensor([sig[0], 0.0, beta * sig[3], sig[3]])
    torch.testing.assert_close(gw.view(4), expected)


def test_active_set_of_hand_made_trace():
    membrane = torch.tensor([[0.0, 0.81, 0.79, 1.19, 1.21, 1.0, 5.0, 0.95]]).view(8, 1, 1)
    mask = active_set(membrane, threshold=1.0, active_bound=0.2).view(-1)
    assert mask.tolist() == [False, True, False, True, False, True, False, True]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("density", [0.3, 0.02])  # 0.02: the Numba current made from the ones
def test_active_set_recorded_by_forward_matches_membrane(backend, density):
    x, w, _ = _problem(seed=3, steps=30, inputs=200, density=density)
    w = (w.detach() * (0.3 / density) ** 0.5).requires_grad_()  # some entries near threshold
    stats: dict = {}
    out = sparse_spiking_linear(x, w, 0.9, 1.0, "inverse-square", None, 0.2, backend, None, stats)
    from spikeforge.neuron import lif_scan

    current = x.detach() @ w.detach().t()
    spikes, membrane = lif_scan(current, 0.9, 1.0)
    active = active_set(membrane, 1.0, 0.2)
    assert torch.equal(out, spikes)
    assert stats["active_entries"] == int(active.sum()) > 0
    assert stats["active_fraction"] == pytest.approx(float(active.float().mean()))


def test_bad_input_messages():
    x, w, _ = _problem()
    with pytest.raises(ValueError, match="active_bound must be positive"):
        sparse_spiking_linear(x, w, 0.9, 1.0, active_bound=0.0)
    with pytest.raises(ValueError, match="neither 0 nor 1"):
        sparse_spiking_linear(x.detach() * 0.5, w, 0.9, 1.0, backend="numba")
    with pytest.raises(ValueError, match="unknown backward"):
        spiking_linear(x, w, 0.9, 1.0, backward="fast")

"""The modules: initialisation, readout accumulation, the whole network against a naive loop."""

import math

import pytest
import torch

from spikeforge.neuron import spiking_linear_reference
from spikeforge.nn import AccumulatorReadout, SpikingLinear, SpikingMLP, bondarev_thresholds


def test_bondarev_init_and_thresholds():
    torch.manual_seed(0)
    model = SpikingMLP([784, 300, 300, 10], 0.8187, bondarev_thresholds([784, 300, 300, 10]))
    assert [layer.threshold for layer in model.hidden] == pytest.approx([0.5, 0.3])
    assert sum(p.numel() for p in model.parameters()) == 328_200
    w = model.hidden[0].weight
    bound = math.sqrt(3 / 784)
    assert float(w.detach().abs().max()) <= bound
    # U(-a, a) has variance a^2/3
    assert float(w.detach().var()) == pytest.approx(1 / 784, rel=0.05)


def test_readout_accumulates_membrane():
    readout = AccumulatorReadout(3, 2, beta=0.5)
    with torch.no_grad():
        readout.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]))
    spikes = torch.tensor([[[1.0, 0.0, 1.0]], [[0.0, 1.0, 0.0]], [[1.0, 1.0, 1.0]]])
    # class 0: v = 1, 0.5, 1.25 ; class 1: v = 1, 1.5, 2.75
    assert readout(spikes)[0].tolist() == pytest.approx([1.25, 2.75])
    trace = readout.membrane(spikes)[:, 0]
    torch.testing.assert_close(trace, torch.tensor([[1.0, 1.0], [0.5, 1.5], [1.25, 2.75]]))


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_network_equals_naive_per_step_loop(backend):
    torch.manual_seed(3)
    model = SpikingMLP([20, 16, 12, 4], 0.8187, [0.5, 0.3], backend=backend).double()
    x = (torch.rand(10, 5, 20) < 0.3).to(torch.uint8)
    target = torch.randint(0, 4, (5,))
    loss = torch.nn.functional.cross_entropy(model(x), target)
    grads = torch.autograd.grad(loss, list(model.parameters()))

    w1, w2, w3 = (p.detach().clone().requires_grad_() for p in model.parameters())
    h1 = spiking_linear_reference(x.double(), w1, 0.8187, 0.5)
    h2 = spiking_linear_reference(h1, w2, 0.8187, 0.3)
    scores = sum(h2[k] @ w3.t() for k in range(10))
    ref_loss = torch.nn.functional.cross_entropy(scores, target)
    ref_grads = torch.autograd.grad(ref_loss, [w1, w2, w3])
    torch.testing.assert_close(loss, ref_loss)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-12)


def test_record_returns_every_layer():
    model = SpikingMLP([6, 5, 4, 3], 0.9, [0.2, 0.2])
    rec = model.record((torch.rand(7, 2, 6) < 0.5).to(torch.uint8))
    assert [s.shape for s in rec.spikes] == [torch.Size([7, 2, 5]), torch.Size([7, 2, 4])]
    assert [m.shape for m in rec.membranes] == [torch.Size([7, 2, 5]), torch.Size([7, 2, 4])]
    assert rec.readout_membrane.shape == (7, 2, 3)


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match=r"expected time-major spikes \[T, B, 6\]"):
        SpikingMLP([6, 5, 3], 0.9, [0.2])(torch.zeros(2, 6))
    with pytest.raises(ValueError, match="beta must lie in"):
        SpikingLinear(3, 2, beta=1.5, threshold=1.0)
    with pytest.raises(ValueError, match="threshold must be positive"):
        SpikingLinear(3, 2, beta=0.5, threshold=0.0)
    with pytest.raises(ValueError, match="need 1 betas and thresholds"):
        SpikingMLP([6, 5, 3], 0.9, [0.2, 0.3])


def test_sparse_layers_store_their_weights_input_major():
    """Same values as a dense layer from the same seed, stored as W^T; the sparse backward's
    weight gradient comes in that layout, so autograd keeps it without a copy."""
    torch.manual_seed(3)
    dense = SpikingLinear(30, 20, 0.9, 1.0, "inverse-square", backend="numba")
    torch.manual_seed(3)
    sparse = SpikingLinear(
        30, 20, 0.9, 1.0, "inverse-square", backend="numba", backward="sparse", active_bound=0.5
    )
    assert torch.equal(dense.weight, sparse.weight)
    assert dense.weight.stride() == (30, 1) and sparse.weight.stride() == (1, 20)
    x = (torch.rand(40, 3, 30, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    with torch.no_grad():
        sparse.weight.mul_(3.0)
    sparse(x).sum().backward()
    assert sparse.weight.grad.stride() == sparse.weight.stride()
    assert sparse.weight.grad.abs().sum() > 0

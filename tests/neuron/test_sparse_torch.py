"""The PyTorch form of the sparse backward (the CUDA path), piece by piece, on the CPU."""

from __future__ import annotations

import pytest
import torch

from spikeforge.neuron import lif_scan, spiking_linear
from spikeforge.neuron.sparse import sparse_spiking_linear
from spikeforge.neuron.sparse_torch import gather_active_entries, solve_chains
from spikeforge.neuron.surrogates import get_surrogate


def test_solve_chains_equals_the_sequential_recurrence():
    """d[e] = a[e] + c[e] d[succ[e]] along random chains of lengths 1..40, against a loop."""
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 41, (30,), generator=gen).tolist()
    order = torch.randperm(sum(lengths), generator=gen)  # chains interleaved in memory
    successor = torch.full((sum(lengths),), -1, dtype=torch.int64)
    chains, start = [], 0
    for length in lengths:
        members = order[start : start + length].tolist()
        for here, after in zip(members, members[1:], strict=False):
            successor[here] = after
        chains.append(members)
        start += length
    a = torch.randn(successor.shape[0], generator=gen, dtype=torch.float64)
    c = torch.rand(successor.shape[0], generator=gen, dtype=torch.float64)
    expected = torch.zeros_like(a)
    for members in chains:
        carry = 0.0
        for e in reversed(members):
            carry = a[e] + (c[e] * carry if successor[e] >= 0 else 0.0)
            expected[e] = carry
    torch.testing.assert_close(solve_chains(a, c, successor, max(lengths)), expected)
    # too few rounds for the longest chain gives a different answer: the bound matters
    assert not torch.allclose(solve_chains(a, c, successor, 3), expected)


def test_entries_of_a_hand_made_trace():
    """One neuron, threshold 1, bound 0.25: u = .8 .5 1.1 .9 .95 1.3 .2 .78.

    Active: steps 0 (.8), 2 (1.1, fires), 3 (.9), 4 (.95), 7 (.78); spikes at 2 and 5.
    Spans: step 0 from 0; 2 from 1; 3 from 3 (after the spike-entry at 2); 4 from 4; 7 from 6
    (after the spike at 5). Successors: 0 -> 2 (no spike between, 0 did not fire); 2 -> none
    (it fired); 3 -> 4; 4 -> none (the next event, step 5, is an inactive spike); 7 -> none.
    """
    membrane = torch.tensor([0.8, 0.5, 1.1, 0.9, 0.95, 1.3, 0.2, 0.78]).view(8, 1, 1)
    spikes = (membrane >= 1).float()
    sur = get_surrogate("inverse-square")
    entries = gather_active_entries(membrane, spikes, 1.0, 0.25, sur, 10.0)
    assert entries.step.tolist() == [0, 2, 3, 4, 7]
    assert entries.span_start.tolist() == [0, 1, 3, 4, 6]
    assert entries.successor.tolist() == [1, -1, 3, -1, -1]
    expected = sur.derivative(membrane.view(-1)[[0, 2, 3, 4, 7]] - 1.0, 10.0)
    torch.testing.assert_close(entries.surrogate, expected)


def test_entries_of_several_neurons_match_the_active_set():
    gen = torch.Generator().manual_seed(4)
    current = torch.rand(25, 3, 7, generator=gen) * 0.6
    spikes, membrane = lif_scan(current, 0.9, 1.0)
    entries = gather_active_entries(
        membrane, spikes, 1.0, 0.2, get_surrogate("inverse-square"), 100.0
    )
    active = (membrane - 1.0).abs() < 0.2
    marked = torch.zeros_like(active)
    marked[entries.step, entries.batch, entries.neuron] = True
    assert torch.equal(marked, active) and entries.step.shape[0] == int(active.sum()) > 10
    # a successor is the same neuron, later, with no spike of that neuron in between
    linked = entries.successor >= 0
    here, there = linked.nonzero().view(-1), entries.successor[linked]
    assert torch.equal(entries.batch[here], entries.batch[there])
    assert torch.equal(entries.neuron[here], entries.neuron[there])
    assert bool((entries.step[there] > entries.step[here]).all())
    for e, s in zip(here.tolist(), there.tolist(), strict=True):
        t0, t1 = int(entries.step[e]), int(entries.step[s])
        b, j = int(entries.batch[e]), int(entries.neuron[e])
        assert spikes[t0:t1, b, j].sum() == 0
        assert entries.span_start[s] == t0 + 1


def _saved_bytes(fn):
    sizes: dict[int, int] = {}

    def pack(tensor):
        if not isinstance(tensor, torch.nn.Parameter):
            sizes[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(sizes.values())


@pytest.mark.parametrize("bound,density", [(0.05, 0.2), (0.2, 0.2), (0.2, 0.04)])
def test_torch_path_keeps_no_dense_membrane_for_backward(bound, density):
    """The torch path saves the entries, the input (its bytes, or the coordinates of its spikes
    when sparser) and the weight: less than the dense backward's float surrogate of every
    (t, b, j), and less still at a narrower bound."""
    gen = torch.Generator().manual_seed(6)
    x = (torch.rand(50, 16, 30, generator=gen) < density).to(torch.uint8)
    w = (torch.randn(40, 30, generator=gen) * 0.5).requires_grad_()
    dense = _saved_bytes(lambda: spiking_linear(x, w, 0.9, 1.0, backend="torch"))
    sparse = _saved_bytes(
        lambda: sparse_spiking_linear(x, w, 0.9, 1.0, "inverse-square", None, bound, "torch")
    )
    floats = 50 * 16 * 40 * 4
    assert sparse < dense - floats // 2
    narrow = _saved_bytes(
        lambda: sparse_spiking_linear(x, w, 0.9, 1.0, "inverse-square", None, bound / 4, "torch")
    )
    assert narrow < sparse
    if density < 0.1:  # coordinates (8 bytes a spike) instead of 50 * 16 * 30 bytes
        assert sparse < dense - floats // 2 - 50 * 16 * 30 // 2


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_no_active_entry_and_no_input_spike_give_zero_gradients(backend):
    """Edge cases of the entry lists: nothing near threshold, then an all-silent input."""
    gen = torch.Generator().manual_seed(8)
    x = (torch.rand(12, 3, 10, generator=gen) < 0.3).float().requires_grad_()
    w = (torch.randn(6, 10, generator=gen) * 0.01).requires_grad_()  # far below threshold
    out = sparse_spiking_linear(x, w, 0.9, 1.0, "inverse-square", None, 0.05, backend)
    grad_x, grad_w = torch.autograd.grad(out.sum() + 0.0 * w.sum(), [x, w])
    assert out.sum() == 0 and grad_x.abs().sum() == 0 and grad_w.abs().sum() == 0
    silent = torch.zeros(12, 3, 10, requires_grad=True)
    w2 = torch.full((6, 10), 0.5, requires_grad=True)
    out = sparse_spiking_linear(silent, w2, 0.9, 1.0, "inverse-square", None, 0.5, backend)
    (grad_w,) = torch.autograd.grad(out.sum() + 0.0 * w2.sum(), [w2])
    assert out.sum() == 0 and grad_w.abs().sum() == 0

"""The Triton kernels of the CUDA path against the PyTorch forms they replace.

Without a GPU they run in Triton's interpreter on the CPU (``TRITON_INTERPRET=1``, set before
the kernels are first imported); with one, on CUDA. Skipped where Triton is not installed (it
comes with PyTorch's CUDA builds, not with the CPU build ``make`` installs).
"""

from __future__ import annotations

import math
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # before Triton's first import
pytest.importorskip("triton")

from spikeforge.neuron import _triton_kernels as kernels  # noqa: E402
from spikeforge.neuron.lif import _torch_bptt, lif_scan, spiking_linear  # noqa: E402
from spikeforge.neuron.sparse import (  # noqa: E402
    sparse_spiking_linear,
    spiking_linear_masked_reference,
)
from spikeforge.neuron.sparse_torch import (  # noqa: E402
    compact_input,
    gather_active_entries,
    offsets_from_counts,
)
from spikeforge.neuron.surrogates import get_surrogate  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def use_triton(monkeypatch):
    """The layers take the Triton kernels (interpreted on the CPU)."""
    monkeypatch.setenv("SPIKEFORGE_TRITON", "1")


@pytest.fixture
def no_triton(monkeypatch):
    monkeypatch.setenv("SPIKEFORGE_TRITON", "0")


def _current(seed, steps=30, batch=3, width=70, gain=0.9):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(steps, batch, width, generator=gen) * gain + 0.3).to(DEVICE)


def test_forward_scan_is_bit_identical_to_the_loop_and_counts_active_entries(no_triton):
    current = _current(0)
    spikes, membrane = lif_scan(current, 0.9, 1.0)
    k_spikes, k_membrane, counts = kernels.lif_forward(current, 0.9, 1.0, 0.2)
    assert torch.equal(k_spikes, spikes)
    assert torch.equal(k_membrane, membrane)
    assert 0 < spikes.mean() < 0.5
    expected = ((membrane - 1.0).abs() < 0.2).sum(0).to(torch.int32)
    assert torch.equal(counts, expected)
    assert counts.sum() > 0


def test_backward_scan_is_bit_identical_to_the_loop(no_triton):
    current = _current(1)
    spikes, membrane = lif_scan(current, 0.9, 1.0)
    flat = membrane.view(30, -1)
    gen = torch.Generator().manual_seed(2)
    grad = torch.randn(flat.shape, generator=gen).to(DEVICE)
    slope = 1 / (1 + 10 * (flat - 1).abs()) ** 2
    spikes_u8 = spikes.view(30, -1).to(torch.uint8)
    expected = _torch_bptt(grad, slope, spikes_u8, 0.9)
    assert torch.equal(kernels.lif_backward(grad, slope, spikes_u8, 0.9), expected)
    broadcast = grad[:1].expand_as(grad)  # a readout's sum over time hands back stride 0
    expected = _torch_bptt(broadcast.contiguous(), slope, spikes_u8, 0.9)
    assert torch.equal(kernels.lif_backward(broadcast, slope, spikes_u8, 0.9), expected)


def _entries(membrane, spikes, counts, bound, threshold=1.0):
    steps = membrane.shape[0]
    offsets = offsets_from_counts(counts)
    listed = kernels.gather_entries(
        membrane.view(steps, -1),
        spikes.view(steps, -1),
        offsets,
        int(offsets[-1]),
        threshold,
        bound,
    )
    return (offsets, *listed)


@pytest.mark.parametrize("bound", [0.2, 0.6, math.inf])
def test_entries_are_the_sorted_torch_list_column_by_column(bound):
    current = _current(3)
    spikes, membrane, counts = kernels.lif_forward(current, 0.9, 1.0, bound)
    offsets, step, offset, successor, span_start = _entries(membrane, spikes, counts, bound)
    surrogate = get_surrogate("inverse-square")
    expected = gather_active_entries(membrane, spikes, 1.0, bound, surrogate, 10.0)
    width = current.shape[2]
    assert torch.equal(step.long(), expected.step)
    cells = expected.batch * width + expected.neuron
    assert torch.equal(torch.repeat_interleave(torch.diff(offsets)), cells)
    assert torch.equal(surrogate.derivative(offset, 10.0), expected.surrogate)
    assert torch.equal(successor, expected.successor)
    assert torch.equal(span_start.long(), expected.span_start)
    assert (successor >= 0).any() and (successor < 0).any()


def test_entries_of_a_hand_made_trace():
    # one neuron, threshold 1, bound 0.2: active at t = 1, 2 (fires: 1.1 >= 1), 4, 5;
    # t = 3 fires far above threshold (an event, not an entry)
    u = torch.tensor([0.1, 0.85, 1.1, 1.5, 0.9, 0.95, 0.2], device=DEVICE).view(7, 1)
    s = (u >= 1).float()
    counts = ((u - 1).abs() < 0.2).sum(0).to(torch.int32)
    offsets, step, _, successor, span_start = _entries(u, s, counts, 0.2)
    assert offsets.tolist() == [0, 4]
    assert step.tolist() == [1, 2, 4, 5]
    # entry 1 chains to 2; entry 2 fired; entry 4 chains to 5 (index 3); 5 is the last
    assert successor.tolist() == [1, -1, 3, -1]
    assert span_start.tolist() == [0, 2, 4, 5]


@pytest.mark.parametrize("density", [0.0, 0.05, 0.3])
def test_input_rows_are_compact_inputs_csr(density):
    gen = torch.Generator().manual_seed(9)
    x = (torch.rand(30, 4, 50, generator=gen) < density).to(torch.uint8)
    x[3, 1, 7] = 1  # at least one spike
    flat = x.view(-1, 50).to(DEVICE)
    offsets = offsets_from_counts(flat.sum(0, dtype=torch.int64))
    kept = kernels.input_rows(flat, offsets, int(offsets[-1]))
    rows = [r for i in range(50) for r in flat[:, i].nonzero().flatten().tolist()]
    assert kept.dtype == torch.int32
    assert kept[:51].tolist() == offsets.tolist()
    assert kept[51:].tolist() == rows
    if 8 * len(rows) < flat.numel():
        assert torch.equal(kept, compact_input(flat.view(30, 4, 50)))


def _masked_current_grad(membrane, spikes, grad, beta, bound, surrogate, scale):
    """The dense recurrence with the surrogate zeroed off the active set (the oracle)."""
    offset = membrane - 1.0
    slope = surrogate.derivative(offset, scale) * (offset.abs() < bound)
    return _torch_bptt(grad, slope, spikes.to(torch.uint8), beta)


@pytest.mark.parametrize("bound", [0.2, 0.6, math.inf])
def test_sparse_backward_current_equals_the_masked_dense_recurrence(no_triton, bound):
    current = _current(4)
    spikes, membrane, counts = kernels.lif_forward(current, 0.9, 1.0, bound)
    flat_u, flat_s = membrane.view(30, -1), spikes.view(30, -1)
    offsets, step, offset, successor, span_start = _entries(flat_u, flat_s, counts, bound)
    surrogate = get_surrogate("fast-sigmoid")
    sigma = surrogate.derivative(offset, 5.0)
    gen = torch.Generator().manual_seed(5)
    grad = torch.randn(flat_u.shape, generator=gen).to(DEVICE)
    per_cell = torch.randn(flat_u.shape[1], generator=gen).to(DEVICE)
    entries = (offsets, step, sigma, successor, span_start)
    got = kernels.sparse_backward_current(grad, per_cell, entries, 30, 0.9)
    expected = _masked_current_grad(flat_u, flat_s, grad + per_cell, 0.9, bound, surrogate, 5.0)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    only_counts = kernels.sparse_backward_current(None, per_cell, entries, 30, 0.9)
    expected = _masked_current_grad(
        flat_u, flat_s, per_cell.expand_as(grad), 0.9, bound, surrogate, 5.0
    )
    torch.testing.assert_close(only_counts, expected, rtol=1e-5, atol=1e-6)
    assert got.abs().sum() > 0


def _layer_grads(layer, x, w, g):
    x = x.clone().requires_grad_()
    w = w.clone().requires_grad_()
    out = layer(x, w)
    if isinstance(out, tuple):
        out = out[0]
    gx, gw = torch.autograd.grad((out * g).sum(), [x, w])
    return out, gx, gw


def _layer_problem(seed, density=0.15):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.rand(25, 4, 40, generator=gen) < density).float().to(DEVICE)
    w = (torch.randn(30, 40, generator=gen) * 0.8).to(DEVICE)
    g = torch.randn(25, 4, 30, generator=gen).to(DEVICE)
    return x, w, g


@pytest.mark.parametrize("bound,density", [(0.3, 0.15), (math.inf, 0.15), (0.3, 0.05)])
def test_sparse_layer_through_the_kernels_equals_the_masked_oracle(monkeypatch, bound, density):
    """Input kept as bytes (15% spikes) or as compressed rows (5%)."""
    x, w, g = _layer_problem(6, density)

    def sparse(a, b):
        return sparse_spiking_linear(a, b, 0.9, 1.0, "inverse-square", None, bound, "torch")

    def oracle(a, b):
        return spiking_linear_masked_reference(a, b, 0.9, 1.0, "inverse-square", None, bound)

    monkeypatch.setenv("SPIKEFORGE_TRITON", "1")
    got = _layer_grads(sparse, x, w, g)
    monkeypatch.setenv("SPIKEFORGE_TRITON", "0")
    expected = _layer_grads(oracle, x.double(), w.double(), g.double())
    assert torch.equal(got[0], expected[0].float())
    for a, b in zip(got[1:], expected[1:], strict=True):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-5)
    assert got[2].abs().sum() > 0


def test_dense_layer_through_the_kernels_equals_the_loops(monkeypatch):
    x, w, g = _layer_problem(7)

    def dense(a, b):
        return spiking_linear(a, b, 0.9, 1.0, "exp", None, "torch")

    monkeypatch.setenv("SPIKEFORGE_TRITON", "1")
    got = _layer_grads(dense, x, w, g)
    monkeypatch.setenv("SPIKEFORGE_TRITON", "0")
    expected = _layer_grads(dense, x, w, g)
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a, b)


def test_sparse_layer_through_the_kernels_refuses_a_non_binary_input(use_triton):
    x, w, _ = _layer_problem(8)
    x[0, 0, :3] = 0.5
    with pytest.raises(ValueError, match="3 input values are neither 0 nor 1"):
        sparse_spiking_linear(x, w, 0.9, 1.0, "inverse-square", None, 0.3, "torch")

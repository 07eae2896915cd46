"""Stacked sparse layers hand their gradients over at the active entries only (Numba backend);
the result must equal the PyTorch backend, which passes dense gradients, and the masked oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spikeforge._spike_rows import attached_rows
from spikeforge.data import latency_encode
from spikeforge.neuron.sparse import (
    sparse_readout,
    sparse_spiking_linear,
    spiking_linear_masked_reference,
)
from spikeforge.nn import SpikingMLP


def _leaky_readout(spikes, weight, beta, mode):
    """Naive readout: v[t] = beta v[t-1] + W b[t], then max or mean over time."""
    v = torch.zeros(spikes.shape[1], weight.shape[0])
    trace = []
    for t in range(spikes.shape[0]):
        v = beta * v + spikes[t].to(weight.dtype) @ weight.t()
        trace.append(v)
    trace = torch.stack(trace)
    return trace.amax(0) if mode == "max" else trace.mean(0)


def _stack(backend, x, w1, w2, readout, mode="max"):
    h1 = sparse_spiking_linear(x, w1, 0.9, 1.0, "inverse-square", None, 0.3, backend)
    h2 = sparse_spiking_linear(h1, w2, 0.9, 1.0, "inverse-square", None, 0.3, backend)
    if backend == "numba":
        return sparse_readout(h2, readout, 0.8, mode)
    return _leaky_readout(h2, readout, 0.8, mode)


def _weights(seed):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.rand(20, 6, 40, generator=gen) < 0.15).to(torch.uint8)
    w1 = (torch.randn(30, 40, generator=gen) * 0.7).requires_grad_()
    w2 = (torch.randn(25, 30, generator=gen) * 0.7).requires_grad_()
    readout = (torch.randn(5, 25, generator=gen) * 0.3).requires_grad_()
    return x, w1, w2, readout


@pytest.mark.parametrize("seed,mode", [(0, "max"), (1, "max"), (0, "sum")])
def test_numba_stack_equals_torch_stack_and_masked_oracle(seed, mode):
    x, w1, w2, readout = _weights(seed)
    g = torch.randn(6, 5, generator=torch.Generator().manual_seed(seed + 10))
    numba_out = _stack("numba", x, w1, w2, readout, mode)
    torch_out = _stack("torch", x, w1, w2, readout, mode)
    h1 = spiking_linear_masked_reference(x, w1, 0.9, 1.0, "inverse-square", None, 0.3)
    h2 = spiking_linear_masked_reference(h1, w2, 0.9, 1.0, "inverse-square", None, 0.3)
    oracle_out = _leaky_readout(h2, readout, 0.8, mode)
    torch.testing.assert_close(numba_out, torch_out)
    torch.testing.assert_close(numba_out, oracle_out)
    params = [w1, w2, readout]
    numba_grads = torch.autograd.grad((numba_out * g).sum(), params)
    torch_grads = torch.autograd.grad((torch_out * g).sum(), params)
    oracle_grads = torch.autograd.grad((oracle_out * g).sum(), params)
    for a, b, c in zip(numba_grads, torch_grads, oracle_grads, strict=True):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("mode", ["max", "sum"])
def test_readout_wider_than_one_lane_block_equals_the_naive_readout(mode):
    """20 outputs pad to two blocks of 16 lanes; the pad must not leak into scores or grads."""
    x, w1, _, _ = _weights(3)
    h1 = sparse_spiking_linear(x, w1, 0.9, 1.0, "inverse-square", None, 0.3, "numba")
    readout = torch.randn(20, 30, generator=torch.Generator().manual_seed(5)) * 0.3
    readout.requires_grad_()
    g = torch.randn(6, 20, generator=torch.Generator().manual_seed(6))
    scores = sparse_readout(h1, readout, 0.85, mode)
    h1_ref = h1.detach().float().requires_grad_()
    readout_ref = readout.detach().clone().requires_grad_()
    expected = _leaky_readout(h1_ref, readout_ref, 0.85, mode)
    torch.testing.assert_close(scores, expected)
    seen = {}
    h1.register_hook(lambda grad: seen.setdefault("grad", grad))
    (scores * g).sum().backward()
    (expected * g).sum().backward()
    torch.testing.assert_close(readout.grad, readout_ref.grad, rtol=1e-4, atol=1e-6)
    index = seen["grad"]._indices()
    reference = h1_ref.grad[index[0], index[1], index[2]]
    torch.testing.assert_close(seen["grad"]._values(), reference, rtol=1e-4, atol=1e-6)


def test_layer_reads_the_rows_an_encoder_attached_and_ignores_them_once_stale():
    x = torch.rand(6, 40, generator=torch.Generator().manual_seed(7))
    w = (torch.randn(30, 40, generator=torch.Generator().manual_seed(8)) * 0.7).requires_grad_()
    spikes = latency_encode(x, 20, tau=5.0)
    assert attached_rows(spikes) is not None

    def layer(inputs):
        out = sparse_spiking_linear(inputs, w, 0.9, 1.0, "inverse-square", None, 0.3, "numba")
        (grad,) = torch.autograd.grad((out * torch.arange(30.0)).sum(), w)
        return out, grad

    for a, b in zip(layer(spikes), layer(spikes.clone()), strict=True):  # rows vs a scan
        assert torch.equal(a, b)
    spikes[3, 2] = 1  # in place: the attached rows no longer describe the tensor
    assert attached_rows(spikes) is None
    for a, b in zip(layer(spikes), layer(spikes.clone()), strict=True):
        assert torch.equal(a, b)


def test_max_readout_shares_the_gradient_between_tied_steps_like_amax():
    """A readout unit that never receives input has v = 0 at every step: all T steps tie."""
    x, w1, _, _ = _weights(2)
    h1 = sparse_spiking_linear(x, w1, 0.9, 1.0, "inverse-square", None, 0.3, "numba")
    readout = torch.randn(5, 30, generator=torch.Generator().manual_seed(4))
    readout[:, 1:] = 0.0  # only hidden unit 0 drives the readout
    readout.requires_grad_()
    seen = {}
    h1.register_hook(lambda grad: seen.setdefault("grad", grad))
    sparse_readout(h1, readout, 0.9, "max").sum().backward()
    h1_ref = h1.detach().requires_grad_()
    _leaky_readout(h1_ref, readout.detach().requires_grad_(), 0.9, "max").sum().backward()
    index = seen["grad"]._indices()
    expected = h1_ref.grad[index[0], index[1], index[2]]
    torch.testing.assert_close(seen["grad"]._values(), expected)


def test_readout_sends_a_sparse_gradient_at_the_active_entries():
    x, w1, _, _ = _weights(2)
    readout = torch.randn(5, 30, generator=torch.Generator().manual_seed(3)).requires_grad_()
    h1 = sparse_spiking_linear(x, w1, 0.9, 1.0, "inverse-square", None, 0.3, "numba")
    seen = {}
    h1.register_hook(lambda grad: seen.setdefault("grad", grad))
    # beta = 1, sum mode: score = (1/T) sum_t sum_{t' <= t} W b[t'], so the gradient at a spike
    # of step t is (T - t) / T times the column sums of W
    sparse_readout(h1, readout, 1.0, "sum").sum().backward()
    grad = seen["grad"]
    assert grad.is_sparse and 0 < grad._nnz() < h1.numel() / 2
    steps = h1.shape[0]
    late = (steps - torch.arange(steps, dtype=torch.float32)) / steps
    expected = late[:, None, None] * readout.detach().sum(0)
    index = grad._indices()
    torch.testing.assert_close(grad._values(), expected.expand(steps, 6, 30)[tuple(index)])
    weighted = (h1.detach() * late[:, None, None]).sum((0, 1))
    torch.testing.assert_close(readout.grad, torch.ones(5, 1) * weighted)


def test_sparse_readout_checks_width_mode_and_producer():
    x, w1, _, readout = _weights(2)
    h1 = sparse_spiking_linear(x, w1, 0.9, 1.0, "inverse-square", None, 0.3, "numba")
    with pytest.raises(ValueError, match="30 features but the weight expects 25"):
        sparse_readout(h1, readout, 0.9, "max")
    wide = torch.randn(5, 30)
    with pytest.raises(ValueError, match="'max' or 'sum'"):
        sparse_readout(h1, wide, 0.9, "last")
    with pytest.raises(ValueError, match="sparse-backward layer on the numba backend"):
        sparse_readout(h1.detach().clone(), wide, 0.9, "max")


def test_model_with_regularizer_style_dense_gradient_still_matches():
    """A second, dense consumer of the hidden spikes turns the handed-over gradient dense."""
    torch.manual_seed(0)
    x = (torch.rand(20, 6, 40) < 0.15).to(torch.uint8)
    models = {
        backend: SpikingMLP(
            [40, 30, 30, 5],
            0.9,
            [1.0, 1.0],
            "inverse-square",
            backend=backend,
            backward="sparse",
            active_bound=0.3,
            readout="max",
            readout_beta=0.9,
        )
        for backend in ("numba", "torch")
    }
    models["torch"].load_state_dict(models["numba"].state_dict())
    with torch.no_grad():
        for model in models.values():
            for layer in model.hidden:
                layer.weight.mul_(4.0)
    grads = {}
    for backend, model in models.items():
        scores, hidden = model.forward_with_spikes(x)
        loss = scores.square().sum() + sum(h.sum(0).square().mean() for h in hidden)
        loss.backward()
        grads[backend] = [p.grad for p in model.parameters()]
    for a, b in zip(grads["numba"], grads["torch"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_forward_scan_writes_the_output_spikes_as_compressed_rows():
    """The next layer reads these rows instead of scanning the float spikes: they must be them."""
    from spikeforge.neuron.sparse import _compact_rows

    x, w1, _, _ = _weights(4)
    h1 = sparse_spiking_linear(x, w1 * 2.0, 0.9, 1.0, "inverse-square", None, 0.3, "numba")
    offsets, columns = attached_rows(h1)
    expected_offsets, expected_columns = _compact_rows(h1.detach())
    assert int(offsets[-1]) == int(h1.sum()) > 0
    torch.testing.assert_close(offsets, expected_offsets)
    torch.testing.assert_close(columns.long(), expected_columns.long())
    with torch.no_grad():  # changed in place: the rows no longer describe the spikes
        h1[0, 0, 0] = 1 - h1[0, 0, 0]
    assert attached_rows(h1) is None


@pytest.mark.parametrize("only_counts", [False, True])
def test_spike_counts_gradient_reaches_the_entries_without_a_dense_gradient(only_counts):
    """A rate regulariser reads the layer's own spike counts: its gradient enters the sparse
    backward as [B, N] at the active entries. Same gradients as the torch backend, which
    broadcasts it over time, and as the masked oracle with counts taken by summing."""
    from spikeforge.neuron.sparse import spike_counts

    x, w1, w2, readout = _weights(5)
    w1 = (w1.detach() * 2.0).requires_grad_()
    grads = {}
    for backend in ("numba", "torch", "oracle"):
        if backend == "oracle":
            h1 = spiking_linear_masked_reference(x, w1, 0.9, 1.0, "inverse-square", None, 0.3)
            h2 = spiking_linear_masked_reference(h1, w2, 0.9, 1.0, "inverse-square", None, 0.3)
            counts = [h1.sum(0), h2.sum(0)]
            scores = _leaky_readout(h2, readout, 0.8, "max")
        else:
            h1 = sparse_spiking_linear(x, w1, 0.9, 1.0, "inverse-square", None, 0.3, backend)
            h2 = sparse_spiking_linear(h1, w2, 0.9, 1.0, "inverse-square", None, 0.3, backend)
            counts = [spike_counts(h1), spike_counts(h2)]
            if backend == "numba":
                assert counts[0] is not None and not hasattr(counts[0], "_spikeforge_spike_counts")
                torch.testing.assert_close(counts[0], h1.detach().sum(0))
                scores = sparse_readout(h2, readout, 0.8, "max")
            else:
                scores = _leaky_readout(h2, readout, 0.8, "max")
        loss = sum(((c - 1.5) ** 2).mean() for c in counts)
        if not only_counts:
            loss = loss + scores.square().sum()
        grads[backend] = torch.autograd.grad(loss, [w1, w2], allow_unused=True)
    for a, b, c in zip(grads["numba"], grads["torch"], grads["oracle"], strict=True):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-6)


def test_forward_scan_gives_the_same_entries_with_or_without_a_second_scan(monkeypatch):
    """The forward writes entries into room reserved per batch item and scans again with exact
    room when an item outgrows it: both ways give the same spikes, rows, entries and gradients."""
    import spikeforge.neuron.sparse as sparse

    gen = torch.Generator().manual_seed(3)
    x = (torch.rand(60, 5, 40, generator=gen) < 0.2).to(torch.uint8)
    w = (torch.randn(50, 40, generator=gen) * 0.5).requires_grad_()
    g = torch.randn(60, 5, 50, generator=gen)
    runs = {}
    for room in (1.0, 0.0):  # ample room; then 64 entries an item, which these outgrow
        monkeypatch.setattr(sparse, "_SCAN_ROOM", room)
        stats: dict = {}
        out = sparse_spiking_linear(
            x, w, 0.9, 1.0, "inverse-square", None, 0.5, "numba", None, stats
        )
        handle = getattr(out, sparse._HANDLE)
        entries = (handle.ints, handle.entry_offsets)  # the backward releases them
        (grad,) = torch.autograd.grad((out * g).sum(), [w])
        runs[room] = (out, (entries, attached_rows(out)), grad, stats["active_entries"])
    (out_a, (h_a, rows_a), grad_a, n_a), (out_b, (h_b, rows_b), grad_b, n_b) = runs[1.0], runs[0.0]
    assert n_a == n_b and int(h_a[1].diff().max()) > 64  # a second scan was needed
    assert torch.equal(out_a, out_b) and torch.equal(grad_a, grad_b)
    first = (*h_a, *rows_a)  # step, neuron, successor, span start rows; offsets; spike rows
    second = (*h_b, *rows_b)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
    masked = spiking_linear_masked_reference(x, w, 0.9, 1.0, "inverse-square", None, 0.5)
    (grad_ref,) = torch.autograd.grad((masked * g).sum(), [w])
    # The oracle sums each step's current by a matmul, the kernel spike by spike: in float32 the
    # membranes differ in the last bits, and the steep surrogate amplifies that (on an AMD EPYC,
    # both gradients differ from a float64 oracle by up to 4e-4, and from each other by 7e-5).
    torch.testing.assert_close(grad_a, grad_ref, rtol=1e-3, atol=1e-4)


def test_backward_releases_the_entries_and_a_retained_graph_still_gives_the_same_gradients():
    """Each sparse layer's backward drops its entry arrays and the COO indices its consumer
    wrote, so a loss kept alive after backward() holds none of them; with retain_graph a second
    backward (the indices written again) gives the same gradients."""
    import weakref

    import spikeforge.neuron.sparse as sparse

    x, w1, w2, readout = _weights(4)

    def forward():
        h1 = sparse_spiking_linear(x, w1, 0.9, 1.0, "inverse-square", None, 0.3, "numba")
        h2 = sparse_spiking_linear(h1, w2, 0.9, 1.0, "inverse-square", None, 0.3, "numba")
        return h1, h2, sparse_readout(h2, readout, 0.8, "max").square().sum()

    h1, h2, loss = forward()
    handles = [getattr(h, sparse._HANDLE) for h in (h1, h2)]
    entry_arrays = [weakref.ref(handle.ints) for handle in handles]
    first = torch.autograd.grad(loss, [w1, w2, readout])
    for handle, entries in zip(handles, entry_arrays, strict=True):
        assert handle.ints is None and handle._indices is None
        assert entries() is None  # freed, though the loss and its graph are still alive
    assert sparse._handle_of(h1) is None  # a new consumer now reads h1 as plain spikes

    _, _, loss = forward()
    again = torch.autograd.grad(loss, [w1, w2, readout], retain_graph=True)
    twice = torch.autograd.grad(loss, [w1, w2, readout])
    for a, b, c in zip(first, again, twice, strict=True):
        assert a.abs().sum() > 0
        assert torch.equal(a, b) and torch.equal(b, c)


def test_layer_room_hint_follows_activity_and_changes_no_result():
    """SpikingLinear remembers room for its fullest batch item's entries; a layer with the hint
    and a fresh one give the same spikes and gradients."""
    from spikeforge.nn import SpikingLinear

    gen = torch.Generator().manual_seed(9)
    x = (torch.rand(50, 4, 30, generator=gen) < 0.1).to(torch.uint8)
    layer = SpikingLinear(
        30, 40, 0.9, 1.0, "inverse-square", None, "numba", backward="sparse", active_bound=0.5
    )
    with torch.no_grad():
        layer.weight.mul_(4.0)
    assert layer._scan_room is None
    first = layer(x)
    room = layer._scan_room
    assert room is not None and 0 < room <= 1
    fresh = SpikingLinear(
        30, 40, 0.9, 1.0, "inverse-square", None, "numba", backward="sparse", active_bound=0.5
    )
    fresh.load_state_dict(layer.state_dict())
    again, other = layer(x), fresh(x)
    assert torch.equal(first, again) and torch.equal(again, other)
    (g1,) = torch.autograd.grad(again.sum(), [layer.weight])
    (g2,) = torch.autograd.grad(other.sum(), [fresh.weight])
    assert torch.equal(g1, g2) and g1.abs().sum() > 0


@pytest.mark.parametrize(
    "used", [[True], [True, True], [True, True, True], [False, True, True], [True, False, True]]
)
def test_per_thread_weight_sums_are_added_into_the_first(used):
    from spikeforge.neuron import _sparse_kernels as kernels

    generator = torch.Generator().manual_seed(len(used))
    parts = torch.randn(len(used), 7, 5, generator=generator)
    for k, was_used in enumerate(used):
        if not was_used:  # a thread with no batch item never zeroed its part: garbage stays
            parts[k] = float("nan")
    expected = sum(part for part, was_used in zip(parts, used, strict=True) if was_used)
    kernels._add_parts(parts.numpy(), np.array(used))
    torch.testing.assert_close(parts[0], expected, rtol=0, atol=1e-6)


def test_weight_gradient_with_more_threads_than_batch_items():
    """A thread that gets no batch item leaves its partial sum zeroed, not uninitialised."""
    numba = pytest.importorskip("numba")
    gen = torch.Generator().manual_seed(4)
    x = (torch.rand(30, 1, 20, generator=gen) < 0.3).to(torch.uint8)
    w = (torch.randn(25, 20, generator=gen) * 0.8).requires_grad_()
    grads = []
    for threads in (1, 2):
        before = numba.get_num_threads()
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        try:
            spikes = sparse_spiking_linear(x, w, 0.9, 1.0, "inverse-square", None, 0.5, "numba")
            (grad,) = torch.autograd.grad(spikes.sum() + (spikes * spikes).sum(), [w])
        finally:
            numba.set_num_threads(before)
        grads.append(grad)
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1])


def test_readout_kernels_on_a_plateau_of_tied_maxima():
    """beta = 1: output 0 rises at steps 2 and 5, holds, and falls at step 8, so its maximum
    ties at steps 5, 6 and 7 (first 5, three ties, last 7); the weight gradient shares g among
    them as amax does."""
    from spikeforge.neuron import _sparse_kernels as kernels
    from spikeforge.neuron.sparse import _beta_tables

    steps, inputs, outputs = 12, 3, 2
    spikes = torch.zeros(steps, 1, inputs)
    spikes[2, 0, 0] = spikes[5, 0, 1] = spikes[8, 0, 2] = 1.0
    weight = torch.tensor([[1.0, 2.0, -4.0], [0.5, -1.0, 0.25]])
    rows = spikes.reshape(steps, inputs)
    offsets = torch.zeros(steps + 1, dtype=torch.int64)
    offsets[1:] = rows.sum(1).cumsum(0).long()
    columns = rows.nonzero()[:, 1].to(torch.int32)
    padded = kernels.READOUT_LANES
    weight_t = torch.zeros(inputs, padded)
    weight_t[:, :outputs] = weight.t()
    membrane = torch.empty(1, steps, outputs)
    scores = torch.empty(1, outputs)
    peaks = torch.empty(3, 1, outputs, dtype=torch.int32)
    args = (offsets.numpy(), columns.numpy(), weight_t.numpy(), np.float32(1.0), True)
    kernels.readout_forward(*args, membrane.numpy(), scores.numpy(), peaks.numpy())
    assert peaks[:, 0, 0].tolist() == [5, 3, 7]  # v = 0 0 1 1 1 3 3 3 -1 ...
    grad_scores = torch.tensor([[1.5, -0.5]])
    no_entries = torch.zeros(4, 0, dtype=torch.int32)
    parts = np.empty((1, inputs, padded), dtype=np.float32)
    kernels.readout_backward(
        grad_scores.numpy(), membrane.numpy(), scores.numpy(), peaks.numpy(),
        *_beta_tables(1.0, steps, np.dtype(np.float32)), True, offsets.numpy(), columns.numpy(),
        weight_t.numpy(), no_entries.numpy(), torch.zeros(2, dtype=torch.int64).numpy(),
        True, False, False, parts, np.zeros(0, np.float32), np.zeros((3, 0), np.int64),
        np.empty((1, steps + 1, padded), np.float32),
    )  # fmt: skip
    reference = weight.clone().requires_grad_()
    (_leaky_readout(spikes, reference, 1.0, "max") * grad_scores).sum().backward()
    torch.testing.assert_close(torch.from_numpy(parts[0][:, :outputs]).t(), reference.grad)

"""LIF dynamics and the BPTT backward against hand-computed values and autograd references."""

import pytest
import torch

from spikeforge.neuron import (
    lif_scan,
    lif_step_reference,
    resolve_backend,
    spiking_linear,
    spiking_linear_reference,
)
from spikeforge.neuron.sparse import sparse_spiking_linear

BACKENDS = ["torch", "numba"]


def test_lif_three_steps_by_hand():
    # beta 0.5, threshold 1, currents 0.6, 0.8, 0.3:
    # u0 = 0.6 -> no spike, v0 = 0.6
    # u1 = 0.3 + 0.8 = 1.1 -> spike, v1 = 0
    # u2 = 0 + 0.3 = 0.3 -> no spike
    current = torch.tensor([[0.6], [0.8], [0.3]], dtype=torch.float64)
    spikes, membrane = lif_scan(current, beta=0.5, threshold=1.0)
    assert spikes.flatten().tolist() == [0.0, 1.0, 0.0]
    assert membrane.flatten().tolist() == pytest.approx([0.6, 1.1, 0.3])


def test_spike_exactly_at_threshold_fires():
    spikes, _ = lif_scan(torch.tensor([[1.0], [1.0]]), beta=0.9, threshold=1.0)
    assert spikes.flatten().tolist() == [1.0, 1.0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_three_step_gradient_by_hand(backend):
    # One neuron, one input spiking at every step, weight w; beta 0.5, threshold 1, exp surrogate.
    # currents w = 0.6: u = 0.6, 0.9, 1.05 -> spikes 0, 0, 1. Loss = s0 + s1 + s2.
    # d2 = sigma'(0.05); d1 = sigma'(-0.1) + 0.5 d2; d0 = sigma'(-0.4) + 0.5 d1; dL/dw = d0+d1+d2.
    x = torch.ones(3, 1, 1, dtype=torch.float64)
    w = torch.tensor([[0.6]], dtype=torch.float64, requires_grad=True)
    out = spiking_linear(x, w, beta=0.5, threshold=1.0, surrogate="exp", backend=backend)
    assert out.flatten().tolist() == [0.0, 0.0, 1.0]
    out.sum().backward()
    s = [torch.exp(-torch.tensor(abs(u - 1.0), dtype=torch.float64)) for u in (0.6, 0.9, 1.05)]
    d2 = s[2]
    d1 = s[1] + 0.5 * d2
    d0 = s[0] + 0.5 * d1
    assert w.grad.item() == pytest.approx(float(d0 + d1 + d2), rel=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("surrogate", ["exp", "fast-sigmoid", "inverse-square"])
def test_multistep_layer_equals_per_step_loop(backend, surrogate):
    torch.manual_seed(1)
    x = (torch.rand(9, 4, 13) < 0.4).double().requires_grad_()
    w = (torch.randn(6, 13, dtype=torch.float64) * 0.5).requires_grad_()
    reference = spiking_linear_reference(x, w, 0.8187, 0.5, surrogate)
    upstream = torch.randn_like(reference)
    ref_gx, ref_gw = torch.autograd.grad((reference * upstream).sum(), [x, w])
    out = spiking_linear(x, w, 0.8187, 0.5, surrogate, backend=backend)
    gx, gw = torch.autograd.grad((out * upstream).sum(), [x, w])
    assert torch.equal(out, reference)
    assert 0.05 < float(out.detach().mean()) < 0.95  # the case exercises spikes and silences
    torch.testing.assert_close(gx, ref_gx, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gw, ref_gw, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_layer_stack_float32_matches_reference(backend):
    torch.manual_seed(2)
    x = (torch.rand(20, 8, 30) < 0.2).to(torch.uint8)
    w1 = (torch.rand(25, 30) - 0.5).requires_grad_()
    w2 = (torch.rand(12, 25) - 0.5).requires_grad_()
    ref = spiking_linear_reference(spiking_linear_reference(x.float(), w1, 0.9, 0.3), w2, 0.9, 0.2)
    ref_g = torch.autograd.grad(ref.sum(), [w1, w2])
    out = spiking_linear(
        spiking_linear(x, w1, 0.9, 0.3, backend=backend), w2, 0.9, 0.2, backend=backend
    )
    g = torch.autograd.grad(out.sum(), [w1, w2])
    assert torch.equal(out, ref)
    for a, b in zip(g, ref_g, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_reference_step_loop_resets_to_zero():
    current = torch.tensor([[2.0], [0.1]])
    spikes = lif_step_reference(current, beta=1.0, threshold=1.0)
    assert spikes.flatten().tolist() == [1.0, 0.0]  # after reset, 0.1 alone stays below 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_binary_input_is_rejected(backend):
    x = torch.full((2, 1, 3), 0.5)
    with pytest.raises(ValueError, match="neither 0 nor 1"):
        spiking_linear(x, torch.ones(2, 3), 0.9, 1.0, backend=backend)


def test_shape_errors_are_one_line():
    with pytest.raises(ValueError, match=r"time-major \[T, B, N\]"):
        spiking_linear(torch.zeros(4, 3), torch.ones(2, 3), 0.9, 1.0)
    with pytest.raises(ValueError, match="input has 3 features but the weight expects 5"):
        spiking_linear(torch.zeros(2, 1, 3), torch.ones(2, 5), 0.9, 1.0)
    for empty in (torch.zeros(2, 0, 3), torch.zeros(0, 4, 3)):
        with pytest.raises(ValueError, match="are empty: a layer needs at least one"):
            spiking_linear(empty, torch.ones(2, 3), 0.9, 1.0)
        with pytest.raises(ValueError, match="are empty: a layer needs at least one"):
            sparse_spiking_linear(empty, torch.ones(2, 3), 0.9, 1.0)


def test_backend_choice():
    cpu = torch.device("cpu")
    assert resolve_backend("auto", cpu) == "numba"
    assert resolve_backend("torch", cpu) == "torch"
    with pytest.raises(ValueError, match="choose one of"):
        resolve_backend("cuda-magic", cpu)
    with pytest.raises(ValueError, match="CPU only"):
        resolve_backend("numba", torch.device("meta"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_keeps_spikes_as_bytes(backend):
    x = (torch.rand(5, 2, 7) < 0.5).float().requires_grad_()
    w = torch.randn(3, 7, requires_grad=True)
    out = spiking_linear(x, w, 0.8, 0.3, backend=backend)
    saved = out.grad_fn.saved_tensors
    dtypes = sorted(str(t.dtype) for t in saved)
    # input spikes and output spikes as uint8; only the membrane and the weight stay float
    assert dtypes == ["torch.float32", "torch.float32", "torch.uint8", "torch.uint8"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_bfloat16_matmuls_match_float32_where_bf16_is_exact(backend):
    # Weights k/64 with small k and 0/1 inputs: every product and current is exact in bf16, so
    # spikes must be identical; gradients differ only by bf16 rounding of the backward operands.
    torch.manual_seed(4)
    x = (torch.rand(12, 6, 13) < 0.4).float().requires_grad_()
    w = (torch.randint(-4, 5, (7, 13)).float() / 64).requires_grad_()
    upstream = torch.randn(12, 6, 7)
    ref = spiking_linear(x, w, 0.75, 0.05, backend=backend)
    ref_gx, ref_gw = torch.autograd.grad((ref * upstream).sum(), [x, w])
    out = spiking_linear(x, w, 0.75, 0.05, backend=backend, matmul_dtype=torch.bfloat16)
    gx, gw = torch.autograd.grad((out * upstream).sum(), [x, w])
    assert out.dtype == torch.float32 and gw.dtype == torch.float32
    assert torch.equal(out, ref)
    assert 0.05 < float(ref.detach().mean()) < 0.95
    torch.testing.assert_close(gx, ref_gx, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(gw, ref_gw, rtol=2e-2, atol=2e-2)
    assert not torch.equal(gw, ref_gw)  # the bf16 path really ran in bf16


_FIRST_BATCH_SCRIPT = """
import hashlib, torch
import torch.nn.functional as F
from spikeforge.run.bptt import _set_threads, build_model
from spikeforge.run.config import load_config
config = load_config({config!r})
_set_threads(2)
torch.manual_seed(0)
model = build_model(config)
generator = torch.Generator().manual_seed(0)
spikes = (torch.rand(20, 64, 784, generator=generator) < 0.13).to(torch.uint8)
labels = torch.randint(0, 10, (64,), generator=generator)
F.cross_entropy(model(spikes), labels).backward()
print(hashlib.md5(b"".join(p.grad.numpy().tobytes() for p in model.parameters())).hexdigest())
"""


def test_first_batch_gradients_are_bit_identical_in_every_process():
    """Six fresh processes (2 threads, Numba's OpenMP threads active) compute one batch's
    gradients of the Bondarev 784-300-300-10 model (exponential surrogate) on the same random
    spikes, and all agree bit for bit. Without the warm-up of ``spikeforge._vector_math``,
    torch's first multi-threaded ``exp`` was inaccurate in some processes: in a fresh ``make``
    virtualenv, 16 processes gave 3 different results (8, 5 and 3 of them), so the same config
    trained differently from run to run; with it, 16 of 16 agreed. Without the warm-up this test
    failed 4 times in 4 there."""
    import subprocess
    import sys
    from pathlib import Path

    config = str(Path(__file__).resolve().parents[2] / "configs" / "bondarev-mnist.toml")
    script = _FIRST_BATCH_SCRIPT.format(config=config)

    digests = []
    for _ in range(6):  # one after the other: a process running alone showed the fault most
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        )
        digests.append(done.stdout.strip())
    assert len(digests[0]) == 32 and len(set(digests)) == 1, digests


def test_triton_kernels_are_chosen_only_where_they_can_run(monkeypatch):
    """float32 on CUDA (or forced into Triton's interpreter), never with SPIKEFORGE_TRITON=0,
    and the PyTorch loops when Triton is not installed."""
    import sys

    import spikeforge.neuron as neuron_package
    from spikeforge.neuron import lif
    from spikeforge.neuron.lif import triton_kernels_for

    x = torch.zeros(3, 4)
    monkeypatch.delenv("SPIKEFORGE_TRITON", raising=False)
    assert triton_kernels_for(x) is None  # the CPU
    monkeypatch.setenv("SPIKEFORGE_TRITON", "1")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert triton_kernels_for(x) is None  # the CPU without the interpreter
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert triton_kernels_for(x.double()) is None  # float32 only
    assert lif.cuda_scan_kernels(x.device) is None
    if torch.cuda.is_available():
        monkeypatch.setenv("SPIKEFORGE_TRITON", "0")
        assert triton_kernels_for(x.cuda()) is None
        assert lif.cuda_scan_kernels(torch.device("cuda")) == "PyTorch loops"
        monkeypatch.setenv("SPIKEFORGE_TRITON", "1")
    monkeypatch.setitem(sys.modules, "triton", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "spikeforge.neuron._triton_kernels", raising=False)
    monkeypatch.delattr(neuron_package, "_triton_kernels", raising=False)
    monkeypatch.setattr(lif, "_triton_import", {"failed": False})
    with pytest.warns(UserWarning, match="Triton is not available .* PyTorch loops"):
        assert triton_kernels_for(x) is None
    assert lif._triton_import["failed"]  # not tried again

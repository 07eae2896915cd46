"""CUDA paths against the CPU ones (skipped without a GPU; run on a lent GPU machine).

Each test runs the same computation on both devices and compares: the LIF layer's spikes and
gradients, the sparse backward (CUDA PyTorch path vs CPU Numba path), the latency code,
window-batched convolutional STDP, and an end-to-end BPTT run with the sparse backward on the
digits set.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from spikeforge.neuron import spiking_linear
from spikeforge.neuron.sparse import sparse_spiking_linear, spiking_linear_masked_reference

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

SPARSE_DIGITS = Path(__file__).resolve().parents[1] / "configs" / "sparse-digits.toml"


def _problem(seed, steps=40, batch=16, inputs=64, outputs=48, density=0.1, gain=0.5):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.rand(steps, batch, inputs, generator=gen) < density).float()
    w = torch.randn(outputs, inputs, generator=gen) * gain
    g = torch.randn(steps, batch, outputs, generator=gen)
    return x, w, g


def _assert_near(actual, expected, tolerance=1e-4):
    """``||actual - expected|| / ||expected||`` under ``tolerance``: float32 on two devices sums
    in different orders, and the steep surrogates amplify those roundings elementwise."""
    actual, expected = actual.double(), expected.double()
    error = float((actual - expected).norm() / expected.norm())
    assert error < tolerance, f"relative error {error:.2e}"


def _grads(layer, x, w, g, device):
    x = x.to(device).requires_grad_()
    w = w.to(device).requires_grad_()
    out = layer(x, w)
    gx, gw = torch.autograd.grad((out * g.to(device)).sum(), [x, w])
    return out.cpu(), gx.cpu(), gw.cpu()


@pytest.mark.parametrize("surrogate", ["exp", "inverse-square", "fast-sigmoid"])
def test_dense_layer_cuda_equals_cpu(surrogate):
    x, w, g = _problem(0)

    def layer(a, b):
        return spiking_linear(a, b, 0.9, 1.0, surrogate)

    cpu = _grads(layer, x, w, g, "cpu")
    gpu = _grads(layer, x, w, g, "cuda")
    assert torch.equal(cpu[0], gpu[0])
    for a, b in zip(cpu[1:], gpu[1:], strict=True):
        _assert_near(b, a)


@pytest.mark.parametrize("bound", [math.inf, 0.5, 0.2])
def test_sparse_backward_cuda_equals_cpu_numba_and_the_masked_oracle(bound):
    x, w, g = _problem(1, gain=0.8)

    def sparse_on(backend):
        def layer(a, b):
            return sparse_spiking_linear(a, b, 0.9, 1.0, "inverse-square", None, bound, backend)

        return layer

    cpu = _grads(sparse_on("numba"), x, w, g, "cpu")
    gpu = _grads(sparse_on("auto"), x, w, g, "cuda")

    def oracle(a, b):
        return spiking_linear_masked_reference(a, b, 0.9, 1.0, "inverse-square", None, bound)

    reference = _grads(oracle, x.double(), w.double(), g.double(), "cpu")
    assert torch.equal(cpu[0], gpu[0])
    for a, b, ref in zip(cpu[1:], gpu[1:], reference[1:], strict=True):
        _assert_near(b, a)
        # against float64 (its membranes round differently; the k = 100 surrogate amplifies)
        _assert_near(b, ref, 1e-3)
        _assert_near(a, ref, 1e-3)
    assert gpu[2].abs().sum() > 0  # some gradient flowed


def test_latency_code_built_on_the_gpu_equals_the_cpu_code():
    from spikeforge.data import latency_encode

    x = torch.rand(32, 100, generator=torch.Generator().manual_seed(3))
    on_gpu = latency_encode(x, 50, device="cuda")
    assert on_gpu.device.type == "cuda" and on_gpu.dtype == torch.uint8
    assert torch.equal(on_gpu.cpu(), latency_encode(x, 50))


def test_window_batched_conv_stdp_cuda_equals_cpu():
    from spikeforge.stdp.conv import ConvSTDPParams, learn_windows

    gen = torch.Generator().manual_seed(2)
    windows = (torch.rand(64, 6, 25, generator=gen) < 0.3).float()
    filters = torch.rand(8, 25, generator=gen)
    params = ConvSTDPParams(kernel=5, threshold=3.0, learning_rate=0.05)
    cpu, counts_cpu, _ = learn_windows(filters, windows, 16, params)
    gpu, counts_gpu, _ = learn_windows(filters.cuda(), windows.cuda(), 16, params)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(counts_gpu.cpu(), counts_cpu)
    assert not torch.equal(cpu, filters)  # learning happened


def test_sparse_bptt_run_on_cuda_learns_digits(tmp_path):
    from spikeforge.run.bptt import train_bptt
    from spikeforge.run.config import load_config

    config = load_config(SPARSE_DIGITS, ["train.progress=false", "train.device=cuda"])
    summary = train_bptt(config, tmp_path, log=lambda _: None)
    assert summary["test_accuracy"] > 0.6
    assert "LIF scans: Triton kernels" in summary["machine"]

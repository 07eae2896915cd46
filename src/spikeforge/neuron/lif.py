"""Leaky integrate-and-fire dynamics over time-major tensors ``[T, B, N]``.

The vector-matrix LIF model of Bondarev ("Training a digital model of a deep spiking neural
network using backpropagation"), one step ``k`` of a layer with binary input spikes ``b``::

    net[k] = W b[k]                      (synaptic map, all T steps in one matmul)
    u[k]   = beta * v[k-1] + net[k]      (leaky integration; v[-1] = 0)
    s[k]   = 1 if u[k] >= threshold else 0
    v[k]   = u[k] * (1 - s[k])           (reset to zero after a spike)

BPTT replaces ds/du by a surrogate sigma'(u - threshold) and treats the reset as a constant, so
the gradient with respect to the layer's input current obeys the reverse recurrence::

    d[k] = g[k] * sigma'(u[k] - threshold) + beta * (1 - s[k]) * d[k+1]

where ``g[k] = dL/ds[k]``. The synaptic map's gradients follow: ``dL/dW = sum_k d[k] b[k]^T`` and
``dL/db[k] = W^T d[k]``.

Three implementations, same numbers:
  * :func:`lif_step_reference` / :func:`spiking_linear_reference`: a plain per-step loop whose
    gradients come from autograd (the test oracle);
  * :func:`spiking_linear` with ``backend="torch"``: the library's own autograd Function with the
    time loop in PyTorch (CPU or CUDA);
  * :func:`spiking_linear` with ``backend="numba"``: the same Function with the scans in Numba
    kernels (CPU default).
"""

from __future__ import annotations

import math
import os
import warnings

import torch

from spikeforge import _vector_math
from spikeforge.neuron.surrogates import Surrogate, get_surrogate

_vector_math.warm_up()  # before any multi-threaded exp: see spikeforge._vector_math

__all__ = [
    "lif_scan",
    "lif_step_reference",
    "spiking_linear",
    "spiking_linear_reference",
    "resolve_backend",
    "triton_kernels_for",
    "cuda_scan_kernels",
]

_BACKENDS = ("auto", "torch", "numba")
_BACKWARDS = ("dense", "sparse")


def resolve_backend(backend: str, device: torch.device) -> str:
    """Pick the concrete backend: ``auto`` is Numba on CPU when importable, PyTorch otherwise."""
    if backend not in _BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of: {', '.join(_BACKENDS)}")
    if device.type != "cpu":
        if backend == "numba":
            raise ValueError("backend 'numba' runs on CPU only; use backend 'torch' on CUDA")
        return "torch"
    if backend == "auto":
        try:
            import numba  # noqa: F401
        except ImportError:
            return "torch"
        return "numba"
    if backend == "numba":
        try:
            import numba  # noqa: F401
        except ImportError:
            raise ImportError("backend 'numba' needs Numba: pip install numba") from None
    return backend


def triton_kernels_for(tensor: torch.Tensor):
    """The Triton kernels (:mod:`spikeforge.neuron._triton_kernels`) when they can run on
    ``tensor``, else None: float32 on CUDA with Triton installed. ``SPIKEFORGE_TRITON=0`` turns
    them off (the PyTorch loops instead); ``SPIKEFORGE_TRITON=1`` with ``TRITON_INTERPRET=1``
    runs them on the CPU in Triton's interpreter (slow: for tests)."""
    wanted = os.environ.get("SPIKEFORGE_TRITON", "")
    if wanted == "0" or tensor.dtype != torch.float32:
        return None
    interpreted = wanted == "1" and os.environ.get("TRITON_INTERPRET") == "1"
    if not (tensor.is_cuda or interpreted):
        return None
    if _triton_import["failed"]:
        return None
    try:
        from spikeforge.neuron import _triton_kernels
    except ImportError as error:
        # once: a failed import would otherwise search the path again at every layer call
        _triton_import["failed"] = True
        warnings.warn(
            f"Triton is not available ({error}); spiking layers on CUDA run their scans as "
            "PyTorch loops, several times slower (pip install triton)",
            stacklevel=2,
        )
        return None
    return _triton_kernels


_triton_import = {"failed": False}


def cuda_scan_kernels(device: torch.device) -> str | None:
    """What runs float32 LIF scans on ``device``: ``"Triton kernels"`` or ``"PyTorch loops"`` on
    CUDA (:func:`triton_kernels_for`), None elsewhere; for run summaries and benchmark output."""
    if device.type != "cuda":
        return None
    probe = torch.empty(1, device=device)
    return "Triton kernels" if triton_kernels_for(probe) is not None else "PyTorch loops"


def lif_scan(
    current: torch.Tensor, beta: float, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the LIF recurrence over time with no gradient bookkeeping.

    Args:
        current: input current ``net`` of shape ``[T, ...]``.
        beta: leak factor (beta in the paper; 0.8187 = exp(-1/5)).
        threshold: firing threshold ``s``.

    Returns:
        ``(spikes, membrane)``, both ``[T, ...]``: spikes as the current's dtype (0/1) and the
        pre-reset membrane ``u[k]`` (what the surrogate is evaluated at; plotted as the trace).
        On CUDA one Triton kernel runs all steps (:func:`triton_kernels_for`; same numbers).
    """
    kernels = triton_kernels_for(current)
    if kernels is not None:
        spikes, membrane, _ = kernels.lif_forward(current, beta, threshold)
        return spikes, membrane
    v = torch.zeros_like(current[0])
    spikes = torch.empty_like(current)
    membrane = torch.empty_like(current)
    for k in range(current.shape[0]):
        u = beta * v + current[k]
        s = (u >= threshold).to(current.dtype)
        spikes[k] = s
        membrane[k] = u
        v = u * (1 - s)
    return spikes, membrane


class _SurrogateSpike(torch.autograd.Function):
    """Heaviside forward, surrogate derivative backward (used by the reference loop only)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, surrogate: Surrogate, scale: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.surrogate, ctx.scale = surrogate, scale
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad * ctx.surrogate.derivative(x, ctx.scale), None, None


class _MaskGrad(torch.autograd.Function):
    """Identity forward; multiplies the incoming gradient by a fixed 0/1 mask."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(mask)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (mask,) = ctx.saved_tensors
        return grad * mask, None


def lif_step_reference(
    current: torch.Tensor,
    beta: float,
    threshold: float,
    surrogate: str = "exp",
    scale: float | None = None,
    active_bound: float = math.inf,
) -> torch.Tensor:
    """LIF spikes ``[T, ...]`` from current ``[T, ...]`` by a naive per-step loop under autograd.

    The reset multiplies by a detached ``(1 - s)``, matching the library's backward. A finite
    ``active_bound`` multiplies the surrogate derivative by ``|u - threshold| < active_bound``
    (the sparse backward of Perez-Nieves & Goodman 2021; the leak and reset keep their gradient).
    """
    sur = get_surrogate(surrogate)
    scale = sur.default_scale if scale is None else scale
    v = torch.zeros_like(current[0])
    out = []
    for k in range(current.shape[0]):
        u = beta * v + current[k]
        x = u - threshold
        if math.isfinite(active_bound):
            x = _MaskGrad.apply(x, (x.detach().abs() < active_bound).to(x.dtype))
        s = _SurrogateSpike.apply(x, sur, scale)
        out.append(s)
        v = u * (1 - s.detach())
    return torch.stack(out)


def spiking_linear_reference(
    spikes_in: torch.Tensor,
    weight: torch.Tensor,
    beta: float,
    threshold: float,
    surrogate: str = "exp",
    scale: float | None = None,
    active_bound: float = math.inf,
) -> torch.Tensor:
    """``[T,B,I]`` spikes -> ``[T,B,O]`` spikes, step by step under autograd (test oracle)."""
    current = torch.stack(
        [spikes_in[k].to(weight.dtype) @ weight.t() for k in range(len(spikes_in))]
    )
    return lif_step_reference(current, beta, threshold, surrogate, scale, active_bound)


def _check_layer_shapes(spikes_in: torch.Tensor, weight: torch.Tensor) -> None:
    """One-line ValueError unless ``spikes_in`` is ``[T, B, I]`` and ``weight`` is ``[O, I]``."""
    if spikes_in.dim() != 3:
        raise ValueError(f"spikes must be time-major [T, B, N]; got shape {tuple(spikes_in.shape)}")
    if spikes_in.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"input has {spikes_in.shape[-1]} features but the weight expects {weight.shape[1]}"
        )
    if spikes_in.shape[0] == 0 or spikes_in.shape[1] == 0:
        raise ValueError(
            f"spikes of shape {tuple(spikes_in.shape)} are empty: a layer needs at least one "
            "time step and one sample"
        )


def _as_spike_bytes(x: torch.Tensor, backend: str) -> torch.Tensor:
    """The 0/1 input as uint8 (what backward keeps); a one-line error if it is not binary."""
    if x.dtype in (torch.uint8, torch.bool):
        return x.to(torch.uint8)
    flat = x.reshape(-1, x.shape[-1]).contiguous()
    if backend == "numba":
        from spikeforge.neuron import _numba_kernels as kernels

        out = torch.empty(flat.shape, dtype=torch.uint8)
        bad = kernels.to_spikes_checked(flat.numpy(), out.numpy())
    else:
        out, bad = spike_bytes_unchecked(flat)
        bad = int(bad)
    if bad:
        raise not_binary_error(bad)
    return out.view(x.shape)


def spike_bytes_unchecked(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | int]:
    """``x`` as uint8 and, without waiting for it, the count of values that were neither 0 nor 1
    (a 0-dim tensor; 0 for a uint8 or bool input); the caller raises :func:`not_binary_error`
    once it reads a nonzero count."""
    if x.dtype in (torch.uint8, torch.bool):
        return x.to(torch.uint8), 0
    out = x.to(torch.uint8)
    return out, (out.to(x.dtype) != x).sum()


def not_binary_error(bad: int) -> ValueError:
    """The one-line error for a layer input with ``bad`` values that are not 0 or 1."""
    return ValueError(
        f"spiking layers take 0/1 spikes as input, but {bad} input values are neither 0 nor 1; "
        "encode analog inputs first (spikeforge.data.poisson_encode or latency_encode)"
    )


class _SpikingLinearFunction(torch.autograd.Function):
    """Synaptic matmul over all T steps, LIF scan, and the BPTT backward of the module doc.

    Saves only: the input spikes as uint8, the output spikes as uint8, the surrogate derivative
    sigma'(u - threshold) (float, evaluated in the forward scan) and the weight.
    """

    @staticmethod
    def forward(ctx, spikes_in, weight, beta, threshold, surrogate, scale, backend, matmul_dtype):
        steps, batch, _ = spikes_in.shape
        inputs_u8 = _as_spike_bytes(spikes_in, backend)
        # A float input (the previous layer's spikes) feeds the matmul as it is; bytes are
        # converted once. Only the byte copy is kept for backward.
        inputs = spikes_in if spikes_in.dtype == matmul_dtype else inputs_u8.to(matmul_dtype)
        current = inputs.view(steps * batch, -1) @ weight.to(matmul_dtype).t()
        current = current.to(weight.dtype).view(steps, -1)
        if backend == "numba":
            from spikeforge.neuron import _numba_kernels as kernels

            spikes_u8 = torch.empty(current.shape, dtype=torch.uint8)
            spikes = torch.empty_like(current)
            surrogate_grad = torch.empty_like(current)
            typed = current.numpy().dtype.type  # scalars in the tensor's precision
            kernels.lif_forward(
                current.numpy(),
                typed(beta),
                typed(threshold),
                surrogate.code,
                typed(scale),
                spikes_u8.numpy(),
                spikes.numpy(),
                surrogate_grad.numpy(),
            )
            if surrogate.code == 0:
                surrogate_grad.exp_()
        else:
            spikes, membrane = lif_scan(current, beta, threshold)
            spikes_u8 = spikes.to(torch.uint8)
            surrogate_grad = surrogate.derivative(membrane - threshold, scale)
        ctx.save_for_backward(inputs_u8, weight, spikes_u8, surrogate_grad)
        ctx.params = (beta, backend, matmul_dtype)
        ctx.input_is_float = spikes_in.is_floating_point()
        return spikes.view(steps, batch, -1)

    @staticmethod
    def backward(ctx, grad_spikes):
        inputs_u8, weight, spikes_u8, surrogate_grad = ctx.saved_tensors
        beta, backend, matmul_dtype = ctx.params
        grad_weight, grad_input = dense_bptt_grads(
            grad_spikes,
            inputs_u8,
            weight,
            spikes_u8,
            surrogate_grad,
            beta,
            backend,
            matmul_dtype,
            ctx.needs_input_grad[1],
            ctx.needs_input_grad[0] and ctx.input_is_float,
        )
        return grad_input, grad_weight, None, None, None, None, None, None


def dense_bptt_grads(
    grad_spikes: torch.Tensor,
    inputs_u8: torch.Tensor,
    weight: torch.Tensor,
    spikes_u8: torch.Tensor,
    surrogate_grad: torch.Tensor,
    beta: float,
    backend: str,
    matmul_dtype: torch.dtype,
    want_weight: bool,
    want_input: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Weight and input gradients of one layer from ``g = dL/ds`` ``[T, B, O]``:
    ``d[t] = g[t] sigma'[t] + beta (1 - s[t]) d[t+1]``, ``dL/dW = sum_t d[t]^T b[t]``,
    ``dL/db[t] = d[t] W`` (``surrogate_grad`` is sigma' at every entry, possibly masked)."""
    steps, batch, _ = inputs_u8.shape
    # No copy: the readout's time sum hands back a gradient broadcast over T (stride 0),
    # which the scans read as it is.
    grad_spikes = grad_spikes.reshape(steps, -1)
    if grad_spikes.stride(-1) != 1:
        grad_spikes = grad_spikes.contiguous()
    surrogate_grad = surrogate_grad.reshape(steps, -1)
    spikes_u8 = spikes_u8.reshape(steps, -1)
    bptt = _numba_bptt if backend == "numba" else _torch_bptt
    grad_current = bptt(grad_spikes, surrogate_grad, spikes_u8, beta)
    grad_current = grad_current.view(steps * batch, -1).to(matmul_dtype)
    grad_weight = grad_input = None
    if want_weight:
        inputs = inputs_u8.view(steps * batch, -1).to(matmul_dtype)
        grad_weight = (grad_current.t() @ inputs).to(weight.dtype)
    if want_input:
        grad_input = grad_current @ weight.to(matmul_dtype)
        grad_input = grad_input.to(weight.dtype).view(steps, batch, -1)
    return grad_weight, grad_input


def _torch_bptt(grad_spikes, surrogate_grad, spikes_u8, beta):
    kernels = triton_kernels_for(grad_spikes)
    if kernels is not None:
        return kernels.lif_backward(grad_spikes, surrogate_grad, spikes_u8, beta)
    keep = beta * (1 - spikes_u8.to(grad_spikes.dtype))
    grad_current = torch.empty(
        grad_spikes.shape, dtype=grad_spikes.dtype, device=grad_spikes.device
    )
    carry = torch.zeros_like(grad_spikes[0])
    for k in range(grad_spikes.shape[0] - 1, -1, -1):
        carry = grad_spikes[k] * surrogate_grad[k] + keep[k] * carry
        grad_current[k] = carry
    return grad_current


def _numba_bptt(grad_spikes, surrogate_grad, spikes_u8, beta):
    from spikeforge.neuron import _numba_kernels as kernels

    grad_current = torch.empty(grad_spikes.shape, dtype=grad_spikes.dtype)
    kernels.lif_backward(
        grad_spikes.numpy(),
        surrogate_grad.numpy(),
        spikes_u8.numpy(),
        grad_spikes.numpy().dtype.type(beta),
        grad_current.numpy(),
    )
    return grad_current


def spiking_linear(
    spikes_in: torch.Tensor,
    weight: torch.Tensor,
    beta: float,
    threshold: float,
    surrogate: str = "exp",
    scale: float | None = None,
    backend: str = "auto",
    matmul_dtype: torch.dtype | None = None,
    backward: str = "dense",
    active_bound: float | None = None,
    stats: dict | None = None,
) -> torch.Tensor:
    """One spiking layer over all time steps: ``[T, B, I]`` spikes -> ``[T, B, O]`` spikes.

    Args:
        spikes_in: 0/1 input spikes ``[T, B, I]`` (uint8, bool or float; float keeps the graph).
        weight: ``[O, I]`` synaptic matrix W.
        beta: leak factor.
        threshold: firing threshold s.
        surrogate: name in :data:`spikeforge.neuron.SURROGATES`.
        scale: surrogate slope k (the surrogate's default when None).
        backend: ``auto``, ``torch`` or ``numba``.
        matmul_dtype: operand precision of the three matmuls (forward current, weight gradient,
            input gradient); None means ``weight.dtype``. ``torch.bfloat16`` is mixed
            precision: spikes are exact in bf16, weights and gradients are rounded to 8
            mantissa bits for the product only; membranes, scans, the returned gradients and
            the weights themselves stay in ``weight.dtype``. It is 3-6x faster on CPUs with
            AMX or AVX-512-BF16.
        backward: ``dense`` (the BPTT of the module docstring) or ``sparse`` (Perez-Nieves &
            Goodman 2021: gradients from the active set only; see
            :mod:`spikeforge.neuron.sparse`). The forward is the same.
        active_bound: sparse only: the active set is ``|u - threshold| < active_bound`` (None:
            the surrogate's own bound).
        stats: sparse only: a dict that receives the forward's ``active_fraction``.

    Returns:
        Output spikes ``[T, B, O]`` as ``weight.dtype`` (0/1).
    """
    _check_layer_shapes(spikes_in, weight)
    if backward not in _BACKWARDS:
        raise ValueError(f"unknown backward {backward!r}; choose one of: {', '.join(_BACKWARDS)}")
    if backward == "sparse":
        from spikeforge.neuron.sparse import sparse_spiking_linear

        return sparse_spiking_linear(
            spikes_in,
            weight,
            beta,
            threshold,
            surrogate,
            scale,
            active_bound,
            backend,
            matmul_dtype,
            stats,
        )
    sur = get_surrogate(surrogate)
    scale = sur.default_scale if scale is None else float(scale)
    backend = resolve_backend(backend, weight.device)
    matmul_dtype = weight.dtype if matmul_dtype is None else matmul_dtype
    return _SpikingLinearFunction.apply(
        spikes_in.contiguous(),
        weight,
        float(beta),
        float(threshold),
        sur,
        scale,
        backend,
        matmul_dtype,
    )

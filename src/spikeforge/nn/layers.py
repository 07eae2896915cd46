"""``torch.nn.Module`` wrappers around :mod:`spikeforge.neuron`: they hold parameters, the
functions do the work. All take and return time-major tensors ``[T, B, N]``; no hidden state, so
nothing ever needs a reset.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from spikeforge.neuron import get_surrogate, lif_scan, spiking_linear
from spikeforge.neuron.sparse import reads_out_sparsely, sparse_readout

__all__ = [
    "SpikingLinear",
    "AccumulatorReadout",
    "uniform_fan_in_",
    "input_major",
    "MATMUL_PRECISIONS",
    "READOUTS",
]

MATMUL_PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def uniform_fan_in_(weight: torch.Tensor) -> torch.Tensor:
    """Bondarev's initialisation: W ~ U[-sqrt(3/h), sqrt(3/h)] with h the fan-in (variance 1/h)."""
    bound = math.sqrt(3.0 / weight.shape[1])
    with torch.no_grad():
        return weight.uniform_(-bound, bound)


def input_major(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` ``[O, I]``, same values, stored input-major: ``W^T`` is contiguous (strides
    ``(1, O)``). The sparse backward's kernels read ``W^T`` and write ``dW^T``, so with this
    layout neither the forward nor autograd's gradient accumulation (which keeps a gradient in
    its parameter's layout) copies a transpose."""
    stored = torch.empty(weight.shape[1], weight.shape[0], dtype=weight.dtype, device=weight.device)
    return stored.t().copy_(weight)


class SpikingLinear(nn.Module):
    """Fully connected LIF layer: ``net = W b``, ``u = beta v + net``, spike at ``u >= threshold``,
    reset to 0 (Bondarev's vector-matrix model). No bias, as in the paper.

    Args:
        in_features: I.
        out_features: O.
        beta: leak factor per step.
        threshold: firing threshold s.
        surrogate: surrogate derivative name (``exp``, ``fast-sigmoid``, ``inverse-square``).
        surrogate_scale: its slope k (None: the surrogate's default).
        backend: ``auto``, ``torch`` or ``numba``.
        precision: operand precision of the synaptic matmuls: ``float32`` or ``bfloat16``
            (mixed precision: exact spikes, bf16-rounded weights and gradients in the
            products only; see :func:`spikeforge.neuron.spiking_linear`).
        backward: ``dense`` BPTT or ``sparse`` (Perez-Nieves & Goodman 2021, gradients from
            the active set ``|u - threshold| < active_bound`` only).
        active_bound: the sparse backward's bound (None: the surrogate's own).

    Shape:
        input ``[T, B, I]`` of 0/1 spikes (uint8, bool or float) -> output ``[T, B, O]`` float 0/1.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        beta: float,
        threshold: float,
        surrogate: str = "exp",
        surrogate_scale: float | None = None,
        backend: str = "auto",
        precision: str = "float32",
        backward: str = "dense",
        active_bound: float | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must lie in [0, 1]; got {beta}")
        if backward not in ("dense", "sparse"):
            raise ValueError(f"backward must be 'dense' or 'sparse'; got {backward!r}")
        if precision not in MATMUL_PRECISIONS:
            raise ValueError(
                f"precision must be one of {', '.join(MATMUL_PRECISIONS)}; got {precision!r}"
            )
        if threshold <= 0.0:
            raise ValueError(f"threshold must be positive; got {threshold}")
        get_surrogate(surrogate)
        weight = uniform_fan_in_(torch.empty(out_features, in_features))
        # the sparse backward's kernels work on W^T (the same values, drawn in the same order)
        self.weight = nn.Parameter(input_major(weight) if backward == "sparse" else weight)
        self.beta = float(beta)
        self.threshold = float(threshold)
        self.surrogate = surrogate
        self.surrogate_scale = surrogate_scale
        self.backend = backend
        self.precision = precision
        self.backward = backward
        self.active_bound = active_bound
        # Diagnostic of the latest sparse forward (active entries / T*B*O); read, never used.
        self.last_active_fraction: float | None = None
        # Speed hint for the next sparse forward on the CPU: room for its fullest batch item's
        # entries, a little above this one's (never changes a result; see neuron/sparse.py)
        self._scan_room: float | None = None

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        matmul_dtype = None if self.precision == "float32" else MATMUL_PRECISIONS[self.precision]
        stats: dict = {"scan_room": self._scan_room}
        out = spiking_linear(
            spikes,
            self.weight,
            self.beta,
            self.threshold,
            self.surrogate,
            self.surrogate_scale,
            self.backend,
            matmul_dtype,
            backward=self.backward,
            active_bound=self.active_bound,
            stats=stats,
        )
        if self.backward == "sparse":
            self.last_active_fraction = stats["active_fraction"]
            if "scan_fullest" in stats:
                self._scan_room = min(1.0, 1.25 * stats["scan_fullest"] + 0.005)
        return out

    @torch.no_grad()
    def membrane(self, spikes: torch.Tensor) -> torch.Tensor:
        """Pre-reset membrane ``u[T, B, O]`` for the given input (for plots)."""
        current = spikes.to(self.weight.dtype) @ self.weight.t()
        return lif_scan(current, self.beta, self.threshold)[1]

    def extra_repr(self) -> str:
        out_features, in_features = self.weight.shape
        return (
            f"{in_features} -> {out_features}, beta={self.beta}, threshold={self.threshold:.4g}, "
            f"surrogate={self.surrogate}, precision={self.precision}, backward={self.backward}"
        )


READOUTS = ("last", "max", "sum")


class AccumulatorReadout(nn.Module):
    """Non-spiking output layer: ``v[k] = beta v[k-1] + W b[k]``; the class scores are ``v[T-1]``
    (``mode="last"``, the default), ``max_k v[k]`` (``"max"``: max over time, Perez-Nieves &
    Goodman 2021) or ``(1/T) sum_k v[k]`` (``"sum"``: sum over time, scaled by 1/T).

    Because it never spikes or resets, ``v[T-1] = W sum_k beta^(T-1-k) b[k]``: the readout sums the
    spikes over time first and runs one small matmul (softmax cross-entropy on the result).
    ``beta = 1`` is Bondarev's accumulator.

    Shape:
        input ``[T, B, I]`` spikes -> scores ``[B, O]``.
    """

    def __init__(
        self, in_features: int, out_features: int, beta: float = 1.0, mode: str = "last"
    ) -> None:
        super().__init__()
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"readout beta must lie in [0, 1]; got {beta}")
        if mode not in READOUTS:
            raise ValueError(f"readout mode must be one of {', '.join(READOUTS)}; got {mode!r}")
        self.mode = mode
        self.weight = nn.Parameter(uniform_fan_in_(torch.empty(out_features, in_features)))
        self.beta = float(beta)

    def _time_weights(self, steps: int, like: torch.Tensor) -> torch.Tensor:
        exponents = torch.arange(steps - 1, -1, -1, device=like.device, dtype=like.dtype)
        return torch.pow(torch.tensor(self.beta, dtype=like.dtype, device=like.device), exponents)

    def _decay_matrix(self, steps: int, like: torch.Tensor) -> torch.Tensor:
        """``L[k, i] = beta^(k - i)`` for ``i <= k``, else 0: ``v = L c`` over time."""
        k = torch.arange(steps, device=like.device, dtype=like.dtype)
        gap = k[:, None] - k[None, :]
        decay = torch.pow(torch.tensor(self.beta, dtype=like.dtype, device=like.device), gap)
        return torch.where(gap >= 0, decay, torch.zeros_like(decay))

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        if self.mode != "last":
            if reads_out_sparsely(spikes, self.weight):
                # fused: forward over the spikes' ones, gradient sent back at the sparse
                # layer's active entries only
                return sparse_readout(spikes, self.weight, self.beta, self.mode)
            steps, batch, _ = spikes.shape
            current = spikes.to(self.weight.dtype).reshape(steps * batch, -1) @ self.weight.t()
            membrane = self._decay_matrix(steps, current) @ current.reshape(steps, -1)
            membrane = membrane.view(steps, batch, -1)
            return membrane.amax(0) if self.mode == "max" else membrane.mean(0)
        spikes = spikes.to(self.weight.dtype)
        if self.beta == 1.0:
            summed = spikes.sum(0)
        else:
            summed = torch.einsum("t,tbi->bi", self._time_weights(spikes.shape[0], spikes), spikes)
        return summed @ self.weight.t()

    @torch.no_grad()
    def membrane(self, spikes: torch.Tensor) -> torch.Tensor:
        """Membrane trajectory ``v[T, B, O]`` (Bondarev's figure 3)."""
        current = spikes.to(self.weight.dtype) @ self.weight.t()
        v = torch.zeros_like(current[0])
        out = torch.empty_like(current)
        for k in range(current.shape[0]):
            v = self.beta * v + current[k]
            out[k] = v
        return out

    def extra_repr(self) -> str:
        out_features, in_features = self.weight.shape
        return f"{in_features} -> {out_features}, beta={self.beta}, mode={self.mode} (accumulator)"

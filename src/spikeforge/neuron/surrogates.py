"""Surrogate derivatives of the Heaviside spike function, looked up by name.

A spike is ``s = H(v - threshold)``. Its derivative is zero almost everywhere, so BPTT replaces it
with a smooth *surrogate* ``sigma'(x)`` of ``x = v - threshold``. Each entry states its formula, its
source, a smooth primitive ``F`` with ``F' = sigma'`` (the test oracle: autograd of ``F`` must equal
the surrogate), and ``active_bound``: the half-width ``|x| < active_bound`` that the sparse backward
of Perez-Nieves & Goodman (2021) treats as the active set.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["Surrogate", "SURROGATES", "get_surrogate", "surrogate_names"]


@dataclass(frozen=True)
class Surrogate:
    """One surrogate derivative.

    Attributes:
        name: registry key used in configs (``model.surrogate``).
        code: small integer identifying the formula inside compiled kernels.
        formula: the derivative, as text.
        source: the paper it comes from.
        default_scale: the slope ``k`` used when a config gives none.
        active_bound: default half-width of the active set for sparse backward.
    """

    name: str
    code: int
    formula: str
    source: str
    default_scale: float
    active_bound: float
    _derivative: Callable[[torch.Tensor, float], torch.Tensor]
    _primitive: Callable[[torch.Tensor, float], torch.Tensor]

    def derivative(self, x: torch.Tensor, scale: float | None = None) -> torch.Tensor:
        """sigma'(x) for ``x = v - threshold`` (any shape)."""
        return self._derivative(x, self.default_scale if scale is None else scale)

    def primitive(self, x: torch.Tensor, scale: float | None = None) -> torch.Tensor:
        """A smooth F with F'(x) = sigma'(x); differentiable by autograd (test oracle)."""
        return self._primitive(x, self.default_scale if scale is None else scale)


def _exp_derivative(x: torch.Tensor, k: float) -> torch.Tensor:
    return torch.exp(-k * x.abs())


def _exp_primitive(x: torch.Tensor, k: float) -> torch.Tensor:
    # F(x) = e^{kx}/k for x < 0 and 2/k - e^{-kx}/k for x >= 0: C^1, F' = e^{-k|x|}.
    neg = torch.exp(k * x.clamp(max=0.0)) / k
    pos = 2.0 / k - torch.exp(-k * x.clamp(min=0.0)) / k
    return torch.where(x < 0, neg, pos)


def _inverse_square_derivative(x: torch.Tensor, k: float) -> torch.Tensor:
    return 1.0 / (k * x.abs() + 1.0) ** 2


def _inverse_square_primitive(x: torch.Tensor, k: float) -> torch.Tensor:
    # d/dx [x / (k|x| + 1)] = 1 / (k|x| + 1)^2
    return x / (k * x.abs() + 1.0)


SURROGATES: dict[str, Surrogate] = {
    s.name: s
    for s in (
        Surrogate(
            name="exp",
            code=0,
            formula="sigma'(x) = exp(-k|x|), k = 1",
            source="Bondarev, 'Training a digital model of a deep spiking neural network "
            "using backpropagation'",
            default_scale=1.0,
            active_bound=math.inf,
            _derivative=_exp_derivative,
            _primitive=_exp_primitive,
        ),
        Surrogate(
            name="fast-sigmoid",
            code=1,
            formula="sigma'(x) = 1 / (k|x| + 1)^2, k = 10",
            source="Zenke & Ganguli 2018, SuperSpike (derivative of the fast sigmoid x/(1+k|x|))",
            default_scale=10.0,
            active_bound=math.inf,
            _derivative=_inverse_square_derivative,
            _primitive=_inverse_square_primitive,
        ),
        Surrogate(
            name="inverse-square",
            code=1,
            formula="sigma'(x) = 1 / (k|x| + 1)^2, k = 100",
            source="Perez-Nieves & Goodman 2021, Sparse Spiking Gradient Descent",
            default_scale=100.0,
            active_bound=0.2,
            _derivative=_inverse_square_derivative,
            _primitive=_inverse_square_primitive,
        ),
    )
}


def surrogate_names() -> list[str]:
    """Names accepted by :func:`get_surrogate`."""
    return sorted(SURROGATES)


def get_surrogate(name: str) -> Surrogate:
    """Look a surrogate up by name; a one-line ValueError lists the valid names."""
    try:
        return SURROGATES[name]
    except KeyError:
        raise ValueError(
            f"unknown surrogate {name!r}; choose one of: {', '.join(surrogate_names())}"
        ) from None

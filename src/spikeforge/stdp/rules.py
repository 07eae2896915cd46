"""Trace-based STDP as pure functions: each returns a weight change Δw; applying it is separate.

Traces follow Diehl & Cook (2015) and their released code: a trace ``x`` decays as
``dx/dt = -x / tau`` and is *set* to 1 at a spike of its neuron (not incremented), so between
spikes ``x(t) = exp(-(t - t_last) / tau)``.

Rules on the input -> excitatory weights ``w[K, N]`` (K inputs, N excitatory neurons):

- depression at a presynaptic spike of input ``k``: ``Δw[k, :] = -nu_pre * x_post1``;
- potentiation at a postsynaptic spike of neuron ``i``:
  ``Δw[:, i] = nu_post * x_pre`` (``pair``, BindsNET's ``PostPre``) or
  ``Δw[:, i] = nu_post * x_pre * x_post2(t-)`` (``triplet``, the authors' Brian code: the slow
  post trace read just before the spike sets it to 1; Pfister & Gerstner 2006).

After each update the weights are clipped to ``[0, w_max]`` (:func:`apply_bounded`), and after each
image the columns are rescaled so every neuron's incoming weights sum to ``total``
(:func:`normalize_columns`, 78 for 784 inputs in Diehl & Cook).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "RULES",
    "decay_factor",
    "depression_on_pre",
    "potentiation_on_post",
    "apply_bounded",
    "normalize_columns",
]

RULES = ("triplet", "pair")


def decay_factor(dt: float, tau: float) -> float:
    """Per-step factor ``exp(-dt / tau)`` of ``dx/dt = -x / tau`` (exact for a step of ``dt``)."""
    return float(np.exp(-dt / tau))


def depression_on_pre(pre_spikes: np.ndarray, post1_trace: np.ndarray, nu_pre: float) -> np.ndarray:
    """Δw at presynaptic spikes: ``-nu_pre * outer(pre_spikes, x_post1)``.

    Args:
        pre_spikes: 0/1 spikes of the inputs this step, shape [K].
        post1_trace: fast postsynaptic trace ``x_post1``, shape [N].
        nu_pre: learning rate of depression (Diehl & Cook: 1e-4).

    Returns:
        Δw, shape [K, N].
    """
    return -nu_pre * np.outer(pre_spikes.astype(np.float64), post1_trace)


def potentiation_on_post(
    pre_trace: np.ndarray,
    post_spikes: np.ndarray,
    nu_post: float,
    post2_before: np.ndarray | None = None,
) -> np.ndarray:
    """Δw at postsynaptic spikes: ``nu_post * outer(x_pre, post_spikes [* x_post2(t-)])``.

    Args:
        pre_trace: presynaptic traces ``x_pre``, shape [K].
        post_spikes: 0/1 spikes of the excitatory neurons this step, shape [N].
        nu_post: learning rate of potentiation (Diehl & Cook: 1e-2).
        post2_before: slow postsynaptic trace read before this step's spikes set it to 1, shape
            [N] (the triplet rule); ``None`` for the pair rule.

    Returns:
        Δw, shape [K, N].
    """
    gate = post_spikes.astype(np.float64)
    if post2_before is not None:
        gate = gate * post2_before
    return nu_post * np.outer(pre_trace, gate)


def apply_bounded(weights: np.ndarray, delta: np.ndarray, w_max: float) -> np.ndarray:
    """``clip(w + Δw, 0, w_max)`` (a new array)."""
    return np.clip(weights + delta, 0.0, w_max)


def normalize_columns(weights: np.ndarray, total: float) -> np.ndarray:
    """Rescale each column ``w[:, i]`` to sum to ``total`` (a column of zeros stays zero).

    Args:
        weights: input -> excitatory weights, shape [K, N].
        total: the target sum of each neuron's incoming weights (78 for 784 inputs).
    """
    sums = weights.sum(axis=0)
    scale = np.divide(total, sums, out=np.zeros_like(sums), where=sums > 0)
    return weights * scale

"""The Diehl & Cook (2015) unsupervised STDP network and its plain reference engine.

Diehl, P. U. & Cook, M. (2015) "Unsupervised learning of digit recognition using
spike-timing-dependent plasticity", Front. Comput. Neurosci. 9:99. Parameters follow the authors'
released Brian code (``Diehl_Cook_spiking_MNIST.py``) unless a field's comment says otherwise.

Network: K Poisson inputs -> N excitatory neurons (all-to-all, plastic weights ``w[K, N]``);
excitatory neuron i -> inhibitory neuron i (one to one, ``exc_to_inh``); inhibitory neuron j ->
every excitatory neuron except j (``inh_to_exc``). Excitatory neurons have an adaptive threshold
``v_thresh + theta`` where theta grows by ``theta_plus`` at each spike and decays with
``tau_theta`` (1e7 ms); both stay fixed when learning is off (the authors' test mode).

Neuron models (``neuron_model``):

- ``conductance`` (the paper): ``tau dv/dt = (v_rest - v) + g_e (E_exc - v) + g_i (E_inh - v)``
  with ``dg/dt = -g / tau_g``; an input spike adds its weight to ``g_e``.
- ``current`` (BindsNET's ``DiehlAndCook2015``): ``v <- v_rest + (v - v_rest) exp(-dt/tau) + I``
  where ``I`` is the summed weight of this step's input spikes minus ``inh_to_exc`` per spiking
  inhibitory neuron (BindsNET's defaults: reset -60 mV, exc->inh 22.5, inh->exc 17.5).

Discrete time, one step of ``dt`` ms, in this order (both engines):

1. conductances and post traces decay by ``exp(-dt/tau)``; this step's input spikes add their
   weight rows to ``g_e`` (current model: to the input current); spikes of the previous step
   drive the other population (a one-step synaptic delay between excitatory and inhibitory);
2. learning: each spiking input's row is depressed, ``w[k] <- clip(w[k] - nu_pre x_post1)``,
   after its weights were read in 1, and its pre trace is set to 1;
3. membranes integrate unless refractory (then v is held at reset): the conductance model by a
   backward-Euler step (stable for any conductance), with each conductance replaced by its exact
   mean over the step ``g (tau_g/dt)(1 - exp(-dt/tau_g))`` so that one input spike delivers
   ``w tau_g`` in total as in continuous time; the current model by its exact leak;
4. ``v > v_thresh + theta`` fires, if ``exc_spike_gap`` ms passed since the neuron's last spike
   (the authors' ``timer``): v <- reset, refractory for ``refractory_*`` ms, theta += plus;
5. learning: each spiking excitatory neuron's column is potentiated (pair or triplet rule,
   :mod:`spikeforge.stdp.rules`) and its post traces are set to 1.

An image is shown for ``present_ms`` with rates ``pixel / 255 * max_rate_hz``, then the inputs
are silent for ``rest_ms`` (simulated step by step: with conductances the rest period has no
closed form, and it costs only O(N) per step since no input spikes). If the excitatory layer
fired fewer than ``min_spikes`` times the image is shown again with the maximum rate raised by
``rate_step_hz`` (the authors' ``input_intensity += 1``), at most ``max_presentations`` times.
While learning, the weights are normalised (each column sums to ``norm_total``) before every
presentation, as in the authors' code, i.e. after every image.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from spikeforge.stdp.rules import (
    RULES,
    apply_bounded,
    decay_factor,
    depression_on_pre,
    normalize_columns,
    potentiation_on_post,
)

__all__ = [
    "NEURON_MODELS",
    "ENGINES",
    "DiehlCookParams",
    "NetworkState",
    "DiehlCookNetwork",
    "current_based_params",
    "new_state",
    "initial_weights",
    "poisson_events",
    "events_to_raster",
    "raster_to_events",
    "simulate_reference",
    "present_image",
    "run_images",
]

NEURON_MODELS = ("conductance", "current")
# Conductances and traces below this are set to 0: left alone they decay into subnormal floats,
# whose arithmetic is ~100x slower on x86, and their effect on any membrane is nil.
FLUSH_BELOW = 1e-30
ENGINES = ("numba", "reference")


class StepFactors(NamedTuple):
    """Per-step factors of one ``dt``: ``decay_x = exp(-dt/tau_x)`` for the conductances, the
    membranes, theta and the postsynaptic traces, and ``mean_g = (tau/dt)(1 - exp(-dt/tau))``,
    the mean of a conductance's decay over the step (the conductance model's effective drive)."""

    decay_ge: float
    decay_gi: float
    mean_ge: float
    mean_gi: float
    decay_exc: float
    decay_inh: float
    decay_theta: float
    decay_post1: float
    decay_post2: float


@dataclass(frozen=True)
class DiehlCookParams:
    """Every constant of the model; times in ms, voltages in mV, rates in Hz.

    Defaults are the authors' Brian code (conductance-based); :func:`current_based_params`
    gives BindsNET's current-based ``DiehlAndCook2015``.
    """

    neuron_model: str = "conductance"
    rule: str = "triplet"  # triplet (authors' code) | pair (BindsNET PostPre)
    dt: float = 1.0  # authors: 0.5
    present_ms: float = 350.0
    rest_ms: float = 150.0
    max_rate_hz: float = 63.75  # pixel / 4 in the authors' code (input_intensity = 2)
    rate_step_hz: float = 31.875  # input_intensity += 1 -> pixel / 8 more
    min_spikes: int = 5
    max_presentations: int = 20  # the authors have no cap
    # excitatory neurons
    exc_rest: float = -65.0
    exc_reset: float = -65.0
    exc_thresh: float = -52.0  # authors: theta - offset + v_thresh with theta0 = offset = 20 mV
    exc_tau: float = 100.0
    exc_refractory: float = 5.0
    # The authors' threshold also needs ``timer > refrac_e`` with ``dtimer/dt = 0.1`` (Brian2
    # port; ``100 ms/s`` in Brian1) reset at each spike: no second spike within 50 ms.
    exc_spike_gap: float = 50.0
    # inhibitory neurons
    inh_rest: float = -60.0
    inh_reset: float = -45.0
    inh_thresh: float = -40.0
    inh_tau: float = 10.0
    inh_refractory: float = 2.0
    # synapses (conductance model: reversal potentials and conductance time constants)
    tau_ge: float = 1.0
    tau_gi: float = 2.0
    exc_e_rev: float = 0.0
    exc_i_rev: float = -100.0
    inh_e_rev: float = 0.0
    inh_i_rev: float = -85.0
    exc_to_inh: float = 10.4
    inh_to_exc: float = 17.0
    # adaptive threshold
    theta_plus: float = 0.05
    tau_theta: float = 1e7
    # STDP (authors: tc_pre 20, tc_post1 20, tc_post2 40; nu_pre 1e-4, nu_post 1e-2, wmax 1)
    tau_pre: float = 20.0
    tau_post1: float = 20.0
    tau_post2: float = 40.0
    nu_pre: float = 1e-4
    nu_post: float = 1e-2
    w_max: float = 1.0
    norm_total: float = 78.0
    init_scale: float = 0.3  # initial w = (U[0,1) + 0.01) * init_scale (authors' random weights)

    def __post_init__(self) -> None:
        if self.neuron_model not in NEURON_MODELS:
            raise ValueError(
                f"neuron_model {self.neuron_model!r} is not valid; choose one of: "
                f"{', '.join(NEURON_MODELS)}"
            )
        if self.rule not in RULES:
            raise ValueError(f"rule {self.rule!r} is not valid; choose one of: {', '.join(RULES)}")
        for name in (
            "dt",
            "present_ms",
            "exc_tau",
            "inh_tau",
            "tau_ge",
            "tau_gi",
            "tau_theta",
            "tau_pre",
            "tau_post1",
            "tau_post2",
            "w_max",
            "norm_total",
            "max_rate_hz",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive; got {getattr(self, name)}")
        if self.exc_spike_gap < 0 or self.exc_refractory < 0 or self.inh_refractory < 0:
            raise ValueError("refractory times and exc_spike_gap must be >= 0")
        if self.rest_ms < 0 or self.min_spikes < 0 or self.max_presentations < 1:
            raise ValueError(
                "rest_ms and min_spikes must be >= 0 and max_presentations >= 1; got "
                f"{self.rest_ms}, {self.min_spikes}, {self.max_presentations}"
            )

    @property
    def steps_on(self) -> int:
        """Time steps an image is shown."""
        return max(1, round(self.present_ms / self.dt))

    @property
    def steps_rest(self) -> int:
        """Silent time steps after each presentation."""
        return round(self.rest_ms / self.dt)

    def step_factors(self) -> StepFactors:
        """Per-step constants of the exact exponential updates (see :class:`StepFactors`)."""
        dt = self.dt
        return StepFactors(
            decay_ge=decay_factor(dt, self.tau_ge),
            decay_gi=decay_factor(dt, self.tau_gi),
            mean_ge=_mean_factor(dt, self.tau_ge),
            mean_gi=_mean_factor(dt, self.tau_gi),
            decay_exc=decay_factor(dt, self.exc_tau),
            decay_inh=decay_factor(dt, self.inh_tau),
            decay_theta=decay_factor(dt, self.tau_theta),
            decay_post1=decay_factor(dt, self.tau_post1),
            decay_post2=decay_factor(dt, self.tau_post2),
        )

    def refractory_steps(self) -> tuple[int, int, int]:
        """(excitatory, inhibitory) refractory periods and the excitatory spike gap, in steps."""
        return (
            round(self.exc_refractory / self.dt),
            round(self.inh_refractory / self.dt),
            round(self.exc_spike_gap / self.dt),
        )


def current_based_params(**overrides: float | int | str) -> DiehlCookParams:
    """BindsNET 0.3.4's ``DiehlAndCook2015`` constants (current-based LIF, pair STDP)."""
    values: dict = dict(
        neuron_model="current",
        rule="pair",
        exc_reset=-60.0,
        exc_spike_gap=0.0,
        exc_to_inh=22.5,
        inh_to_exc=17.5,
        tau_post1=20.0,
    )
    values.update(overrides)
    return DiehlCookParams(**values)


@dataclass
class NetworkState:
    """Everything that carries from one time step (and one image) to the next.

    Shapes: [N] for the neuron arrays, [K] for ``pre_last``. ``pre_last[k]`` is the step (on the
    global ``clock``) of input k's last spike, -1 if none: the pre trace is
    ``exp(-(clock - pre_last) dt / tau_pre)``, computed only where a post spike needs it.
    """

    v_exc: np.ndarray
    v_inh: np.ndarray
    ge_exc: np.ndarray
    gi_exc: np.ndarray
    ge_inh: np.ndarray
    gi_inh: np.ndarray
    refractory_exc: np.ndarray  # int64 steps left
    refractory_inh: np.ndarray
    gap_exc: np.ndarray  # int64 steps until an excitatory neuron may fire again
    theta: np.ndarray
    post1: np.ndarray
    post2: np.ndarray
    pre_last: np.ndarray  # int64 [K]
    exc_spiked: np.ndarray  # uint8 [N], spikes of the last step
    inh_spiked: np.ndarray
    clock: np.ndarray  # int64 [1], steps simulated so far

    def arrays(self) -> dict[str, np.ndarray]:
        """The state as named arrays (for checkpoints)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def copy(self) -> NetworkState:
        """A deep copy."""
        return NetworkState(**{k: v.copy() for k, v in self.arrays().items()})


def new_state(params: DiehlCookParams, n_inputs: int, n_neurons: int) -> NetworkState:
    """Resting state: membranes at rest, conductances, traces and theta at zero."""
    zeros = np.zeros(n_neurons)
    return NetworkState(
        v_exc=np.full(n_neurons, params.exc_rest),
        v_inh=np.full(n_neurons, params.inh_rest),
        ge_exc=zeros.copy(),
        gi_exc=zeros.copy(),
        ge_inh=zeros.copy(),
        gi_inh=zeros.copy(),
        refractory_exc=np.zeros(n_neurons, np.int64),
        refractory_inh=np.zeros(n_neurons, np.int64),
        gap_exc=np.zeros(n_neurons, np.int64),
        theta=zeros.copy(),
        post1=zeros.copy(),
        post2=zeros.copy(),
        pre_last=np.full(n_inputs, -1, np.int64),
        exc_spiked=np.zeros(n_neurons, np.uint8),
        inh_spiked=np.zeros(n_neurons, np.uint8),
        clock=np.zeros(1, np.int64),
    )


def initial_weights(
    params: DiehlCookParams, n_inputs: int, n_neurons: int, rng: np.random.Generator
) -> np.ndarray:
    """``(U[0,1) + 0.01) * init_scale``, float64 [K, N] (the authors' random initial weights)."""
    return (rng.random((n_inputs, n_neurons)) + 0.01) * params.init_scale


def poisson_events(
    rng: np.random.Generator, rates_hz: np.ndarray, steps: int, dt: float
) -> tuple[np.ndarray, np.ndarray]:
    """Bernoulli-per-step Poisson spike trains as events, sorted by step.

    Input k spikes at a step with probability ``rates_hz[k] * dt / 1000``; only inputs with a
    positive rate draw random numbers (one float32 per step each).

    Returns:
        ``(step_ptr[steps + 1], inputs[E])``: the inputs spiking at step t are
        ``inputs[step_ptr[t]:step_ptr[t + 1]]`` (int64, ascending within a step).
    """
    active = np.flatnonzero(rates_hz > 0)
    probability = (rates_hz[active] * (dt / 1000.0)).astype(np.float32)
    draws = rng.random((steps, active.size), dtype=np.float32)
    step_of, column = np.nonzero(draws < probability)
    inputs = active[column].astype(np.int64)
    step_ptr = np.zeros(steps + 1, np.int64)
    np.cumsum(np.bincount(step_of, minlength=steps), out=step_ptr[1:])
    return step_ptr, inputs


def events_to_raster(step_ptr: np.ndarray, inputs: np.ndarray, n_inputs: int) -> np.ndarray:
    """Events -> uint8 raster [steps, K]."""
    steps = step_ptr.size - 1
    raster = np.zeros((steps, n_inputs), np.uint8)
    step_of = np.repeat(np.arange(steps), np.diff(step_ptr))
    raster[step_of, inputs] = 1
    return raster


def raster_to_events(raster: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 raster [steps, K] -> ``(step_ptr, inputs)`` as :func:`poisson_events` returns."""
    step_of, inputs = np.nonzero(raster)
    step_ptr = np.zeros(raster.shape[0] + 1, np.int64)
    np.cumsum(np.bincount(step_of, minlength=raster.shape[0]), out=step_ptr[1:])
    return step_ptr, inputs.astype(np.int64)


def _mean_factor(dt: float, tau: float) -> float:
    """Mean of ``exp(-s/tau)`` over a step, ``(tau/dt)(1 - exp(-dt/tau))``."""
    return tau / dt * (1.0 - np.exp(-dt / tau))


def _flush(values: np.ndarray) -> np.ndarray:
    """Values below :data:`FLUSH_BELOW` set to 0 (all quantities flushed are >= 0)."""
    return np.where(values < FLUSH_BELOW, 0.0, values)


def _implicit_step(
    v: np.ndarray,
    step_over_tau: float,
    rest: float,
    g_exc: np.ndarray,
    e_exc: float,
    g_inh: np.ndarray,
    e_inh: float,
) -> np.ndarray:
    """One backward-Euler step of ``tau dv/dt = (rest - v) + g_e (E_e - v) + g_i (E_i - v)``:
    ``v' = (v + h (rest + g_e E_e + g_i E_i)) / (1 + h (1 + g_e + g_i))`` with ``h = dt / tau``.

    Stable for any conductance; forward Euler is not once ``h g > 2`` (at dt = 1 ms a few
    simultaneous inhibitory spikes suffice, and the membrane then oscillates without bound).
    """
    return (v + step_over_tau * (rest + g_exc * e_exc + g_inh * e_inh)) / (
        1.0 + step_over_tau * (1.0 + g_exc + g_inh)
    )


def simulate_reference(
    params: DiehlCookParams,
    state: NetworkState,
    weights: np.ndarray,
    raster: np.ndarray,
    steps_rest: int,
    learn: bool,
) -> np.ndarray:
    """Simulate one presentation step by step, densely: the readable oracle of the fast engine.

    Args:
        params: model constants.
        state: network state, updated in place.
        weights: input -> excitatory weights [K, N], updated in place when ``learn``.
        raster: input spikes, uint8 [steps_on, K]; then ``steps_rest`` silent steps follow.
        steps_rest: silent steps after the image.
        learn: apply STDP and adapt theta.

    Returns:
        Excitatory spike counts during the ``steps_on`` steps, int64 [N].
    """
    p, s = params, state
    n_inputs, n_neurons = weights.shape
    dt = p.dt
    f = p.step_factors()  # per-step decay factors
    refractory_exc, refractory_inh, gap_exc = p.refractory_steps()
    conductance = p.neuron_model == "conductance"
    counts = np.zeros(n_neurons, np.int64)
    silent = np.zeros(n_inputs, np.uint8)
    for t in range(raster.shape[0] + steps_rest):
        pre_spikes = raster[t] if t < raster.shape[0] else silent
        # 1. synaptic input: this step's input spikes, last step's exc/inh spikes
        input_drive = pre_spikes.astype(np.float64) @ weights
        inhibition = p.inh_to_exc * (s.inh_spiked.sum() - s.inh_spiked.astype(np.float64))
        excitation = p.exc_to_inh * s.exc_spiked.astype(np.float64)
        s.post1 = _flush(s.post1 * f.decay_post1)
        s.post2 = _flush(s.post2 * f.decay_post2)
        # 2. depression at presynaptic spikes (after the weights were read)
        if learn and pre_spikes.any():
            rows = np.flatnonzero(pre_spikes)
            delta = depression_on_pre(pre_spikes, s.post1, p.nu_pre)
            weights[rows] = apply_bounded(weights[rows], delta[rows], p.w_max)
        s.pre_last[pre_spikes.astype(bool)] = s.clock[0]
        # 3. membranes
        free_exc, free_inh = s.refractory_exc == 0, s.refractory_inh == 0
        s.refractory_exc[~free_exc] -= 1
        s.refractory_inh[~free_inh] -= 1
        s.gap_exc[s.gap_exc > 0] -= 1
        if conductance:
            s.ge_exc = _flush(s.ge_exc * f.decay_ge + input_drive)
            s.gi_exc = _flush(s.gi_exc * f.decay_gi + inhibition)
            s.ge_inh = _flush(s.ge_inh * f.decay_ge + excitation)
            s.gi_inh = _flush(s.gi_inh * f.decay_gi)
            v_exc = _implicit_step(
                s.v_exc, dt / p.exc_tau, p.exc_rest,
                f.mean_ge * s.ge_exc, p.exc_e_rev, f.mean_gi * s.gi_exc, p.exc_i_rev,
            )  # fmt: skip
            v_inh = _implicit_step(
                s.v_inh, dt / p.inh_tau, p.inh_rest,
                f.mean_ge * s.ge_inh, p.inh_e_rev, f.mean_gi * s.gi_inh, p.inh_i_rev,
            )  # fmt: skip
        else:
            v_exc = p.exc_rest + (s.v_exc - p.exc_rest) * f.decay_exc + input_drive - inhibition
            v_inh = p.inh_rest + (s.v_inh - p.inh_rest) * f.decay_inh + excitation
        s.v_exc = np.where(free_exc, v_exc, s.v_exc)
        s.v_inh = np.where(free_inh, v_inh, s.v_inh)
        if learn:
            s.theta *= f.decay_theta
        # 4. threshold, reset, refractory, adaptation
        exc_spikes = free_exc & (s.gap_exc == 0) & (s.v_exc > p.exc_thresh + s.theta)
        inh_spikes = free_inh & (s.v_inh > p.inh_thresh)
        s.v_exc[exc_spikes] = p.exc_reset
        s.v_inh[inh_spikes] = p.inh_reset
        s.refractory_exc[exc_spikes] = refractory_exc
        s.refractory_inh[inh_spikes] = refractory_inh
        s.gap_exc[exc_spikes] = gap_exc
        if learn:
            s.theta[exc_spikes] += p.theta_plus
        # 5. potentiation at postsynaptic spikes, then post traces set to 1
        if learn and exc_spikes.any():
            age = s.clock[0] - s.pre_last
            pre_trace = _flush(np.where(s.pre_last >= 0, np.exp(-age * dt / p.tau_pre), 0.0))
            post2_before = s.post2.copy() if p.rule == "triplet" else None
            delta = potentiation_on_post(pre_trace, exc_spikes, p.nu_post, post2_before)
            columns = np.flatnonzero(exc_spikes)
            weights[:, columns] = apply_bounded(weights[:, columns], delta[:, columns], p.w_max)
        s.post1[exc_spikes] = 1.0
        s.post2[exc_spikes] = 1.0
        if t < raster.shape[0]:
            counts += exc_spikes
        s.exc_spiked = exc_spikes.astype(np.uint8)
        s.inh_spiked = inh_spikes.astype(np.uint8)
        s.clock[0] += 1
    return counts


@dataclass
class DiehlCookNetwork:
    """Parameters, plastic weights [K, N] and state of one network; ``engine`` picks the code."""

    params: DiehlCookParams
    weights: np.ndarray
    state: NetworkState
    engine: str = "numba"

    @classmethod
    def create(
        cls,
        params: DiehlCookParams,
        n_inputs: int,
        n_neurons: int,
        seed: int,
        engine: str = "numba",
    ) -> DiehlCookNetwork:
        """A fresh network: random initial weights from ``seed``, resting state."""
        if engine not in ENGINES:
            raise ValueError(f"engine {engine!r} is not valid; choose one of: {', '.join(ENGINES)}")
        if n_inputs < 1 or n_neurons < 1:
            raise ValueError(f"need at least one input and one neuron; got {n_inputs}, {n_neurons}")
        rng = np.random.default_rng(seed)
        return cls(
            params,
            initial_weights(params, n_inputs, n_neurons, rng),
            new_state(params, n_inputs, n_neurons),
            engine,
        )

    @property
    def n_neurons(self) -> int:
        return int(self.weights.shape[1])

    def simulate(self, step_ptr: np.ndarray, inputs: np.ndarray, learn: bool) -> np.ndarray:
        """One presentation (image then rest) of the given input events; spike counts [N]."""
        if self.engine == "reference":
            raster = events_to_raster(step_ptr, inputs, self.weights.shape[0])
            return simulate_reference(
                self.params, self.state, self.weights, raster, self.params.steps_rest, learn
            )
        from spikeforge.stdp._numba_engine import simulate_events

        return simulate_events(
            self.params, self.state, self.weights, step_ptr, inputs, self.params.steps_rest, learn
        )


def present_image(
    network: DiehlCookNetwork, intensity: np.ndarray, rng: np.random.Generator, learn: bool
) -> tuple[np.ndarray, int]:
    """Show one image until the layer fires ``min_spikes`` times (or the cap is reached).

    Args:
        network: updated in place.
        intensity: pixel intensities in [0, 1], shape [K].
        rng: the encoder's random stream.
        learn: STDP, theta adaptation and normalisation on.

    Returns:
        ``(counts[N], presentations)``: the spike counts of the last presentation.
    """
    p = network.params
    counts = np.zeros(network.n_neurons, np.int64)
    for attempt in range(p.max_presentations):
        if learn:
            network.weights[:] = normalize_columns(network.weights, p.norm_total)
        rates = intensity * (p.max_rate_hz + attempt * p.rate_step_hz)
        step_ptr, inputs = poisson_events(rng, rates, p.steps_on, p.dt)
        counts = network.simulate(step_ptr, inputs, learn)
        if counts.sum() >= p.min_spikes:
            return counts, attempt + 1
    return counts, p.max_presentations


def run_images(
    network: DiehlCookNetwork,
    intensities: np.ndarray,
    rng: np.random.Generator,
    learn: bool,
    on_image: Callable[[int, np.ndarray, int], None] | None = None,
) -> np.ndarray:
    """Present images in order; return their spike counts, int64 [M, N].

    Args:
        intensities: [M, K] in [0, 1].
        on_image: called as ``on_image(index, counts, presentations)`` after each image.
    """
    out = np.zeros((intensities.shape[0], network.n_neurons), np.int64)
    for index in range(intensities.shape[0]):
        out[index], shown = present_image(network, intensities[index], rng, learn)
        if on_image is not None:
            on_image(index, out[index], shown)
    return out

"""Typed experiment configuration: dataclasses validated on load, TOML in, TOML out.

A run is described by a TOML file (presets in ``configs/``) plus ``--set section.key=value``
overrides, each checked against the field's type. Unknown keys are errors that list the valid ones.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import tomli_w

from spikeforge.neuron import surrogate_names

__all__ = [
    "ConfigError",
    "DataConfig",
    "EncodeConfig",
    "ModelConfig",
    "TrainConfig",
    "RunConfig",
    "DiehlCookConfig",
    "ConvSTDPConfig",
    "EnsembleConfig",
    "load_config",
    "config_from_dict",
    "apply_overrides",
    "save_config",
    "config_to_dict",
]

METHODS = ("bptt", "diehl-cook", "conv-stdp", "conv-stdp-hybrid", "ensemble")
DATASETS = ("mnist", "fashion-mnist", "digits", "nmnist", "shd")
EVENT_DATASETS = ("nmnist", "shd")
ENCODERS = ("poisson", "latency", "events")
BACKWARDS = ("dense", "sparse")
READOUTS = ("last", "max", "sum")
VALIDATION_SPLITS = ("held-out", "label-split")
BACKENDS = ("auto", "torch", "numba")
LR_SCHEDULES = ("constant", "cosine")
PRECISIONS = ("float32", "bfloat16")


class ConfigError(ValueError):
    """A config value or key is wrong; the message says which and what is allowed."""


@dataclass
class DataConfig:
    """``[data]``: which dataset, and how much of its training split."""

    name: str = "mnist"
    limit: int = 0  # first N training samples; 0 = all
    test_limit: int = 0  # first N test samples; 0 = all
    root: str = ""  # dataset cache directory; "" = $SPIKEFORGE_DATA or ~/.cache/spikeforge
    bin_ms: float = 1.0  # event datasets (nmnist, shd): width of one time bin in ms


@dataclass
class EncodeConfig:
    """``[encode]``: intensities -> spikes."""

    kind: str = "poisson"
    steps: int = 20  # time steps T in training
    test_steps: int = 5  # time steps in evaluation
    latency_tau: float = 20.0  # latency coding: effective time constant (ms)
    latency_threshold: float = 0.2  # latency coding: intensities at or below never spike


@dataclass
class ModelConfig:
    """``[model]``: the fully connected LIF network (Bondarev's vector-matrix model)."""

    layers: list[int] = field(default_factory=lambda: [784, 300, 300, 10])
    beta: float = 0.8187  # leak per step, exp(-1/5)
    thresholds: list[float] = field(default_factory=lambda: [0.5, 0.3])
    surrogate: str = "exp"
    surrogate_scale: float = 0.0  # 0 = the surrogate's default slope
    readout_beta: float = 1.0  # 1 = pure accumulator
    backend: str = "auto"
    precision: str = "float32"  # matmul operands: float32 | bfloat16 (mixed precision)
    backward: str = "dense"  # dense | sparse (Perez-Nieves & Goodman 2021)
    active_bound: float = 0.0  # sparse: |u - threshold| < bound is active; 0 = surrogate's own
    readout: str = "last"  # class scores from the readout membrane: last | max | sum over time
    weight_gain: float = 1.0  # hidden weights drawn from U[-g sqrt(3/h), g sqrt(3/h)]


@dataclass
class TrainConfig:
    """``[train]``: optimisation (Adam) and run settings."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-4
    lr_schedule: str = "constant"  # constant | cosine (decays to 0 over all epochs, per batch)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    weight_decay: float = 0.0  # decoupled (AdamW) weight decay; 0 = plain Adam
    label_smoothing: float = 0.0  # cross-entropy target smoothing in [0, 1)
    # Training images only, before encoding (spikeforge.data.augment): random translation by up
    # to augment_shift pixels each way, and a random horizontal flip (clothing, not digits).
    augment_shift: int = 0
    augment_flip: bool = False
    eval_batch_size: int = 256
    threads: int = 0  # torch/numba threads; 0 = all cores
    device: str = "cpu"
    progress: bool = True
    # Spike-rate regularisers (0 = off) on the spike counts c[b, j] of each hidden layer:
    # lower: strength * mean_j relu(bound - mean_b c)^2
    # upper: strength * mean_b relu(mean_j c - bound)^2
    rate_lower_strength: float = 0.0
    rate_lower_bound: float = 0.0  # spikes per neuron per sample
    rate_upper_strength: float = 0.0
    rate_upper_bound: float = 0.0  # mean spikes per neuron per sample


@dataclass
class DiehlCookConfig:
    """``[diehl_cook]``: the Diehl & Cook (2015) STDP network (method ``diehl-cook``).

    Defaults are the authors' Brian code; see :class:`spikeforge.stdp.DiehlCookParams`.
    """

    neurons: int = 100  # excitatory (= inhibitory) neurons
    neuron_model: str = "conductance"  # conductance (the paper) | current (BindsNET)
    rule: str = "triplet"  # triplet (authors' code) | pair (BindsNET PostPre)
    engine: str = "numba"  # numba (event-driven) | reference (dense, the test oracle)
    dt: float = 1.0  # ms per step (authors: 0.5)
    present_ms: float = 350.0
    rest_ms: float = 150.0
    max_rate_hz: float = 63.75  # rate of a white pixel
    min_spikes: int = 5  # fewer excitatory spikes: show the image again, brighter
    max_presentations: int = 20
    theta_plus: float = 0.05  # mV added to the threshold at each spike
    tau_theta_ms: float = 1e7
    nu_pre: float = 1e-4
    nu_post: float = 1e-2
    w_max: float = 1.0
    norm_total: float = 78.0  # each neuron's incoming weights sum to this after every image
    exc_to_inh: float = 0.0  # 0 = the neuron model's default (10.4 conductance, 22.5 current)
    inh_to_exc: float = 0.0  # 0 = the neuron model's default (17.0 conductance, 17.5 current)
    spike_gap_ms: float = -1.0  # min. time between exc spikes; -1 = model default (50 / 0 ms)
    label_images: int = 10000  # labelling pass (learning off) on the last N training images
    log_every: int = 5000  # images between metrics lines and checkpoints
    # Images per batch. 1 = the per-image reference semantics (each image's updates applied before
    # the next). > 1 = the batched mode, a DIFFERENT ORDER OF COMPUTATION that changes results:
    # copies of the network learn from each image of a batch from the same start, then their
    # changes are reduced (spikeforge.stdp.diehl_cook_batched); torch on train.device (engine
    # is then unused).
    batch_size: int = 1
    batch_reduction: str = "mean"  # mean | sum of the images' weight and theta changes


@dataclass
class ConvSTDPConfig:
    """``[conv_stdp]``: the STDP-trained convolutional layer (methods ``conv-stdp`` and
    ``conv-stdp-hybrid``; Shimmyo & Okuyama's window mini-batching, Tavanaei et al. 2018's layer).

    See :mod:`spikeforge.stdp.conv` for the equations.
    """

    filters: int = 16  # k filters (Tavanaei's first layer: 16)
    kernel: int = 5  # p x p windows, zero padded: one window per pixel
    beta: float = 1.0  # leak per step; 1 = integrate-and-fire
    threshold: float = 4.0
    learning_rate: float = 0.001  # a in dw = a (1 - w) / a (0 - w)
    pre_window: int = 1  # an input "spiked" if it did in the last pre_window steps
    window_batch: int = 784  # windows per averaged update; 1 = sequential (one image = H*W)
    average: str = "firing"  # firing (per filter, over windows it fired in) | all (over the batch)
    steps: int = 20  # time steps T each window is shown for during STDP
    epochs: int = 1  # unsupervised passes over the training images
    images: int = 0  # STDP on the first N training images (after data.limit); 0 = all
    pool: int = 2  # hybrid: max pooling (spike OR) of this size and stride on the feature maps
    mse_average: int = 64  # reconstruction MSE: moving average over this many images
    eval_images: int = 1000  # test images for the final reconstruction MSE
    log_every: int = 5000  # images between metrics lines and checkpoints


@dataclass
class EnsembleConfig:
    """``[ensemble]``: Ensemble STDP (Hanyu & Dang, "Accelerating distributed
    spike-timing-dependent-plasticity learning"), method ``ensemble``.

    Sub-model k is a Diehl & Cook network of ``submodels[k]`` neurons with the ``[diehl_cook]``
    settings (its ``neurons`` is ignored), trained on shard k of the training images.
    """

    submodels: list[int] = field(default_factory=lambda: [100, 100, 100, 100, 100])
    # Multiplies each sub-model's STDP rates (diehl_cook.nu_pre and nu_post). A sub-model sees
    # only its shard; the number of equal shards keeps (rate x images) at the single network's.
    learning_rate_scale: float = 1.0
    shards: str = "equal"  # equal (random, near-equal sizes) | dirichlet (class-skewed)
    dirichlet_alpha: float = 1.0  # concentration of the Dirichlet class split
    # Images each sub-model is shown per epoch: largest-shard (its shard repeated up to the
    # largest shard's size, so that its adaptive thresholds end on the scale of the others'; no
    # change for equal shards) | own-shard (its shard once, as the paper). See README:
    # class-skewed shards
    presentations: str = "largest-shard"
    target_neurons: int = 300  # compress the merged network to this size; 0 = no compression
    metrics: list[str] = field(
        default_factory=lambda: ["mse", "manhattan", "cosine", "correlation"]
    )  # greedy pruning by each; the first is the headline (summary.json test_accuracy)
    # Which neuron of the most similar pair the pruning removes: higher-index (the later one) |
    # higher-threshold (the one with the higher adaptive threshold theta; sub-model order does
    # not matter to it). See spikeforge.ensemble.compression.
    remove: str = "higher-index"
    genetic: bool = False  # also choose the neurons to keep with a genetic algorithm
    genetic_population: int = 40
    genetic_generations: int = 100
    genetic_tournament: int = 3
    genetic_elite: int = 2
    genetic_mutation: float = 0.02  # chance that each kept neuron of a child is swapped out
    validation_images: int = 5000  # images the genetic fitness scores (when genetic)
    # Where they come from: held-out (training images after the pool, which nothing trains on)
    # | label-split (the last validation_images of the pool's labelled images: the genetic
    # search assigns labels from the others; the run uses no image beyond the pool)
    validation: str = "held-out"
    path_points: int = 25  # sizes along each pruning path shown by `spikeforge plot`
    workers: int = 0  # CPUs of a local Ray; 0 = all cores
    address: str = ""  # Ray cluster to join (e.g. "auto" or "ray://host:10001"); "" = local
    max_retries: int = 3  # retries of a task whose worker process dies


@dataclass
class RunConfig:
    """A whole experiment."""

    method: str = "bptt"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    diehl_cook: DiehlCookConfig = field(default_factory=DiehlCookConfig)
    conv_stdp: ConvSTDPConfig = field(default_factory=ConvSTDPConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)

    def validate(self) -> RunConfig:
        """Check every value; raise ConfigError naming the key, the value and what is allowed."""
        _one_of("method", self.method, METHODS)
        _one_of("data.name", self.data.name, DATASETS)
        _one_of("encode.kind", self.encode.kind, ENCODERS)
        _one_of("model.surrogate", self.model.surrogate, surrogate_names())
        _one_of("model.backend", self.model.backend, BACKENDS)
        _one_of("train.lr_schedule", self.train.lr_schedule, LR_SCHEDULES)
        _one_of("model.precision", self.model.precision, PRECISIONS)
        _one_of("model.backward", self.model.backward, BACKWARDS)
        _one_of("model.readout", self.model.readout, READOUTS)
        if (self.encode.kind == "events") != (self.data.name in EVENT_DATASETS):
            raise ConfigError(
                f"encode.kind = {self.encode.kind!r} does not fit data.name = {self.data.name!r}; "
                f"event datasets ({', '.join(EVENT_DATASETS)}) take encode.kind = 'events', "
                "image datasets take 'poisson' or 'latency'"
            )
        for key, value in (
            ("data.limit", self.data.limit),
            ("data.test_limit", self.data.test_limit),
            ("train.threads", self.train.threads),
            ("train.weight_decay", self.train.weight_decay),
            ("train.augment_shift", self.train.augment_shift),
            ("model.surrogate_scale", self.model.surrogate_scale),
            ("model.active_bound", self.model.active_bound),
            ("train.rate_lower_strength", self.train.rate_lower_strength),
            ("train.rate_lower_bound", self.train.rate_lower_bound),
            ("train.rate_upper_strength", self.train.rate_upper_strength),
            ("train.rate_upper_bound", self.train.rate_upper_bound),
        ):
            _at_least(key, value, 0)
        for key, value in (
            ("encode.steps", self.encode.steps),
            ("encode.test_steps", self.encode.test_steps),
            ("train.epochs", self.train.epochs),
            ("train.batch_size", self.train.batch_size),
            ("train.eval_batch_size", self.train.eval_batch_size),
        ):
            _at_least(key, value, 1)
        for key, value in (
            ("data.bin_ms", self.data.bin_ms),
            ("encode.latency_tau", self.encode.latency_tau),
            ("model.weight_gain", self.model.weight_gain),
        ):
            if not 0 < value < float("inf"):
                raise ConfigError(f"{key} must be positive; got {value}")
        if not 0 < self.train.lr < float("inf"):
            raise ConfigError(f"train.lr must be positive; got {self.train.lr}")
        for key in ("adam_beta1", "adam_beta2", "label_smoothing"):
            value = getattr(self.train, key)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"train.{key} must lie in [0, 1); got {value}")
        for key, value in (
            ("model.beta", self.model.beta),
            ("model.readout_beta", self.model.readout_beta),
        ):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{key} must lie in [0, 1]; got {value}")
        layers = self.model.layers
        if len(layers) < 3 or any(n < 1 for n in layers):
            raise ConfigError(
                f"model.layers needs input, at least one hidden and an output width; got {layers}"
            )
        if len(self.model.thresholds) != len(layers) - 2:
            raise ConfigError(
                f"model.thresholds needs one value per hidden layer ({len(layers) - 2}); "
                f"got {self.model.thresholds}"
            )
        if any(not t > 0 for t in self.model.thresholds):
            raise ConfigError(f"model.thresholds must be positive; got {self.model.thresholds}")
        if self.train.device not in ("cpu", "cuda") and not self.train.device.startswith("cuda:"):
            raise ConfigError(
                f"train.device must be cpu, cuda or cuda:N; got {self.train.device!r}"
            )
        augmenting = self.train.augment_shift or self.train.augment_flip
        if augmenting and self.method not in ("bptt", "conv-stdp-hybrid"):
            raise ConfigError(
                f"train.augment_shift and train.augment_flip apply to gradient training (bptt, "
                f"conv-stdp-hybrid), not to {self.method}: remove them"
            )
        if self.method in ("diehl-cook", "ensemble"):
            _validate_diehl_cook(self)
        if self.method in ("conv-stdp", "conv-stdp-hybrid"):
            _validate_conv_stdp(self)
        if self.method == "ensemble":
            _validate_ensemble(self)
        return self


def _validate_diehl_cook(config: RunConfig) -> None:
    """Checks of ``[diehl_cook]``, run only when method is ``diehl-cook``."""
    from spikeforge.stdp import ENGINES, NEURON_MODELS, RULES
    from spikeforge.stdp.diehl_cook_batched import BATCH_REDUCTIONS

    dc = config.diehl_cook
    if config.encode.kind == "events":
        raise ConfigError(
            f"method {config.method} needs an image dataset (mnist, fashion-mnist, digits)"
        )
    _one_of("diehl_cook.neuron_model", dc.neuron_model, NEURON_MODELS)
    _one_of("diehl_cook.rule", dc.rule, RULES)
    _one_of("diehl_cook.engine", dc.engine, ENGINES)
    _one_of("diehl_cook.batch_reduction", dc.batch_reduction, BATCH_REDUCTIONS)
    for key in ("neurons", "max_presentations", "log_every", "batch_size"):
        _at_least(f"diehl_cook.{key}", getattr(dc, key), 1)
    nonnegative = ("min_spikes", "label_images", "rest_ms", "theta_plus", "nu_pre", "nu_post")
    for key in (*nonnegative, "exc_to_inh", "inh_to_exc"):
        _at_least(f"diehl_cook.{key}", getattr(dc, key), 0)
    for key in ("dt", "present_ms", "max_rate_hz", "tau_theta_ms", "w_max", "norm_total"):
        value = getattr(dc, key)
        if not 0 < value < float("inf"):
            raise ConfigError(f"diehl_cook.{key} must be positive; got {value}")


def _validate_conv_stdp(config: RunConfig) -> None:
    """Checks of ``[conv_stdp]``, run only for the conv-stdp methods."""
    from spikeforge.stdp.conv import AVERAGES

    cs = config.conv_stdp
    if config.data.name not in ("mnist", "fashion-mnist", "digits"):
        raise ConfigError(
            f"method {config.method} needs an image dataset (mnist, fashion-mnist, digits); "
            f"got data.name = {config.data.name!r}"
        )
    if config.method == "conv-stdp-hybrid" and config.encode.kind != "poisson":
        raise ConfigError("method conv-stdp-hybrid takes encode.kind = 'poisson'")
    _one_of("conv_stdp.average", cs.average, AVERAGES)
    for key in ("filters", "kernel", "pre_window", "window_batch", "steps", "epochs", "pool"):
        _at_least(f"conv_stdp.{key}", getattr(cs, key), 1)
    for key in ("mse_average", "log_every"):
        _at_least(f"conv_stdp.{key}", getattr(cs, key), 1)
    _at_least("conv_stdp.images", cs.images, 0)
    _at_least("conv_stdp.eval_images", cs.eval_images, 0)
    if cs.kernel % 2 == 0:
        raise ConfigError(f"conv_stdp.kernel must be odd (same padding); got {cs.kernel}")
    if not 0.0 <= cs.beta <= 1.0:
        raise ConfigError(f"conv_stdp.beta must lie in [0, 1]; got {cs.beta}")
    if not 0.0 < cs.threshold < float("inf"):
        raise ConfigError(f"conv_stdp.threshold must be positive; got {cs.threshold}")
    if not 0.0 < cs.learning_rate <= 1.0:
        raise ConfigError(f"conv_stdp.learning_rate must lie in (0, 1]; got {cs.learning_rate}")


def _validate_ensemble(config: RunConfig) -> None:
    """Checks of ``[ensemble]``, run only when method is ``ensemble``."""
    from spikeforge.ensemble import METRICS, PRESENTATION_KINDS, REMOVAL_RULES, SHARD_KINDS

    ens = config.ensemble
    if not ens.submodels or any(n < 1 for n in ens.submodels):
        raise ConfigError(
            f"ensemble.submodels needs one neuron count >= 1 per sub-model; got {ens.submodels}"
        )
    if not 0 < ens.learning_rate_scale < float("inf"):
        raise ConfigError(
            f"ensemble.learning_rate_scale must be positive; got {ens.learning_rate_scale}"
        )
    _one_of("ensemble.shards", ens.shards, SHARD_KINDS)
    _one_of("ensemble.presentations", ens.presentations, PRESENTATION_KINDS)
    _one_of("ensemble.remove", ens.remove, REMOVAL_RULES)
    if not 0 < ens.dirichlet_alpha < float("inf"):
        raise ConfigError(f"ensemble.dirichlet_alpha must be positive; got {ens.dirichlet_alpha}")
    merged = sum(ens.submodels)
    if not 0 <= ens.target_neurons <= merged:
        raise ConfigError(
            f"ensemble.target_neurons must lie in 0..{merged} (the merged size, sum of "
            f"ensemble.submodels); got {ens.target_neurons}"
        )
    for metric in ens.metrics:
        _one_of("ensemble.metrics", metric, METRICS)
    if len(set(ens.metrics)) != len(ens.metrics):
        raise ConfigError(f"ensemble.metrics lists a metric twice: {ens.metrics}")
    compressing = 0 < ens.target_neurons < merged
    if compressing and not ens.metrics and not ens.genetic:
        raise ConfigError(
            "ensemble.target_neurons asks for compression but ensemble.metrics is empty and "
            "ensemble.genetic is false; name a metric or turn the genetic algorithm on"
        )
    if ens.genetic and not compressing:
        raise ConfigError(
            f"ensemble.genetic needs ensemble.target_neurons between 1 and {merged - 1} "
            f"(below the merged size); got {ens.target_neurons}"
        )
    for key in ("genetic_population", "genetic_tournament"):
        _at_least(f"ensemble.{key}", getattr(ens, key), 2 if key == "genetic_population" else 1)
    for key in ("genetic_generations", "genetic_elite", "workers", "max_retries"):
        _at_least(f"ensemble.{key}", getattr(ens, key), 0)
    _at_least("ensemble.path_points", ens.path_points, 2)
    if ens.genetic_tournament > ens.genetic_population:
        raise ConfigError(
            f"ensemble.genetic_tournament ({ens.genetic_tournament}) exceeds "
            f"ensemble.genetic_population ({ens.genetic_population})"
        )
    if ens.genetic_elite >= ens.genetic_population:
        raise ConfigError(
            f"ensemble.genetic_elite ({ens.genetic_elite}) must be below "
            f"ensemble.genetic_population ({ens.genetic_population})"
        )
    if not 0.0 <= ens.genetic_mutation <= 1.0:
        raise ConfigError(
            f"ensemble.genetic_mutation must lie in [0, 1]; got {ens.genetic_mutation}"
        )
    _at_least("ensemble.validation_images", ens.validation_images, 1 if ens.genetic else 0)
    _one_of("ensemble.validation", ens.validation, VALIDATION_SPLITS)
    labelled = config.diehl_cook.label_images or config.data.limit
    if ens.genetic and ens.validation == "label-split" and labelled:
        if ens.validation_images >= labelled:
            raise ConfigError(
                f"ensemble.validation = 'label-split' scores the genetic search on "
                f"{ens.validation_images} of the {labelled} labelled images "
                "(diehl_cook.label_images) and needs at least one left to assign labels from: "
                "lower ensemble.validation_images"
            )
    if ens.address and ens.workers:
        raise ConfigError(
            "ensemble.workers sets the CPUs of a local Ray; with ensemble.address the cluster "
            "decides: set ensemble.workers = 0"
        )


def _one_of(key: str, value: Any, allowed: tuple[str, ...] | list[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} = {value!r} is not valid; choose one of: {', '.join(allowed)}")


def _at_least(key: str, value: float, low: float) -> None:
    if value != value or value < low:  # NaN or too small
        raise ConfigError(f"{key} must be at least {low}; got {value}")


def _section_classes() -> dict[str, type]:
    hints = get_type_hints(RunConfig)
    return {name: kind for name, kind in hints.items() if dataclasses.is_dataclass(kind)}


def _coerce(key: str, value: Any, kind: Any) -> Any:
    """Check ``value`` against the field type ``kind`` (int, float, bool, str, list[int|float])."""
    origin = getattr(kind, "__origin__", None)
    if origin is list:
        (item,) = kind.__args__
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list of {item.__name__}; got {value!r}")
        return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false; got {value!r}")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be an integer; got {value!r}")
    if kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key} must be a number; got {value!r}")
    if kind is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string; got {value!r}")
    raise ConfigError(f"{key}: unsupported field type {kind}")


def config_from_dict(raw: dict[str, Any]) -> RunConfig:
    """Build and validate a RunConfig from a nested dict (as TOML gives it)."""
    sections = _section_classes()
    top_hints = get_type_hints(RunConfig)
    config = RunConfig()
    for key, value in raw.items():
        if key in sections:
            if not isinstance(value, dict):
                raise ConfigError(f"[{key}] must be a table")
            section = getattr(config, key)
            hints = get_type_hints(type(section))
            for sub, sub_value in value.items():
                if sub not in hints:
                    raise ConfigError(
                        f"unknown key {key}.{sub}; valid keys in [{key}]: {', '.join(hints)}"
                    )
                setattr(section, sub, _coerce(f"{key}.{sub}", sub_value, hints[sub]))
        elif key in top_hints:
            setattr(config, key, _coerce(key, value, top_hints[key]))
        else:
            valid = [k for k in top_hints if k not in sections] + [f"[{s}]" for s in sections]
            raise ConfigError(f"unknown key {key!r}; valid top-level keys: {', '.join(valid)}")
    return config.validate()


def _parse_value(text: str) -> Any:
    """Parse the right side of ``--set key=value`` as a TOML value; bare words are strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings to a raw config dict (types are checked later)."""
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects section.key=value; got {item!r}")
        dotted, text = item.split("=", 1)
        parts = dotted.strip().split(".")
        if len(parts) == 1:
            raw[parts[0]] = _parse_value(text.strip())
        elif len(parts) == 2:
            raw.setdefault(parts[0], {})
            if not isinstance(raw[parts[0]], dict):
                raise ConfigError(f"--set {dotted}: {parts[0]} is not a section")
            raw[parts[0]][parts[1]] = _parse_value(text.strip())
        else:
            raise ConfigError(f"--set expects section.key=value; got {item!r}")
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a TOML config, apply ``--set`` overrides, validate."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; presets are in configs/")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from None
    return config_from_dict(apply_overrides(raw, overrides or []))


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    """The fully resolved config as a nested dict."""
    return dataclasses.asdict(config)


def save_config(config: RunConfig, path: str | Path) -> None:
    """Write the fully resolved config as TOML."""
    Path(path).write_text(tomli_w.dumps(config_to_dict(config)))

"""Typed configs: presets, ``--set`` overrides, validation and the saved-config round trip."""

import math
from pathlib import Path

import pytest

from spikeforge.run import train_bptt
from spikeforge.run.config import (
    ConfigError,
    RunConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
MNIST = CONFIGS / "bondarev-mnist.toml"
DIGITS = CONFIGS / "bondarev-digits.toml"


def _config_error(overrides: list[str], path: Path = MNIST) -> str:
    """The one-line message of the ConfigError that ``overrides`` raise."""
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize("preset", ["bondarev-mnist.toml", "bondarev-mnist-paper.toml"])
def test_bondarev_mnist_presets_match_the_paper(preset):
    config = load_config(MNIST.parent / preset)
    assert config.method == "bptt"
    assert config.seed == 0
    assert config.data.name == "mnist"
    assert config.data.limit == 0
    assert config.encode.kind == "poisson"
    assert (config.encode.steps, config.encode.test_steps) == (20, 5)
    assert config.model.layers == [784, 300, 300, 10]
    assert config.model.beta == pytest.approx(math.exp(-1 / 5), abs=1e-4)
    assert config.model.beta == 0.8187
    assert config.model.thresholds == [0.5, 0.3]
    assert config.model.surrogate == "exp"
    assert config.model.readout_beta == 1.0
    assert config.model.precision == "float32"
    assert (config.train.adam_beta1, config.train.adam_beta2) == (0.9, 0.999)
    assert config.train.batch_size == 64
    assert config.train.epochs == 20


def test_the_two_mnist_presets_differ_only_in_the_optimiser_schedule():
    ours, paper = load_config(MNIST), load_config(MNIST.parent / "bondarev-mnist-paper.toml")
    assert (paper.train.lr, paper.train.lr_schedule, paper.train.weight_decay) == (
        1e-4,
        "constant",
        0.0,
    )
    assert (ours.train.lr, ours.train.lr_schedule, ours.train.weight_decay) == (
        1e-3,
        "cosine",
        0.02,
    )
    ours.train.lr, ours.train.lr_schedule = paper.train.lr, paper.train.lr_schedule
    ours.train.weight_decay = paper.train.weight_decay
    assert ours == paper


def test_bondarev_digits_preset_is_the_small_offline_variant():
    config = load_config(DIGITS)
    assert config.method == "bptt"
    assert config.data.name == "digits"
    assert config.model.layers == [64, 100, 10]
    assert config.model.thresholds == [0.5]
    assert config.model.beta == 0.8187
    assert (config.encode.steps, config.encode.test_steps) == (20, 5)
    assert config.train.batch_size == 32
    assert config.train.lr == 1e-3
    assert config.train.epochs == 10


def test_set_overrides_are_parsed_and_typed():
    config = load_config(
        MNIST,
        [
            "train.epochs=3",
            "train.lr=0.01",
            "train.adam_beta1=0",  # an integer is accepted for a float field
            "train.progress=false",
            "model.layers=[784, 50, 10]",
            "model.thresholds=[0.4]",
            "data.name=fashion-mnist",  # a bare word is a string
            'model.surrogate="fast-sigmoid"',
            "train.device=cuda:1",
            "seed=7",
        ],
    )
    assert config.train.epochs == 3 and type(config.train.epochs) is int
    assert config.train.lr == 0.01
    assert config.train.adam_beta1 == 0.0 and type(config.train.adam_beta1) is float
    assert config.train.progress is False
    assert config.model.layers == [784, 50, 10]
    assert config.model.thresholds == [0.4] and type(config.model.thresholds[0]) is float
    assert config.data.name == "fashion-mnist"
    assert config.model.surrogate == "fast-sigmoid"
    assert config.train.device == "cuda:1"
    assert config.seed == 7
    # Keys not overridden keep the preset's values.
    assert config.train.batch_size == 64
    assert config.model.beta == 0.8187


def test_later_set_wins():
    config = load_config(MNIST, ["train.epochs=3", "train.epochs=5"])
    assert config.train.epochs == 5


@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [
        ("train.epochs=x", "train.epochs", "integer"),
        ("train.epochs=2.5", "train.epochs", "integer"),
        ("train.epochs=true", "train.epochs", "integer"),
        ("train.lr=fast", "train.lr", "number"),
        ("train.progress=1", "train.progress", "true or false"),
        ("model.layers=64", "model.layers", "list"),
        ('model.layers=[64, "a", 10]', "model.layers[1]", "integer"),
        ("data.name=3", "data.name", "string"),
    ],
)
def test_set_with_the_wrong_type_names_the_key(override, key, expected):
    message = _config_error([override])
    assert key in message
    assert expected in message


def test_unknown_key_lists_the_valid_keys_of_its_section():
    message = _config_error(["train.epoch=3"])
    assert "train.epoch" in message
    for valid in TrainConfig.__dataclass_fields__:
        assert valid in message


@pytest.mark.parametrize("override", ["nosuch.key=1", "bogus=1"])
def test_unknown_section_or_top_level_key_lists_the_valid_ones(override):
    message = _config_error([override])
    assert override.split(".")[0].split("=")[0] in message
    for valid in ("method", "seed", "[data]", "[encode]", "[model]", "[train]"):
        assert valid in message


@pytest.mark.parametrize("override", ["train.epochs", "a.b.c=1", "=3"])
def test_malformed_set_is_an_error(override):
    message = _config_error([override])
    assert "section.key=value" in message or "unknown key" in message


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.lr=-0.001", "train.lr"),
        ("train.lr=0", "train.lr"),
        ("train.lr=nan", "train.lr"),
        ("model.beta=nan", "model.beta"),
        ("model.beta=1.5", "model.beta"),
        ("model.readout_beta=-0.1", "model.readout_beta"),
        ("train.adam_beta2=1.0", "train.adam_beta2"),
        ("model.surrogate=nosuch", "model.surrogate"),
        ("data.name=cifar", "data.name"),
        ("model.backend=cupy", "model.backend"),
        ("encode.kind=burst", "encode.kind"),
        ("method=hebb", "method"),
        ("model.thresholds=[0.5]", "model.thresholds"),
        ("model.thresholds=[0.5, 0.3, 0.2]", "model.thresholds"),
        ("model.thresholds=[0.5, -0.3]", "model.thresholds"),
        ("model.layers=[784, 10]", "model.layers"),
        ("train.epochs=0", "train.epochs"),
        ("train.batch_size=0", "train.batch_size"),
        ("encode.steps=0", "encode.steps"),
        ("data.limit=-1", "data.limit"),
        ("model.surrogate_scale=nan", "model.surrogate_scale"),
        ("train.device=tpu", "train.device"),
    ],
)
def test_invalid_values_give_a_one_line_error_naming_the_key(override, key):
    message = _config_error([override])
    assert message.startswith(key) or f" {key}" in message, message


def test_choice_errors_list_the_allowed_values():
    assert "exp" in _config_error(["model.surrogate=nosuch"])
    message = _config_error(["data.name=cifar"])
    assert all(name in message for name in ("mnist", "fashion-mnist", "digits"))


def test_missing_or_broken_config_file(tmp_path):
    message = _config_error([], tmp_path / "nope.toml")
    assert "nope.toml" in message and "not found" in message
    broken = tmp_path / "broken.toml"
    broken.write_text("[train\nepochs = 3\n")
    message = _config_error([], broken)
    assert "broken.toml" in message and "TOML" in message


def test_layers_must_match_the_dataset_at_train_time(tmp_path):
    # 784 inputs is a valid network, but digits has 64: caught when the data is loaded.
    config = load_config(DIGITS, ["model.layers=[784, 100, 10]", "train.progress=false"])
    with pytest.raises(ConfigError) as info:
        train_bptt(config, tmp_path / "run", log=lambda _: None)
    message = str(info.value)
    assert "\n" not in message
    assert "64" in message and "model.layers" in message
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()


def test_saved_config_reloads_to_an_equal_config(tmp_path):
    config = load_config(
        DIGITS,
        [
            "seed=3",
            "data.limit=100",
            "data.root=/tmp/somewhere",
            "encode.kind=latency",
            "model.layers=[64, 40, 30, 10]",
            "model.thresholds=[0.25, 0.125]",
            "model.surrogate=fast-sigmoid",
            "train.lr=3e-4",
            "train.progress=false",
        ],
    )
    path = tmp_path / "config.toml"
    save_config(config, path)
    reloaded = load_config(path)
    assert reloaded == config
    assert config_to_dict(reloaded) == config_to_dict(config)


def test_defaults_are_valid_and_round_trip_through_a_dict():
    config = RunConfig().validate()
    assert config_from_dict(config_to_dict(config)) == config


def test_thread_setting_holds_for_torch_and_numba():
    import numba
    import torch

    from spikeforge.run.bptt import _set_threads

    before = torch.get_num_threads(), numba.get_num_threads()
    try:
        _set_threads(1)
        assert (torch.get_num_threads(), numba.get_num_threads()) == (1, 1)
    finally:
        numba.set_num_threads(before[1])
        torch.set_num_threads(before[0])

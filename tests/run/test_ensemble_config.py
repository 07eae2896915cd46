"""The ``[ensemble]`` section: presets, one-line errors, sub-model configs, data split."""

from pathlib import Path

import numpy as np
import pytest

from spikeforge.run import ensemble as trainer
from spikeforge.run.config import ConfigError, config_from_dict, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _error(ensemble: dict, **top) -> str:
    raw = {"method": "ensemble", "ensemble": ensemble, **top}
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)
    message = str(info.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize(
    ("preset", "submodels", "genetic"),
    [("ensemble-5x100-300", [100] * 5, False), ("ensemble-2x250-300", [250, 250], True),
     ("ensemble-500-300", [500], True)],
)  # fmt: skip
def test_presets_train_on_30000_images_with_the_diehl_cook_300_settings(preset, submodels, genetic):
    config = load_config(CONFIGS / f"{preset}.toml")
    single = load_config(CONFIGS / "diehl-cook-300.toml", ["data.limit=30000"])
    assert config.method == "ensemble" and config.data.limit == single.data.limit == 30000
    assert config.ensemble.submodels == submodels and config.ensemble.target_neurons == 300
    assert config.ensemble.metrics == ["mse", "manhattan", "cosine", "correlation"]
    assert config.ensemble.genetic is genetic
    # 2 x 250's genetic search scores on a split of the pool's labelled images: no extra data
    assert config.ensemble.validation == ("label-split" if submodels == [250, 250] else "held-out")
    # 2 x 250: each sub-model sees half the images, its STDP rates are doubled
    assert config.ensemble.learning_rate_scale == (2.0 if submodels == [250, 250] else 1.0)
    assert config.ensemble.remove == (
        "higher-threshold" if submodels == [250, 250] else "higher-index"
    )
    ours, theirs = vars(config.diehl_cook), vars(single.diehl_cook)
    differ = {k for k in ours if ours[k] != theirs[k]}
    assert differ == {"neurons", "log_every"}  # neurons come from ensemble.submodels
    assert (config.seed, config.train.epochs) == (single.seed, single.train.epochs)


def test_config_errors_are_one_line():
    assert "ensemble.shards = 'iid' is not valid" in _error({"shards": "iid"})
    assert "ensemble.presentations = 'all' is not valid" in _error({"presentations": "all"})
    assert "ensemble.remove = 'older' is not valid" in _error({"remove": "older"})
    assert "learning_rate_scale must be positive" in _error({"learning_rate_scale": 0.0})
    assert "ensemble.dirichlet_alpha must be positive" in _error({"dirichlet_alpha": 0.0})
    assert "ensemble.submodels needs one neuron count" in _error({"submodels": []})
    assert "ensemble.submodels needs one neuron count" in _error({"submodels": [10, 0]})
    assert "target_neurons must lie in 0..20" in _error(
        {"submodels": [10, 10], "target_neurons": 21}
    )
    assert "ensemble.metrics = 'l2' is not valid" in _error({"metrics": ["mse", "l2"]})
    assert "lists a metric twice" in _error({"metrics": ["mse", "mse"]})
    assert "name a metric or turn the genetic" in _error({"metrics": [], "genetic": False})
    assert "ensemble.genetic needs ensemble.target_neurons" in _error(
        {"submodels": [10], "target_neurons": 0, "genetic": True}
    )
    assert "genetic_tournament (50) exceeds" in _error({"genetic_tournament": 50})
    assert "genetic_elite (40) must be below" in _error({"genetic_elite": 40})
    assert "genetic_mutation must lie in [0, 1]" in _error({"genetic_mutation": 1.5})
    assert "validation_images must be at least 1" in _error(
        {"genetic": True, "validation_images": 0}
    )
    assert "ensemble.validation = 'pool' is not valid" in _error({"validation": "pool"})
    assert "needs at least one left to assign labels from" in _error(
        {"genetic": True, "validation": "label-split", "validation_images": 10000}
    )
    assert "with ensemble.address the cluster decides" in _error({"address": "auto", "workers": 2})
    assert "ensemble.workers must be at least 0" in _error({"workers": -1})
    assert "unknown key ensemble.neurons" in _error({"neurons": 3})
    assert "must be a list of int" in _error({"submodels": 5})
    assert "needs an image dataset" in _error({}, data={"name": "shd"}, encode={"kind": "events"})
    assert "diehl_cook.neurons must be at least 1" in _error({}, diehl_cook={"neurons": 0})
    config_from_dict({"method": "bptt", "ensemble": {"submodels": []}})  # ignored by other methods


def test_submodel_config():
    config = config_from_dict(
        {
            "method": "ensemble",
            "seed": 7,
            "data": {"name": "digits", "limit": 300},
            "diehl_cook": {"neurons": 99, "present_ms": 123.0, "nu_pre": 1e-4, "nu_post": 0.01},
            "ensemble": {
                "submodels": [4, 6],
                "learning_rate_scale": 2.0,
                "target_neurons": 5,
                "genetic": True,
                "validation_images": 50,
            },
        }  # fmt: skip
    )
    sub = trainer.submodel_config(config, 1)
    assert sub.method == "diehl-cook" and sub.seed == 7 + 2000
    assert sub.diehl_cook.neurons == 6 and sub.diehl_cook.present_ms == 123.0
    assert (sub.diehl_cook.nu_pre, sub.diehl_cook.nu_post) == (2e-4, 0.02)
    assert config.diehl_cook.nu_post == 0.01  # the ensemble's own config is unchanged
    assert (sub.train.threads, sub.train.progress) == (1, False)
    assert sub.data.limit == 350  # the pool and the validation images, loaded alike everywhere


def test_validation_images_follow_the_pool():
    raw = {
        "method": "ensemble",
        "data": {"name": "digits", "limit": 300, "test_limit": 10},
        "ensemble": {"submodels": [4, 4], "target_neurons": 5, "genetic": True,
                     "validation_images": 50},
    }  # fmt: skip
    data = trainer._load(config_from_dict(raw))
    assert (data.pool, data.validation, len(data.train_y)) == (300, 50, 350)
    raw["data"]["limit"] = 0
    data = trainer._load(config_from_dict(raw))
    assert (data.pool, data.validation, len(data.train_y)) == (1387, 50, 1437)
    np.testing.assert_array_equal(data.train_y[data.validation_slice()], data.train_y[1387:])
    raw["data"]["limit"] = 1400
    with pytest.raises(ConfigError, match="too few for a pool of 1400") as info:
        trainer._load(config_from_dict(raw))
    assert "\n" not in str(info.value)


def test_label_split_validation_loads_no_image_beyond_the_pool():
    raw = {
        "method": "ensemble",
        "data": {"name": "digits", "limit": 300, "test_limit": 10},
        "ensemble": {"submodels": [4, 4], "target_neurons": 5, "genetic": True,
                     "validation": "label-split", "validation_images": 50},
    }  # fmt: skip
    config = config_from_dict(raw)
    data = trainer._load(config)
    assert (data.pool, data.validation, len(data.train_y)) == (300, 0, 300)
    assert trainer.submodel_config(config, 0).data.limit == 300


def test_label_split_search_scores_the_last_labelled_images():
    """The genetic search assigns labels from the first labelled images and scores subsets on
    the last ``validation_images`` of them: its best fitness is that split's accuracy."""
    from spikeforge.ensemble import SubsetAccuracy

    config = config_from_dict(
        {
            "method": "ensemble",
            "seed": 3,
            "data": {"name": "digits", "limit": 300, "test_limit": 10},
            "ensemble": {
                "submodels": [6, 6],
                "target_neurons": 7,
                "genetic": True,
                "genetic_population": 8,
                "genetic_generations": 5,
                "validation": "label-split",
                "validation_images": 40,
            },
        }  # fmt: skip
    )
    data = trainer._load(config)
    label = np.arange(200, 300)
    rng = np.random.default_rng(0)
    counts = rng.poisson(1.0, (100, 12))
    labels = data.train_y[label]
    counts[np.arange(100), labels % 12] += 5  # neuron c % 12 prefers class c
    keep, record = trainer._genetic(config, data, {"label": counts}, label, [np.arange(7)])
    assert record["validation"] == "label-split" and keep.size == 7
    split = SubsetAccuracy(counts[:60], labels[:60], counts[60:], labels[60:])
    assert record["validation_accuracy_estimate"] == split(np.isin(np.arange(12), keep))[0]
    assert record["validation_accuracy_estimate"] >= split(np.isin(np.arange(12), np.arange(7)))[0]


def test_kill_hook_parsing(monkeypatch):
    monkeypatch.setenv(trainer.KILL_HOOK_VARIABLE, "1:40")
    assert trainer._kill_hook(1) == (40, 1) and trainer._kill_hook(0) is None
    monkeypatch.setenv(trainer.KILL_HOOK_VARIABLE, "0:5:3")
    assert trainer._kill_hook(0) == (5, 3)
    monkeypatch.setenv(trainer.KILL_HOOK_VARIABLE, "zero")
    with pytest.raises(ConfigError, match="must look like K:N"):
        trainer._kill_hook(0)


def test_cli_address_flag_sets_the_ray_cluster(capsys):
    from spikeforge import cli

    preset = str(CONFIGS / "ensemble-2x250-300.toml")
    status = cli.main(
        ["train", preset, "--address", "ray://head:10001", "--set", "ensemble.workers=2"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1
    assert "with ensemble.address the cluster decides" in err[0]


def test_resuming_a_run_made_before_presentations_existed_keeps_its_sub_models_on_their_shards(
    tmp_path, capsys
):
    """A run directory whose config.toml has no ``ensemble.presentations`` (written before the
    option) showed its sub-models their own shards: resuming it under the new default with
    unequal shards stops with the fix; with equal shards, or own-shard, there is nothing to stop."""
    import tomli_w
    import torch

    from spikeforge import cli
    from spikeforge.run.checkpoint import save_checkpoint
    from spikeforge.run.config import config_to_dict

    raw = {
        "method": "ensemble",
        "data": {"name": "digits", "limit": 400, "test_limit": 40},
        "train": {"progress": False},
        "ensemble": {"submodels": [10, 10], "target_neurons": 12, "shards": "dirichlet"},
    }
    saved = config_to_dict(config_from_dict(raw))
    del saved["ensemble"]["presentations"]
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text(tomli_w.dumps(saved))
    save_checkpoint(run, {"submodels": torch.tensor([10, 10])}, {"stage": "submodels"})
    code = cli.main(["train", str(run / "config.toml"), "--out", str(run), "--resume"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "\n" not in err
    assert "predates ensemble.presentations" in err
    assert "--set ensemble.presentations=own-shard" in err

    check = trainer._check_presentations_recorded
    unequal, equal = [np.arange(3), np.arange(5)], [np.arange(4), np.arange(4)]
    largest = config_from_dict(raw)
    own = config_from_dict({**raw, "ensemble": {**raw["ensemble"], "presentations": "own-shard"}})
    check(run / "config.toml", own, unequal)  # what the run did: nothing to stop
    check(run / "config.toml", largest, equal)  # equal shards: both kinds are the same
    (run / "config.toml").write_text(tomli_w.dumps(config_to_dict(largest)))
    check(run / "config.toml", largest, unequal)  # recorded: the usual resume check applies

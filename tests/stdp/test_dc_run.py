"""The diehl-cook trainer: run directory, evaluation, exact resume after Ctrl-C, config errors."""

import json
import signal

import numpy as np
import pytest

from spikeforge.run import ConfigError, TrainingInterrupted, train
from spikeforge.run import diehl_cook as trainer
from spikeforge.run.checkpoint import load_checkpoint
from spikeforge.run.config import config_from_dict, config_to_dict
from spikeforge.run.evaluation import evaluate_run, plot_run


def _config(**train):
    return config_from_dict(
        {
            "method": "diehl-cook",
            "seed": 3,
            "data": {"name": "digits", "limit": 40, "test_limit": 30},
            "train": {"epochs": 2, "threads": 1, "progress": False, **train},
            "diehl_cook": {
                "neurons": 8,
                "present_ms": 40.0,
                "rest_ms": 10.0,
                "max_rate_hz": 200.0,
                "norm_total": 12.0,
                "label_images": 30,
                "log_every": 15,
            },
        }
    )


def test_run_directory_and_eval(tmp_path):
    out = tmp_path / "run"
    summary = train(_config(), out)
    for name in ("config.toml", "metrics.jsonl", "checkpoint.safetensors", "checkpoint.json"):
        assert (out / name).is_file()
    saved = json.loads((out / "summary.json").read_text())
    assert saved["train_samples"] == 80 and saved["epochs"] == 2
    assert 0.0 <= saved["test_accuracy"] <= 1.0
    assert saved["samples_per_second"] == pytest.approx(80 / saved["train_seconds"])
    assert np.array(saved["confusion"]).sum() == 30
    lines = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["images"] for m in lines] == [15, 30, 40, 55, 70, 80]
    assert all(m["theta_mean"] > 0 and m["spikes_per_image"] > 0 for m in lines)
    assert np.isnan(lines[0]["window_train_accuracy"]) and 0 <= lines[1]["window_train_accuracy"]
    again = evaluate_run(out)
    assert again["test_accuracy"] == summary["test_accuracy"]
    assert again["test_accuracy_proportion"] == summary["test_accuracy_proportion"]
    names = sorted(p.name for p in plot_run(out))
    assert names == ["confusion.png", "receptive_fields.png", "training.png"]


def test_resume_after_interrupt_equals_uninterrupted(tmp_path, monkeypatch):
    straight = train(_config(), tmp_path / "straight")

    original = trainer.present_image
    calls = {"n": 0}

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 52:  # epoch 2, mid-window
            signal.raise_signal(signal.SIGINT)
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer, "present_image", interrupting)
    with pytest.raises(TrainingInterrupted, match="--resume"):
        train(_config(), tmp_path / "cut")
    monkeypatch.setattr(trainer, "present_image", original)
    resumed = train(_config(), tmp_path / "cut", resume=True)

    a, _ = load_checkpoint(tmp_path / "straight")
    b, _ = load_checkpoint(tmp_path / "cut")
    np.testing.assert_array_equal(a["weights"].numpy(), b["weights"].numpy())
    np.testing.assert_array_equal(a["state.theta"].numpy(), b["state.theta"].numpy())
    assert resumed["test_accuracy"] == straight["test_accuracy"]
    assert resumed["train_samples"] == straight["train_samples"]
    metrics = lambda d: [  # noqa: E731
        {k: v for k, v in json.loads(ln).items() if "second" not in k}
        for ln in (tmp_path / d / "metrics.jsonl").read_text().splitlines()
    ]
    assert json.dumps(metrics("cut")) == json.dumps(metrics("straight"))


def test_existing_run_needs_resume(tmp_path):
    train(_config(epochs=1), tmp_path / "run")
    with pytest.raises(ConfigError, match="pass --resume"):
        train(_config(epochs=1), tmp_path / "run")


def test_config_errors():
    with pytest.raises(ConfigError, match="diehl_cook.neuron_model = 'lif' is not valid"):
        config_from_dict({"method": "diehl-cook", "diehl_cook": {"neuron_model": "lif"}})
    with pytest.raises(ConfigError, match="diehl_cook.neurons must be at least 1"):
        config_from_dict({"method": "diehl-cook", "diehl_cook": {"neurons": 0}})
    with pytest.raises(ConfigError, match="unknown key diehl_cook.size"):
        config_from_dict({"method": "diehl-cook", "diehl_cook": {"size": 3}})
    # the section is ignored (not validated) by other methods
    config_from_dict({"method": "bptt", "diehl_cook": {"neurons": 0}})


def test_shard_training_without_evaluation(tmp_path):
    """``train_indices`` trains on exactly those images (the first 40 == data.limit = 40);
    ``evaluate=False`` writes a complete checkpoint and a training-only summary."""
    config = _config(epochs=1)
    calls = []
    whole = config_from_dict({**_as_dict(config), "data": {**_as_dict(config)["data"], "limit": 0}})
    summary = trainer.train_diehl_cook(
        whole, tmp_path / "shard", log=lambda *_: None, train_indices=np.arange(40),
        evaluate=False, on_image=lambda done, total: calls.append((done, total)),
    )  # fmt: skip
    assert "test_accuracy" not in summary and summary["train_samples"] == 40
    assert calls[0] == (1, 40) and calls[-1] == (40, 40) and len(calls) == 40
    _, meta = load_checkpoint(tmp_path / "shard")
    assert meta["complete"] is True
    train(config, tmp_path / "limit")
    a, _ = load_checkpoint(tmp_path / "shard")
    b, _ = load_checkpoint(tmp_path / "limit")
    np.testing.assert_array_equal(a["weights"].numpy(), b["weights"].numpy())
    np.testing.assert_array_equal(a["state.theta"].numpy(), b["state.theta"].numpy())


def _as_dict(config):
    from spikeforge.run.config import config_to_dict

    return config_to_dict(config)


def _batched_config(**diehl_cook):
    config = config_to_dict(_config())
    config["diehl_cook"].update({"batch_size": 4, **diehl_cook})
    return config_from_dict(config)


def test_batched_run_directory_and_resume(tmp_path, monkeypatch):
    """batch_size 4 (the batched mode) trains, evaluates and writes the run directory; batches
    end at metrics windows (15 is not a multiple of 4) and resume after Ctrl-C is exact."""
    straight = train(_batched_config(), tmp_path / "straight")
    saved = json.loads((tmp_path / "straight" / "summary.json").read_text())
    assert saved["train_samples"] == 80 and saved["config"]["diehl_cook"]["batch_size"] == 4
    assert 0.0 <= straight["test_accuracy"] <= 1.0 and straight["theta_mean"] > 0
    lines = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["images"] for ln in lines] == [15, 30, 40, 55, 70, 80]

    original = trainer.present_batch
    calls = {"n": 0}

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 14:  # epoch 2, mid-window
            signal.raise_signal(signal.SIGINT)
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer, "present_batch", interrupting)
    with pytest.raises(TrainingInterrupted, match="--resume"):
        train(_batched_config(), tmp_path / "cut")
    monkeypatch.undo()
    resumed = train(_batched_config(), tmp_path / "cut", resume=True)
    a, _ = load_checkpoint(tmp_path / "straight")
    b, _ = load_checkpoint(tmp_path / "cut")
    np.testing.assert_array_equal(a["weights"].numpy(), b["weights"].numpy())
    np.testing.assert_array_equal(a["state.theta"].numpy(), b["state.theta"].numpy())
    assert resumed["test_accuracy"] == straight["test_accuracy"]


def test_batched_config_errors():
    with pytest.raises(ConfigError, match="diehl_cook.batch_size must be at least 1; got 0"):
        config_from_dict({"method": "diehl-cook", "diehl_cook": {"batch_size": 0}})
    with pytest.raises(ConfigError, match="diehl_cook.batch_reduction = 'max' is not valid"):
        config_from_dict({"method": "diehl-cook", "diehl_cook": {"batch_reduction": "max"}})

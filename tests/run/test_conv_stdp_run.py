"""The conv-stdp and conv-stdp-hybrid trainers: run directory, exact resume after Ctrl-C, the
hybrid end to end on the digits set, eval/plot, and one-line config errors."""

import json

import pytest
import torch

from spikeforge.run import ConfigError, TrainingInterrupted, bptt, train
from spikeforge.run import conv_stdp as trainer
from spikeforge.run.checkpoint import load_checkpoint
from spikeforge.run.config import config_from_dict
from spikeforge.run.evaluation import evaluate_run, plot_run


@pytest.fixture(autouse=True, scope="module")
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    bptt._set_threads(threads)


def _raw(method="conv-stdp", **conv):
    return {
        "method": method,
        "seed": 4,
        "data": {"name": "digits", "limit": 300, "test_limit": 120},
        "encode": {"steps": 8, "test_steps": 8},
        "model": {"layers": [64, 40, 10], "thresholds": [0.5]},
        "train": {"epochs": 3, "threads": 1, "progress": False, "batch_size": 32, "lr": 3e-3},
        "conv_stdp": {
            "filters": 4,
            "kernel": 3,
            "threshold": 2.0,
            "learning_rate": 0.02,
            "window_batch": 64,
            "steps": 6,
            "epochs": 2,
            "eval_images": 50,
            "log_every": 100,
            **conv,
        },
    }


def test_run_directory_eval_and_plot(tmp_path):
    out = tmp_path / "run"
    summary = train(config_from_dict(_raw()), out)
    for name in ("config.toml", "metrics.jsonl", "checkpoint.safetensors", "summary.json"):
        assert (out / name).is_file()
    assert summary["train_samples"] == 600 and summary["epochs"] == 2
    lines = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    # Groups of 64 images (window_batch 64 = one 8x8 image): lines at >= 100 images and epoch end.
    assert [m["images"] for m in lines] == [128, 256, 300, 428, 556, 600]
    assert all(0 < m["fired_window_fraction"] <= 1 for m in lines)
    # Learning lowers the reconstruction error from that of the random initial filters.
    initial = trainer.initial_filters(4, 3, torch.Generator().manual_seed(4))
    config = config_from_dict(_raw())
    test_x, _ = trainer._images(config, "test")
    before = trainer.reconstruction_mse(initial, test_x[:50], config, 4 + 1_000_003)
    assert summary["test_reconstruction_mse"] < 0.8 * before
    again = evaluate_run(out)
    assert again["test_reconstruction_mse"] == summary["test_reconstruction_mse"]
    names = sorted(p.name for p in plot_run(out))
    assert names == ["filters.png", "reconstruction_mse.png"]


def test_resume_after_interrupt_equals_uninterrupted(tmp_path, monkeypatch):
    straight = train(config_from_dict(_raw()), tmp_path / "straight")
    original = trainer._group_errors
    calls = {"n": 0}

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:  # epoch 2, second group, before a checkpoint
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer, "_group_errors", interrupting)
    with pytest.raises(TrainingInterrupted, match="--resume"):
        train(config_from_dict(_raw()), tmp_path / "cut")
    monkeypatch.setattr(trainer, "_group_errors", original)
    resumed = train(config_from_dict(_raw()), tmp_path / "cut", resume=True)
    a, _ = load_checkpoint(tmp_path / "straight")
    b, _ = load_checkpoint(tmp_path / "cut")
    assert torch.equal(a["filters"], b["filters"])
    assert resumed["test_reconstruction_mse"] == straight["test_reconstruction_mse"]
    assert resumed["train_samples"] == straight["train_samples"]
    cut, whole = (
        [json.loads(ln) for ln in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        for name in ("cut", "straight")
    )
    assert [(m["images"], m["mse_moving_average"]) for m in cut] == [
        (m["images"], m["mse_moving_average"]) for m in whole
    ]


def test_hybrid_end_to_end_on_digits(tmp_path):
    out = tmp_path / "hybrid"
    raw = _raw("conv-stdp-hybrid")
    raw["model"]["layers"] = [64, 40, 10]  # 4 filters x (8/2) x (8/2) pooled features
    raw["train"].update(epochs=6, lr=1e-2)
    summary = train(config_from_dict(raw), out)
    assert (out / "conv-stdp" / "summary.json").is_file()
    assert summary["conv_stdp"]["train_samples"] == 600
    assert summary["epochs"] == 6
    # Chance is 10%; six short epochs on STDP features classify most digits.
    assert summary["test_accuracy"] > 0.75
    again = evaluate_run(out)
    assert again["test_accuracy"] == summary["test_accuracy"]
    names = {p.name for p in plot_run(out, max_steps=3)}
    assert {"filters.png", "reconstruction_mse.png", "accuracy.png"} <= names
    # --resume on a finished STDP phase keeps it and continues the dense phase.
    more = train(config_from_dict({**raw, "train": {**raw["train"], "epochs": 7}}), out, True)
    assert more["epochs"] == 7


def test_hybrid_feature_width_is_checked(tmp_path):
    raw = _raw("conv-stdp-hybrid")
    raw["model"]["layers"] = [100, 40, 10]
    with pytest.raises(ConfigError, match=r"conv-STDP features give 64 inputs.*layers=\[64"):
        train(config_from_dict(raw), tmp_path / "bad")


@pytest.mark.parametrize(
    ("conv", "message"),
    [
        ({"window_batch": 0}, "conv_stdp.window_batch must be at least 1"),
        ({"average": "median"}, "conv_stdp.average = 'median' is not valid"),
        ({"kernel": 4}, "conv_stdp.kernel must be odd"),
        ({"learning_rate": 2.0}, r"conv_stdp.learning_rate must lie in \(0, 1\]"),
        ({"threshold": 0.0}, "conv_stdp.threshold must be positive"),
    ],
)
def test_config_errors(conv, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(_raw(**conv))


def test_misaligned_window_batch_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="choose a divisor or a multiple of 64"):
        train(config_from_dict(_raw(window_batch=64 * 4099 + 1)), tmp_path / "x")
    assert trainer.group_images(256, 784) == 64  # lcm = 16 images; at least 64
    assert trainer.group_images(784 * 100, 784) == 100

"""End-to-end: the sparse backward trains a network on scikit-learn's digits (offline)."""

import json
from pathlib import Path

import pytest
import torch

from spikeforge.run import bptt
from spikeforge.run.bptt import build_model, rate_regularizer, train_bptt
from spikeforge.run.config import ConfigError, load_config
from spikeforge.run.evaluation import plot_run

DIGITS = Path(__file__).resolve().parents[2] / "configs" / "bondarev-digits.toml"
SPARSE_DIGITS = DIGITS.parent / "sparse-digits.toml"
QUIET = ["train.progress=false", "train.threads=1"]


@pytest.fixture(autouse=True, scope="module")
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    bptt._set_threads(threads)


@pytest.mark.parametrize("readout", ["max", "sum"])
def test_sparse_backward_learns_digits_and_logs_active_fraction(tmp_path, readout):
    config = load_config(SPARSE_DIGITS, [*QUIET, f"model.readout={readout}"])
    summary = train_bptt(config, tmp_path, log=lambda _: None)
    assert summary["test_accuracy"] > 0.6  # chance is 0.1
    lines = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        (fraction,) = line["active_fraction"]
        assert 0.0 < fraction < 0.5
    if readout == "max":
        paths = plot_run(tmp_path, max_steps=2)
        assert tmp_path / "active_fraction.png" in paths
        assert (tmp_path / "active_fraction.png").read_bytes().startswith(b"\x89PNG")


def test_dense_run_logs_no_active_fraction(tmp_path):
    config = load_config(SPARSE_DIGITS, [*QUIET, "train.epochs=1", "model.backward=dense"])
    train_bptt(config, tmp_path, log=lambda _: None)
    line = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert "active_fraction" not in line


def test_rate_regularizer_by_hand():
    config = load_config(
        DIGITS,
        [
            "train.rate_lower_strength=2.0",
            "train.rate_lower_bound=1.0",
            "train.rate_upper_strength=3.0",
            "train.rate_upper_bound=0.5",
        ],
    )
    spikes = torch.zeros(4, 2, 3)  # T=4, B=2, N=3
    spikes[:, 0, 0] = 1  # sample 0 neuron 0 spikes 4 times
    spikes[0, 1, 1] = 1
    # counts [[4,0,0],[0,1,0]]: neuron means over batch [2, .5, 0] -> lower relu(1 - m) = [0, .5, 1]
    # sample means over neurons [4/3, 1/3] -> upper relu(m - .5) = [5/6, 0]
    expected = 2.0 * (0.25 + 1.0) / 3 + 3.0 * (25 / 36) / 2
    assert rate_regularizer([spikes], config).item() == pytest.approx(expected)
    assert rate_regularizer([spikes], load_config(DIGITS)) is None


def test_config_checks_new_keys():
    with pytest.raises(ConfigError, match="model.backward"):
        load_config(DIGITS, ["model.backward=fast"])
    with pytest.raises(ConfigError, match="model.readout"):
        load_config(DIGITS, ["model.readout=mean"])
    with pytest.raises(ConfigError, match="does not fit"):
        load_config(DIGITS, ["encode.kind=events"])
    with pytest.raises(ConfigError, match="data.bin_ms"):
        load_config(DIGITS, ["data.bin_ms=0"])
    for name in (
        "sparse-fmnist",
        "sparse-fmnist-tuned",
        "sparse-fmnist-wide",
        "sparse-nmnist",
        "sparse-shd",
    ):
        path = DIGITS.parent / f"{name}.toml"
        config = load_config(path, ["model.backward=dense"])
        assert config.model.backward == "dense"
        assert load_config(path).model.backward == "sparse"


def test_wide_preset_is_the_committed_88_percent_runs():
    """configs/sparse-fmnist-wide.toml is the config of the run its comment cites."""
    from spikeforge.run.config import config_to_dict

    root = DIGITS.parents[1]
    preset = config_to_dict(load_config(root / "configs" / "sparse-fmnist-wide.toml"))
    for seed, name in enumerate(("h1200-aug1-20ep", "h1200-aug1-20ep-seed1")):
        run = root / "results" / "sparse-fmnist-cpu-probes" / name
        ran = config_to_dict(load_config(run / "config.toml"))
        for key in ("threads", "progress"):  # how it ran, not what it computes
            ran["train"][key] = preset["train"][key]
        assert ran["seed"] == seed
        ran["seed"] = preset["seed"]
        assert preset == ran, name
        assert json.loads((run / "summary.json").read_text())["test_accuracy"] >= 0.88


def test_sparse_run_resumes_exactly(tmp_path):
    config = load_config(SPARSE_DIGITS, [*QUIET, "train.epochs=2", "data.limit=300"])
    straight = tmp_path / "straight"
    train_bptt(config, straight, log=lambda _: None)

    def interrupt(epoch, batch, loss):
        if (epoch, batch) == (2, 5):
            raise KeyboardInterrupt

    cut = tmp_path / "cut"
    with pytest.raises(bptt.TrainingInterrupted):
        train_bptt(config, cut, on_batch=interrupt, log=lambda _: None)
    train_bptt(config, cut, resume=True, log=lambda _: None)
    a = [json.loads(ln) for ln in (straight / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(ln) for ln in (cut / "metrics.jsonl").read_text().splitlines()]
    for x, y in zip(a, b, strict=True):
        assert x["active_fraction"] == pytest.approx(y["active_fraction"], rel=1e-12)
        assert x["test_accuracy"] == y["test_accuracy"] and x["train_loss"] == pytest.approx(
            y["train_loss"], rel=1e-9
        )


def test_restored_optimizer_state_takes_each_parameters_layout():
    """Checkpoints hold contiguous tensors; restored Adam moments get their parameter's layout
    back (the sparse layers' weights are stored input-major)."""
    torch.manual_seed(0)
    model = build_model(load_config(SPARSE_DIGITS, QUIET))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for param in model.parameters():
        param.grad = torch.ones_like(param)
    optimizer.step()
    tensors, steps = bptt._optimizer_tensors(optimizer)
    saved = {name: value.contiguous().clone() for name, value in tensors.items()}
    fresh = torch.optim.Adam(model.parameters(), lr=1e-3)
    bptt._restore_optimizer(fresh, saved, steps)
    assert any(p.stride() != p.contiguous().stride() for p in model.parameters())
    for param in model.parameters():
        state = fresh.state[param]
        for key in ("exp_avg", "exp_avg_sq"):
            assert state[key].stride() == param.stride()
            assert torch.equal(state[key], optimizer.state[param][key])

"""The ``spikeforge`` command line: the files a run writes, eval, plot, and one-line errors."""

import contextlib
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spikeforge import cli
from spikeforge.run import bptt
from spikeforge.run.checkpoint import load_checkpoint
from spikeforge.run.config import load_config

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "configs" / "bondarev-digits.toml"
# One thread: the machine is shared, and spinning threads make training many times slower.
FAST = ["--set", "train.progress=false", "--set", "train.threads=1"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch):
    monkeypatch.delenv("SPIKEFORGE_DATA", raising=False)
    monkeypatch.delenv("SPIKEFORGE_DATA_FROM", raising=False)


@pytest.fixture(autouse=True, scope="module")
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    bptt._set_threads(threads)  # train.threads sets them process-wide


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``spikeforge train`` of one epoch on all of digits: (run directory, stdout)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    argv = ["train", str(DIGITS), "--set", "train.epochs=1", *FAST, "--out", str(out)]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = cli.main(argv)
    assert status == 0
    return out, stdout.getvalue()


def _assert_one_line_error(status: int, err: str) -> str:
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("spikeforge: error: ")
    assert "Traceback" not in err
    return lines[0]


def test_train_writes_the_run_directory(trained):
    out, stdout = trained
    assert {p.name for p in out.iterdir()} >= {
        "config.toml",
        "metrics.jsonl",
        "checkpoint.safetensors",
        "checkpoint.json",
        "summary.json",
    }
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]

    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["epoch"] == 1
    assert math.isfinite(record["train_loss"]) and record["train_loss"] > 0
    assert 0 <= record["train_accuracy"] <= 1
    assert 0 <= record["test_accuracy"] <= 1
    assert record["epoch_seconds"] > 0

    summary = json.loads((out / "summary.json").read_text())
    assert 0.3 < summary["test_accuracy"] <= 1  # digits learns fast
    assert summary["test_accuracy"] == record["test_accuracy"]
    assert summary["train_samples"] == 1437
    assert summary["train_seconds"] > 0
    # Training time only: the epoch's evaluation is not part of it.
    assert summary["train_seconds"] == record["epoch_seconds"]
    assert summary["samples_per_second"] == pytest.approx(
        summary["train_samples"] / summary["train_seconds"], rel=1e-12
    )
    assert summary["dataset"] == "digits" and summary["epochs"] == 1

    # config.toml is the fully resolved config actually used, and reloads to it.
    expected = load_config(DIGITS, ["train.epochs=1", "train.progress=false", "train.threads=1"])
    assert load_config(out / "config.toml") == expected

    tensors, meta = load_checkpoint(out)
    assert meta["complete"] is True and meta["progress"]["epoch"] == 1
    assert json.loads((out / "checkpoint.json").read_text()) == meta
    assert tensors["model.hidden.0.weight"].shape == (100, 64)

    assert "test accuracy" in stdout.splitlines()[-1] and str(out) in stdout.splitlines()[-1]


def test_eval_reproduces_the_training_evaluation(trained, capsys):
    out, _ = trained
    summary = json.loads((out / "summary.json").read_text())
    assert cli.main(["eval", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["test_steps"] == 5
    assert result["test_accuracy"] == summary["test_accuracy"]


def test_eval_with_more_steps(trained, capsys):
    out, _ = trained
    assert cli.main(["eval", str(out), "--steps", "10"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["test_steps"] == 10
    assert 0.3 < result["test_accuracy"] <= 1
    assert captured.err == ""


def test_plot_draws_the_figures(trained, capsys):
    out, _ = trained
    assert cli.main(["plot", str(out), "--max-steps", "3"]) == 0
    printed = capsys.readouterr().out.split()
    names = ["accuracy.png", "accuracy_vs_steps.png", "membranes.png", "raster_layer1.png"]
    for name in names:
        path = out / name
        assert str(path) in printed
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000, name
    assert not (out / "raster_layer2.png").exists()  # digits' network has one hidden layer
    curve = json.loads((out / "accuracy_vs_steps.json").read_text())
    assert curve["steps"] == [1, 2, 3]
    assert all(0 <= a <= 1 for a in curve["test_accuracy"])


def test_compare_draws_runs_side_by_side_and_names_a_bad_directory(trained, tmp_path, capsys):
    out, _ = trained
    other = tmp_path / "dense"
    other.mkdir()
    records = [{"epoch": e, "test_accuracy": 0.5 + 0.1 * e} for e in (1, 2)]
    (other / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    png = tmp_path / "both.png"
    assert cli.main(["compare", str(png), str(out), str(other), "--title", "t"]) == 0
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["compare", str(png), str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"no metrics.jsonl in {empty}" in err


def test_train_into_an_existing_run_needs_resume(trained, capsys):
    out, _ = trained
    before = (out / "metrics.jsonl").read_text()
    status = cli.main(["train", str(DIGITS), *FAST, "--out", str(out)])
    line = _assert_one_line_error(status, capsys.readouterr().err)
    assert "--resume" in line
    assert (out / "metrics.jsonl").read_text() == before


def test_resume_of_an_empty_directory_is_an_error(tmp_path, capsys):
    status = cli.main(["train", str(DIGITS), *FAST, "--out", str(tmp_path), "--resume"])
    assert "nothing to resume" in _assert_one_line_error(status, capsys.readouterr().err)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train", "{tmp}/nosuch.toml"], "not found"),
        (["train", str(DIGITS), "--set", "train.epochs"], "section.key=value"),
        (["train", str(DIGITS), "--set", "train.epochs=x"], "train.epochs"),
        (["train", str(DIGITS), "--set", "train.epoch=1"], "batch_size"),
        (["train", str(DIGITS), "--set", "train.lr=-1"], "train.lr"),
        (["train", str(DIGITS), "--set", "model.layers=[784, 100, 10]"], "64"),
        (["eval", "{tmp}"], "not a run directory"),
        (["plot", "{tmp}"], "not a run directory"),
        (["data", "check", "mnist", "--root", "{tmp}"], "spikeforge data fetch mnist"),
        (["data", "fetch", "nosuchset", "--root", "{tmp}"], "nosuchset"),
    ],
)
def test_bad_input_is_one_line_on_stderr(argv, expected, tmp_path, capsys):
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    status = cli.main([*argv, *(["--out", str(tmp_path / "run")] if argv[0] == "train" else [])])
    assert expected in _assert_one_line_error(status, capsys.readouterr().err)
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()


def test_a_failed_data_check_leaves_no_run_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SPIKEFORGE_DATA", str(tmp_path / "cache"))  # holds no N-MNIST
    config = REPO / "configs" / "sparse-nmnist.toml"
    out = tmp_path / "run"
    status = cli.main(["train", str(config), *FAST, "--out", str(out)])
    assert "spikeforge data fetch nmnist" in _assert_one_line_error(status, capsys.readouterr().err)
    assert not out.exists()
    kept = tmp_path / "kept"  # a directory the user made beforehand stays, and what it holds
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    status = cli.main(["train", str(config), *FAST, "--out", str(kept)])
    assert status == 2
    assert (kept / "notes.txt").read_text() == "mine"


def test_eval_of_a_run_without_checkpoint_is_an_error(trained, tmp_path, capsys):
    out, _ = trained
    (tmp_path / "config.toml").write_text((out / "config.toml").read_text())
    status = cli.main(["eval", str(tmp_path)])
    assert "checkpoint" in _assert_one_line_error(status, capsys.readouterr().err)


def test_eval_with_zero_steps_is_an_error(trained, capsys):
    out, _ = trained
    status = cli.main(["eval", str(out), "--steps", "0"])
    assert "--steps" in _assert_one_line_error(status, capsys.readouterr().err)


def test_interrupted_training_exits_130_with_the_resume_hint(tmp_path, capsys, monkeypatch):
    def interrupt(epoch, batch, loss):
        if batch == 3:
            raise KeyboardInterrupt

    real_train = bptt.train_bptt
    monkeypatch.setattr(
        "spikeforge.run.bptt.train_bptt", lambda *a, **k: real_train(*a, on_batch=interrupt, **k)
    )
    out = tmp_path / "run"
    status = cli.main(["train", str(DIGITS), *FAST, "--set", "data.limit=200", "--out", str(out)])
    assert status == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--resume" in err
    assert load_checkpoint(out)[1]["progress"]["batch"] == 4


def test_console_script(trained, tmp_path):
    script = Path(sys.executable).with_name("spikeforge")
    assert script.is_file(), "the spikeforge console script is not installed in the venv"
    out, _ = trained
    summary = json.loads((out / "summary.json").read_text())
    result = subprocess.run(
        [str(script), "eval", str(out)], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["test_accuracy"] == summary["test_accuracy"]

    result = subprocess.run(
        [str(script), "train", "nosuch.toml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert "nosuch.toml" in _assert_one_line_error(result.returncode, result.stderr)
    assert result.stdout == ""

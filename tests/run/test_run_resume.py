"""Resume replays exactly: an interrupted and resumed run ends where an uninterrupted one does."""

import json
from pathlib import Path

import pytest
import torch

from spikeforge.run import bptt
from spikeforge.run.bptt import TrainingInterrupted, train_bptt
from spikeforge.run.checkpoint import load_checkpoint
from spikeforge.run.config import ConfigError, load_config

DIGITS = Path(__file__).resolve().parents[2] / "configs" / "bondarev-digits.toml"
LIMIT, BATCH = 300, 32
BATCHES = -(-LIMIT // BATCH)  # 10 per epoch, the last one short


def _config(epochs: int = 3, extra: tuple[str, ...] = ()):
    return load_config(
        DIGITS,
        [
            f"data.limit={LIMIT}",
            f"train.batch_size={BATCH}",
            f"train.epochs={epochs}",
            "train.progress=false",
            # One thread: the machine is shared, and spinning threads make this 30x slower.
            "train.threads=1",
            *extra,
        ],
    )


@pytest.fixture(autouse=True, scope="module")
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    bptt._set_threads(threads)  # train.threads sets them process-wide


def _train(
    out: Path, epochs: int = 3, resume: bool = False, on_batch=None, extra: tuple[str, ...] = ()
) -> dict:
    config = _config(epochs, extra)
    return train_bptt(config, out, resume=resume, on_batch=on_batch, log=lambda _: None)


def _interrupt_at(epoch: int, batch: int):
    """An ``on_batch`` callback that acts like Ctrl-C right after the given optimiser step."""

    def on_batch(current_epoch: int, current_batch: int, loss: float) -> None:
        if (current_epoch, current_batch) == (epoch, batch):
            raise KeyboardInterrupt

    return on_batch


def _metrics(out: Path) -> list[dict]:
    return [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """Three epochs without interruption: the reference."""
    out = tmp_path_factory.mktemp("straight")
    _train(out)
    return out


def _assert_same_run(run: Path, reference: Path) -> None:
    tensors, meta = load_checkpoint(run)
    expected, expected_meta = load_checkpoint(reference)
    assert meta["complete"] and expected_meta["complete"]
    assert meta["progress"]["epoch"] == expected_meta["progress"]["epoch"] == 3
    model_keys = sorted(k for k in expected if k.startswith("model."))
    assert model_keys, "the checkpoint holds no model tensors"
    # Model, Adam state and both random streams: everything that decides what comes next.
    assert sorted(tensors) == sorted(expected)
    for name in expected:
        assert torch.equal(tensors[name], expected[name]), name
    assert meta["optimizer_steps"] == expected_meta["optimizer_steps"]

    metrics, expected_metrics = _metrics(run), _metrics(reference)
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    for key in ("epoch", "test_accuracy", "train_loss", "train_accuracy"):
        assert [m[key] for m in metrics] == [m[key] for m in expected_metrics], key

    summary = json.loads((run / "summary.json").read_text())
    expected_summary = json.loads((reference / "summary.json").read_text())
    assert summary["train_samples"] == expected_summary["train_samples"] == 3 * LIMIT
    assert summary["test_accuracy"] == expected_summary["test_accuracy"]
    assert summary["epochs"] == 3
    assert summary["train_seconds"] > 0


def test_reference_run_learns_and_is_reproducible(straight, tmp_path):
    metrics = _metrics(straight)
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    # Same config, same seed: bit-identical. Otherwise resume equality would prove nothing.
    _train(tmp_path)
    _assert_same_run(tmp_path, straight)


def test_resume_after_interrupt_mid_epoch_equals_uninterrupted(straight, tmp_path):
    with pytest.raises(TrainingInterrupted) as info:
        _train(tmp_path, on_batch=_interrupt_at(epoch=2, batch=4))
    assert "--resume" in str(info.value) and "\n" not in str(info.value)
    _, meta = load_checkpoint(tmp_path)
    assert meta["complete"] is False
    assert meta["progress"]["epoch"] == 1 and meta["progress"]["batch"] == 5
    assert [m["epoch"] for m in _metrics(tmp_path)] == [1]

    seen = []
    _train(tmp_path, resume=True, on_batch=lambda e, b, loss: seen.append((e, b)))
    # Resume starts at the batch after the interrupted one, and repeats none.
    assert seen[0] == (2, 5)
    assert len(seen) == (BATCHES - 5) + BATCHES
    _assert_same_run(tmp_path, straight)


def test_resume_after_interrupt_at_the_end_of_an_epoch(straight, tmp_path):
    # Interrupted after the last optimiser step of epoch 1, before its evaluation.
    with pytest.raises(TrainingInterrupted):
        _train(tmp_path, on_batch=_interrupt_at(epoch=1, batch=BATCHES - 1))
    assert _metrics(tmp_path) == []
    _train(tmp_path, resume=True)
    _assert_same_run(tmp_path, straight)


def test_two_interruptions_in_one_epoch(straight, tmp_path):
    with pytest.raises(TrainingInterrupted):
        _train(tmp_path, on_batch=_interrupt_at(epoch=3, batch=0))
    with pytest.raises(TrainingInterrupted):
        _train(tmp_path, resume=True, on_batch=_interrupt_at(epoch=3, batch=6))
    _train(tmp_path, resume=True)
    _assert_same_run(tmp_path, straight)


def test_resume_after_interrupt_inside_a_batch(straight, tmp_path, monkeypatch):
    """Ctrl-C usually lands inside forward/backward, after the batch drew its input spikes."""
    real_encode = bptt.encode
    calls = []

    def interrupted_encode(config, intensities, steps, generator, device=None):
        spikes = real_encode(config, intensities, steps, generator, device)  # draws from the stream
        if steps == config.encode.steps:  # a training batch, not evaluation
            calls.append(1)
            if len(calls) == BATCHES + 3:  # epoch 2, third batch (index 2)
                raise KeyboardInterrupt
        return spikes

    monkeypatch.setattr(bptt, "encode", interrupted_encode)
    with pytest.raises(TrainingInterrupted):
        _train(tmp_path)
    monkeypatch.undo()
    _, meta = load_checkpoint(tmp_path)
    assert (meta["progress"]["epoch"], meta["progress"]["batch"]) == (1, 2)
    _train(tmp_path, resume=True)
    _assert_same_run(tmp_path, straight)


AUGMENTED = ("train.augment_shift=1", "train.augment_flip=true")


def test_resume_with_augmentation_equals_uninterrupted(straight, tmp_path):
    """The shifts and flips come from the encoder's stream, so a resumed run draws the same."""
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    _train(reference, extra=AUGMENTED)
    with pytest.raises(TrainingInterrupted):
        _train(resumed, on_batch=_interrupt_at(epoch=2, batch=3), extra=AUGMENTED)
    _train(resumed, resume=True, extra=AUGMENTED)
    _assert_same_run(resumed, reference)
    # and augmentation changed the training: the weights differ from the plain run's
    augmented, plain = load_checkpoint(reference)[0], load_checkpoint(straight)[0]
    assert any(not torch.equal(augmented[k], plain[k]) for k in plain if k.startswith("model."))


class _Killed(BaseException):
    """Stands for the process dying (SIGKILL, power loss) at a chosen point."""


def test_resume_after_a_kill_between_metrics_and_checkpoint(straight, tmp_path, monkeypatch):
    """Killed after epoch 2's metrics line but before its checkpoint: epoch 2 is redone once."""
    real_save = bptt._save
    saves = []

    def dying_save(*args, **kwargs):
        saves.append(1)
        if len(saves) == 2:
            raise _Killed
        real_save(*args, **kwargs)

    monkeypatch.setattr(bptt, "_save", dying_save)
    with pytest.raises(_Killed):
        _train(tmp_path)
    monkeypatch.undo()
    assert [m["epoch"] for m in _metrics(tmp_path)] == [1, 2]
    assert load_checkpoint(tmp_path)[1]["progress"]["epoch"] == 1

    _train(tmp_path, resume=True)
    _assert_same_run(tmp_path, straight)


def test_resume_a_finished_run_with_more_epochs(straight, tmp_path):
    summary = _train(tmp_path, epochs=2)
    assert summary["epochs"] == 2 and summary["train_samples"] == 2 * LIMIT
    summary = _train(tmp_path, epochs=3, resume=True)
    assert summary["epochs"] == 3
    assert load_config(tmp_path / "config.toml").train.epochs == 3
    _assert_same_run(tmp_path, straight)


def test_resume_a_finished_run_changes_nothing(straight, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(straight, run)
    before = load_checkpoint(run)[0]
    summary = _train(run, resume=True, on_batch=lambda *a: pytest.fail("trained again"))
    assert summary["epochs"] == 3
    after = load_checkpoint(run)[0]
    assert all(torch.equal(after[k], before[k]) for k in before)
    _assert_same_run(run, straight)


def test_training_into_an_existing_run_without_resume_is_refused(straight):
    before = (straight / "metrics.jsonl").read_text()
    with pytest.raises(ConfigError) as info:
        _train(straight)
    message = str(info.value)
    assert "\n" not in message and "--resume" in message and str(straight) in message
    assert (straight / "metrics.jsonl").read_text() == before


def test_resume_with_nothing_to_resume_is_refused(tmp_path):
    with pytest.raises(ConfigError) as info:
        _train(tmp_path / "empty", resume=True)
    message = str(info.value)
    assert "\n" not in message and "nothing to resume" in message
    assert not (tmp_path / "empty" / "metrics.jsonl").exists()

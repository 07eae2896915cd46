"""Checkpoints: exact round trip, atomic replacement, and clear errors for broken files."""

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from spikeforge.run import checkpoint
from spikeforge.run.checkpoint import (
    META_NAME,
    WEIGHTS_NAME,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)


def _tensors(scale: float) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(int(scale))
    return {
        "model.layers.0.weight": torch.randn(5, 3, generator=generator) * scale,
        # A transposed view: not contiguous, must still be saved as its values.
        "model.layers.1.weight": (torch.randn(4, 5, generator=generator) * scale).t(),
        "optim.0.exp_avg_sq": torch.rand(7, dtype=torch.float64, generator=generator),
        "rng.shuffle": torch.Generator().manual_seed(int(scale)).get_state(),
        "order": torch.randperm(9, generator=generator),
        "flag": torch.tensor([True, False]),
        "half": torch.randn(3, generator=generator).to(torch.bfloat16),
    }


def _meta(epoch: int) -> dict:
    return {
        "progress": {"epoch": epoch, "batch": 3, "train_seconds": 1.0 / 3.0},
        "optimizer_steps": [[0, 12.0], [1, 12.0]],
        "complete": False,
        "note": "ünïcode",
    }


def _assert_same(loaded: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert loaded.keys() == expected.keys()
    for name, tensor in expected.items():
        assert loaded[name].dtype == tensor.dtype, name
        assert loaded[name].shape == tensor.shape, name
        assert torch.equal(loaded[name], tensor), name


def _leftovers(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name not in (WEIGHTS_NAME, META_NAME))


def test_round_trip_is_exact(tmp_path):
    tensors, meta = _tensors(1.0), _meta(1)
    save_checkpoint(tmp_path / "run", tensors, meta)
    loaded, loaded_meta = load_checkpoint(tmp_path / "run")
    _assert_same(loaded, tensors)
    assert loaded_meta == meta
    # checkpoint.json is a readable copy of the same metadata.
    assert json.loads((tmp_path / "run" / META_NAME).read_text()) == meta
    assert _leftovers(tmp_path / "run") == []


def test_saving_again_replaces_the_checkpoint(tmp_path):
    save_checkpoint(tmp_path, _tensors(1.0), _meta(1))
    save_checkpoint(tmp_path, _tensors(2.0), _meta(2))
    loaded, meta = load_checkpoint(tmp_path)
    _assert_same(loaded, _tensors(2.0))
    assert meta == _meta(2)
    assert _leftovers(tmp_path) == []


def _assert_first_checkpoint_intact(directory) -> None:
    loaded, meta = load_checkpoint(directory)
    _assert_same(loaded, _tensors(1.0))
    assert meta == _meta(1)
    assert json.loads((directory / META_NAME).read_text()) == _meta(1)
    assert _leftovers(directory) == []


def test_failure_while_writing_tensors_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, _tensors(1.0), _meta(1))

    def torn_save_file(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:  # half a file, then the disk fills up
            handle.write(b"\x00" * 100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", torn_save_file)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(tmp_path, _tensors(2.0), _meta(2))
    _assert_first_checkpoint_intact(tmp_path)


def test_interrupt_while_writing_tensors_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, _tensors(1.0), _meta(1))

    def interrupted_save_file(tensors, filename, metadata=None):
        save_file(tensors, filename, metadata=metadata)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save_file", interrupted_save_file)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, _tensors(2.0), _meta(2))
    _assert_first_checkpoint_intact(tmp_path)


def test_failing_rename_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, _tensors(1.0), _meta(1))

    def failing_replace(src, dst):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(checkpoint.os, "replace", failing_replace)
    with pytest.raises(OSError, match="Input/output"):
        save_checkpoint(tmp_path, _tensors(2.0), _meta(2))
    monkeypatch.undo()
    _assert_first_checkpoint_intact(tmp_path)


def test_failure_after_the_tensors_leaves_a_consistent_checkpoint(tmp_path, monkeypatch):
    """The safetensors file is the source of truth: tensors and metadata never disagree."""
    save_checkpoint(tmp_path, _tensors(1.0), _meta(1))
    real_replace = os.replace
    calls = []

    def replace_once(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the rename of checkpoint.json
            raise OSError(5, "Input/output error")
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", replace_once)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, _tensors(2.0), _meta(2))
    monkeypatch.undo()
    loaded, meta = load_checkpoint(tmp_path)
    _assert_same(loaded, _tensors(2.0))
    assert meta == _meta(2)
    assert _leftovers(tmp_path) == []


def test_missing_checkpoint_is_a_one_line_error(tmp_path):
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert WEIGHTS_NAME in message and "train" in message


def _valid_bytes(tmp_path) -> bytes:
    save_checkpoint(tmp_path / "good", _tensors(1.0), _meta(1))
    return (tmp_path / "good" / WEIGHTS_NAME).read_bytes()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "header-only"])
def test_corrupt_checkpoint_is_a_one_line_error(tmp_path, damage):
    good = _valid_bytes(tmp_path)
    data = {
        "truncated": good[: len(good) // 2],
        "garbage": b"not a safetensors file " * 20,
        "empty": b"",
        "header-only": good[:20],
    }[damage]
    run = tmp_path / "run"
    run.mkdir()
    (run / WEIGHTS_NAME).write_bytes(data)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(run)
    message = str(info.value)
    assert "\n" not in message
    assert str(run / WEIGHTS_NAME) in message and "unreadable" in message


@pytest.mark.parametrize("metadata", [None, {"other": "1"}, {"spikeforge": "{not json"}])
def test_safetensors_without_spikeforge_metadata_is_a_checkpoint_error(tmp_path, metadata):
    save_file({"w": torch.zeros(2)}, str(tmp_path / WEIGHTS_NAME), metadata=metadata)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path)
    assert "\n" not in str(info.value)

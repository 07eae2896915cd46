"""N-MNIST and SHD readers on small files written here in the datasets' own formats."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spikeforge.data import DataError, fetch
from spikeforge.data.events import bin_events, load_events, read_nmnist_file, read_shd


def _nmnist_bytes(events: list[tuple[int, int, int, int]]) -> bytes:
    """40-bit events: x, y, then polarity (1 bit) and a 23-bit microsecond timestamp."""
    out = bytearray()
    for x, y, polarity, ts in events:
        out += bytes([x, y, (polarity << 7) | (ts >> 16), (ts >> 8) & 0xFF, ts & 0xFF])
    return bytes(out)


def _write_nmnist(root, split, label, name, events):
    folder = root / "nmnist" / split / str(label)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(_nmnist_bytes(events))


SAMPLE = [(0, 0, 1, 0), (33, 33, 0, 1500), (5, 2, 1, 70000), (5, 2, 0, 70400), (1, 0, 0, 8388607)]


def test_nmnist_file_decodes_every_field(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(_nmnist_bytes(SAMPLE))
    x, y, polarity, ts = read_nmnist_file(path)
    assert x.tolist() == [0, 33, 5, 5, 1]
    assert y.tolist() == [0, 33, 2, 2, 0]
    assert polarity.tolist() == [1, 0, 1, 0, 0]
    assert ts.tolist() == [0, 1500, 70000, 70400, 8388607]


def test_nmnist_truncated_file_is_a_one_line_error(tmp_path):
    path = tmp_path / "bad.bin"
    path.write_bytes(_nmnist_bytes(SAMPLE)[:-2])
    with pytest.raises(DataError, match="not a multiple of 5"):
        read_nmnist_file(path)


def test_nmnist_split_binned_to_time_major_spikes(tmp_path):
    _write_nmnist(tmp_path, "Test", 7, "00001.bin", SAMPLE)
    _write_nmnist(tmp_path, "Test", 2, "00002.bin", [(3, 4, 1, 999), (3, 4, 0, 1001)])
    data = load_events("nmnist", "test", root=tmp_path, bin_ms=1.0)
    assert len(data) == 2 and data.units_count == 34 * 34
    assert data.labels.tolist() == [7, 2]
    assert np.diff(data.offsets).tolist() == [5, 2]  # event count of each sample
    spikes = data.to_dense(steps=100)
    assert spikes.shape == (100, 2, 1156) and spikes.dtype == torch.uint8
    # sample 0: (0,0) at 0 ms, (33,33) at 1 ms, (5,2) twice at 70 ms (one spike); 8388 ms dropped
    assert spikes[:, 0].sum() == 3
    assert spikes[0, 0, 0] == 1 and spikes[1, 0, 33 * 34 + 33] == 1 and spikes[70, 0, 2 * 34 + 5]
    # sample 1: (3,4) at 0.999 ms -> bin 0 and 1.001 ms -> bin 1
    assert spikes[0, 1, 4 * 34 + 3] == 1 and spikes[1, 1, 4 * 34 + 3] == 1
    assert spikes[:, 1].sum() == 2
    wider = load_events("nmnist", "test", root=tmp_path, bin_ms=2.0).to_dense(steps=50)
    assert wider[0, 1, 4 * 34 + 3] == 1 and wider[:, 1].sum() == 1
    assert data[[1]].labels.tolist() == [2] and data[[1]].to_dense(5).sum() == 2


def _write_shd(path, samples, labels):
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as handle:
        times = handle.create_dataset(
            "spikes/times", (len(samples),), dtype=h5py.vlen_dtype(np.float32)
        )
        units = handle.create_dataset(
            "spikes/units", (len(samples),), dtype=h5py.vlen_dtype(np.uint16)
        )
        for i, (t, u) in enumerate(samples):
            times[i] = np.asarray(t, dtype=np.float32)
            units[i] = np.asarray(u, dtype=np.uint16)
        handle.create_dataset("labels", data=np.asarray(labels, dtype=np.uint16))


def test_shd_file_read_and_binned(tmp_path):
    samples = [([0.0, 0.0031, 0.0039, 0.9011], [699, 10, 10, 0]), ([0.5], [3])]
    _write_shd(tmp_path / "shd_test.h5", samples, [19, 4])
    data = read_shd(tmp_path / "shd_test.h5", bin_ms=2.0)
    assert data.labels.tolist() == [19, 4] and data.units_count == 700 and data.classes == 20
    assert np.diff(data.offsets).tolist() == [4, 1]
    spikes = data.to_dense(steps=500)
    assert spikes.shape == (500, 2, 700)
    assert spikes[0, 0, 699] == 1 and spikes[1, 0, 10] == 1 and spikes[450, 0, 0] == 1
    assert spikes[:, 0].sum() == 3  # 3.1 ms and 3.9 ms share bin 1
    assert spikes[250, 1, 3] == 1 and spikes[:, 1].sum() == 1
    assert read_shd(tmp_path / "shd_test.h5", bin_ms=2.0, limit=1).labels.tolist() == [19]


def test_bin_events_floor():
    assert bin_events(np.array([0.0, 0.99, 1.0, 2.5]), 1.0).tolist() == [0, 0, 1, 2]
    assert bin_events(np.array([999, 1000, 4100]), 2.0, time_unit_ms=1e-3).tolist() == [0, 0, 2]
    assert bin_events(np.array([0.5, 0.0019], np.float32), 2.0, 1e3).tolist() == [250, 0]


def test_fetch_says_where_to_get_and_copies_from_dir(tmp_path):
    with pytest.raises(DataError, match="cannot be downloaded automatically.*--from DIR"):
        fetch("nmnist", root=tmp_path / "cache")
    with pytest.raises(DataError, match="zenkelab"):
        fetch("shd", root=tmp_path / "cache")
    source = tmp_path / "download"
    _write_nmnist(source.parent / "x", "Train", 1, "1.bin", SAMPLE)
    (source).mkdir()
    for split in ("Train", "Test"):
        folder = source / split / "1"
        folder.mkdir(parents=True)
        (folder / "00001.bin").write_bytes(_nmnist_bytes(SAMPLE))
    report = fetch("nmnist", root=tmp_path / "cache", source_dir=source, log=lambda _: None)
    assert report.source == f"directory {source}"
    data = load_events("nmnist", "train", root=tmp_path / "cache")
    assert data.labels.tolist() == [1] and int(data.offsets[-1]) == len(SAMPLE)
    again = fetch("nmnist", root=tmp_path / "cache", log=lambda _: None)
    assert again.source == "cache"


def test_fetch_refuses_a_bad_copy_and_keeps_the_cached_one(tmp_path):
    cache = tmp_path / "cache"
    good = tmp_path / "good"
    good.mkdir()
    for split in ("train", "test"):
        _write_shd(good / f"shd_{split}.h5", [([0.5], [3])], [4])
    fetch("shd", root=cache, source_dir=good, log=lambda _: None)
    before = (cache / "shd" / "shd_train.h5").read_bytes()

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "shd_train.h5").write_bytes(b"not hdf5")
    _write_shd(bad / "shd_test.h5", [([0.5], [3])], [4])
    with pytest.raises(DataError, match=r"shd_train.h5 is not an SHD HDF5 file.*zenkelab"):
        fetch("shd", root=cache, source_dir=bad, log=lambda _: None)
    h5py = pytest.importorskip("h5py")
    with h5py.File(bad / "shd_train.h5", "w") as handle:  # two labels, one sample
        handle["spikes/times"] = np.zeros((1, 1), np.float32)
        handle["spikes/units"] = np.zeros((1, 1), np.uint16)
        handle["labels"] = np.zeros(2, np.uint16)
    with pytest.raises(DataError, match="shd_train.h5 has unequal numbers of samples"):
        fetch("shd", root=cache, source_dir=bad, log=lambda _: None)
    assert (cache / "shd" / "shd_train.h5").read_bytes() == before
    assert load_events("shd", "train", root=cache).labels.tolist() == [4]

    nmnist = tmp_path / "nmnist-download"
    for split in ("Train", "Test"):
        (nmnist / split / "3").mkdir(parents=True)
        (nmnist / split / "3" / "00001.bin").write_bytes(_nmnist_bytes(SAMPLE))
    (nmnist / "Test" / "3" / "00002.bin").write_bytes(_nmnist_bytes(SAMPLE)[:-2])
    with pytest.raises(DataError, match=r"00002.bin has 23 bytes, not whole 40-bit events"):
        fetch("nmnist", root=cache, source_dir=nmnist, log=lambda _: None)
    assert not (cache / "nmnist").exists()


def test_missing_cache_names_the_fetch_command(tmp_path):
    with pytest.raises(DataError, match="spikeforge data fetch shd"):
        load_events("shd", "train", root=tmp_path)


def test_training_runs_on_written_nmnist_files(tmp_path):
    """The trainer reads an event dataset end to end (config sparse-nmnist, tiny sizes)."""
    from spikeforge.run import bptt
    from spikeforge.run.config import ConfigError

    gen = np.random.default_rng(0)
    for split, count in (("Train", 24), ("Test", 10)):
        for k in range(count):
            label = k % 10
            n = 40
            events = [
                (label * 3 + int(gen.integers(0, 4)), int(gen.integers(0, 34)), 1, int(t))
                for t in np.sort(gen.integers(0, 20_000, n))
            ]
            _write_nmnist(tmp_path / "data", split, label, f"{k:05d}.bin", events)
    config, summary = _train_tiny("sparse-nmnist.toml", tmp_path)
    assert summary["train_samples"] == 24 and 0 <= summary["test_accuracy"] <= 1
    # image augmentation has no meaning for event data: refused with the fix
    config.train.augment_flip = True
    with pytest.raises(ConfigError, match="nmnist is event data: set them to 0 and false"):
        bptt._load_data(config)


def _quoted(path) -> str:
    return '"' + str(path) + '"'


def test_training_runs_on_written_shd_files(tmp_path):
    """The trainer reads SHD end to end (config sparse-shd: 700 inputs, 20 classes; tiny sizes)."""

    gen = np.random.default_rng(1)
    folder = tmp_path / "data" / "shd"
    folder.mkdir(parents=True)
    for split, count in (("train", 16), ("test", 8)):
        samples = []
        for k in range(count):
            units = (k % 20) * 35 + gen.integers(0, 35, 30)  # each class its own units
            samples.append((np.sort(gen.random(30) * 0.04), units))
        _write_shd(folder / f"shd_{split}.h5", samples, [k % 20 for k in range(count)])
    _, summary = _train_tiny("sparse-shd.toml", tmp_path)
    assert summary["train_samples"] == 16
    correct = summary["test_accuracy"] * 8  # all 8 test samples were scored
    assert 0 <= correct <= 8 and abs(correct - round(correct)) < 1e-9


def _train_tiny(config_name: str, tmp_path) -> tuple:
    """``train_bptt`` of ``configs/<config_name>`` on the files under ``tmp_path / "data"``: one
    epoch of 20 steps, batches of 8, one thread; returns (config, summary)."""
    from pathlib import Path

    from spikeforge.run import bptt
    from spikeforge.run.config import load_config

    config = load_config(
        Path(__file__).resolve().parents[2] / "configs" / config_name,
        [
            f"data.root={_quoted(tmp_path / 'data')}",
            "encode.steps=20",
            "encode.test_steps=20",
            "train.epochs=1",
            "train.batch_size=8",
            "train.progress=false",
            "train.threads=1",
        ],
    )
    threads = torch.get_num_threads()
    try:
        return config, bptt.train_bptt(config, tmp_path / "run", log=lambda _: None)
    finally:
        bptt._set_threads(threads)  # train.threads sets them process-wide

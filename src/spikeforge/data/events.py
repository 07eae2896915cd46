"""Event-based datasets: Neuromorphic-MNIST and the Spiking Heidelberg Digits.

Both hold, per sample, a list of events ``(time, unit)``; :class:`EventSet` keeps them binned into
time steps of ``bin_ms`` and turns a batch into 0/1 spikes ``[T, B, N]`` (several events of one
unit in one bin make one spike; events after the last bin are dropped).

* **N-MNIST** (Orchard et al. 2015): one binary file per sample, ``Train/<digit>/<id>.bin`` and
  ``Test/<digit>/<id>.bin``. Each event is 40 bits, big-endian: x (8 bits), y (8 bits), polarity
  (1 bit), timestamp in microseconds (23 bits). The sensor is 34 x 34; both polarities are merged,
  unit ``y * 34 + x``: 1156 inputs, as in Perez-Nieves & Goodman (2021).
* **SHD** (Cramer et al. 2020): ``shd_train.h5`` / ``shd_test.h5`` with ``spikes/times`` (seconds,
  one variable-length array per sample), ``spikes/units`` (0..699) and ``labels`` (0..19).

Neither can be downloaded here; ``spikeforge data fetch nmnist|shd`` says where to get them and
``--from DIR`` copies a local copy into the cache ``<root>/<name>/``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import DataError
from .sources import FetchReport, default_root

__all__ = [
    "EVENT_DATASETS",
    "EventSet",
    "bin_events",
    "fetch_events",
    "check_events",
    "load_events",
    "read_nmnist_file",
    "read_shd",
]

NMNIST_SIDE = 34


@dataclass(frozen=True)
class _EventSource:
    title: str
    url: str
    units: int
    classes: int
    layout: str  # what a --from directory must hold


EVENT_DATASETS: dict[str, _EventSource] = {
    "nmnist": _EventSource(
        title="N-MNIST",
        url="https://www.garrickorchard.com/datasets/n-mnist (Train.zip, Test.zip)",
        units=NMNIST_SIDE * NMNIST_SIDE,
        classes=10,
        layout="Train/<digit>/*.bin and Test/<digit>/*.bin",
    ),
    "shd": _EventSource(
        title="SHD",
        url="https://zenkelab.org/datasets/ (shd_train.h5.gz, shd_test.h5.gz; gunzip them)",
        units=700,
        classes=20,
        layout="shd_train.h5 and shd_test.h5",
    ),
}


@dataclass
class EventSet:
    """Binned events of many samples, stored flat.

    Attributes:
        bins: time bin of every event, int32, sample after sample.
        units: input unit of every event, int32.
        offsets: ``[n + 1]`` int64; sample ``i`` owns events ``offsets[i]:offsets[i+1]``.
        labels: ``[n]`` int64.
        units_count: N, the number of input units.
        classes: number of classes.
    """

    bins: np.ndarray
    units: np.ndarray
    offsets: np.ndarray
    labels: torch.Tensor
    units_count: int
    classes: int

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: slice | torch.Tensor | np.ndarray | list[int]) -> EventSet:
        """The samples at ``index`` (a slice or integer indices) as a new EventSet."""
        if isinstance(index, slice):
            index = np.arange(len(self))[index]
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        starts, ends = self.offsets[index], self.offsets[index + 1]
        lengths = ends - starts
        offsets = np.zeros(len(index) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        take = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)] or [[]])
        take = take.astype(np.int64)
        return EventSet(
            self.bins[take],
            self.units[take],
            offsets,
            self.labels[torch.from_numpy(index)],
            self.units_count,
            self.classes,
        )

    def to_dense(self, steps: int) -> torch.Tensor:
        """0/1 spikes ``[steps, B, N]`` uint8 of all samples; events in bins >= steps dropped."""
        batch = len(self)
        spikes = torch.zeros(steps, batch, self.units_count, dtype=torch.uint8)
        sample = np.repeat(np.arange(batch), np.diff(self.offsets))
        keep = self.bins < steps
        flat = (
            self.bins[keep].astype(np.int64) * batch + sample[keep]
        ) * self.units_count + self.units[keep]
        spikes.view(-1)[torch.from_numpy(flat)] = 1
        return spikes


def bin_events(times: np.ndarray, bin_ms: float, time_unit_ms: float = 1.0) -> np.ndarray:
    """Time bin ``floor(time * time_unit_ms / bin_ms)`` of each event.

    ``time_unit_ms`` is the length of the times' unit in ms (1e-3 for microseconds, 1e3 for
    seconds). A relative 1e-9 slack puts a time that is a whole number of bins in decimal (0.5 s at
    2 ms) into that bin despite its binary rounding.
    """
    scaled = np.asarray(times, dtype=np.float64) * (time_unit_ms / bin_ms)
    return np.floor(scaled * (1.0 + 1e-9) + 1e-9).astype(np.int32)


def read_nmnist_file(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One N-MNIST sample: ``(x, y, polarity, timestamp_us)`` arrays, one entry per event.

    Raises:
        DataError: if the size is not a multiple of 5 bytes (40-bit events).
    """
    path = Path(path)
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % 5:
        raise DataError(
            f"N-MNIST file {path} has {raw.size} bytes, not a multiple of 5 (40-bit events); "
            "it is truncated or not an N-MNIST file: download it again"
        )
    events = raw.reshape(-1, 5).astype(np.uint32)
    x, y = events[:, 0], events[:, 1]
    polarity = events[:, 2] >> 7
    timestamp = ((events[:, 2] & 0x7F) << 16) | (events[:, 3] << 8) | events[:, 4]
    return x, y, polarity, timestamp


def _nmnist(directory: Path, split: str, bin_ms: float, limit: int) -> EventSet:
    folder = directory / ("Train" if split == "train" else "Test")
    if not folder.is_dir():
        raise DataError(
            f"N-MNIST folder {folder} is missing; run `spikeforge data fetch nmnist --from DIR` "
            "with DIR holding Train/ and Test/"
        )
    files = sorted(
        (int(digit.name), path)
        for digit in folder.iterdir()
        if digit.is_dir() and digit.name.isdigit()
        for path in digit.glob("*.bin")
    )
    # Interleave classes deterministically so that `limit` keeps every class.
    files.sort(key=lambda item: (item[1].stem, item[0]))
    if limit > 0:
        files = files[:limit]
    if not files:
        raise DataError(f"N-MNIST folder {folder} holds no <digit>/*.bin files; fetch it again")
    bins, units, lengths = [], [], []
    for _, path in files:
        x, y, _, timestamp = read_nmnist_file(path)
        if x.size and (x.max() >= NMNIST_SIDE or y.max() >= NMNIST_SIDE):
            raise DataError(
                f"N-MNIST file {path} has addresses beyond the 34 x 34 sensor; download it again"
            )
        bins.append(bin_events(timestamp, bin_ms, time_unit_ms=1e-3))
        units.append((y * NMNIST_SIDE + x).astype(np.int32))
        lengths.append(x.size)
    offsets = np.zeros(len(files) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    labels = torch.tensor([label for label, _ in files], dtype=torch.int64)
    return EventSet(
        np.concatenate(bins), np.concatenate(units), offsets, labels, NMNIST_SIDE**2, 10
    )


def read_shd(path: str | Path, bin_ms: float, limit: int = 0) -> EventSet:
    """An SHD HDF5 file as an EventSet (times in seconds binned by ``bin_ms``)."""
    try:
        import h5py
    except ImportError:
        raise DataError(
            "reading SHD needs h5py: pip install 'spikeforge[events]' (or pip install h5py)"
        ) from None

    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"SHD file {path} is missing; run `spikeforge data fetch shd --from DIR` with DIR "
            "holding shd_train.h5 and shd_test.h5"
        )
    try:
        with h5py.File(path, "r") as handle:
            times = handle["spikes/times"]
            units = handle["spikes/units"]
            labels = np.asarray(handle["labels"], dtype=np.int64)
            n = len(labels) if limit <= 0 else min(limit, len(labels))
            sample_bins = [bin_events(times[i], bin_ms, time_unit_ms=1e3) for i in range(n)]
            sample_units = [np.asarray(units[i], dtype=np.int32) for i in range(n)]
    except (OSError, KeyError) as error:
        raise DataError(
            f"SHD file {path} is not readable as SHD HDF5 ({error}); download it again"
        ) from None
    for i, (b, u) in enumerate(zip(sample_bins, sample_units, strict=True)):
        if b.shape != u.shape:
            raise DataError(
                f"SHD file {path}: sample {i} has unequal times and units; fix the file"
            )
        if u.size and (u.min() < 0 or u.max() >= 700):
            raise DataError(f"SHD file {path}: sample {i} has units outside 0..699; fix the file")
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum([u.size for u in sample_units], out=offsets[1:])
    return EventSet(
        np.concatenate(sample_bins or [np.zeros(0, np.int32)]),
        np.concatenate(sample_units or [np.zeros(0, np.int32)]),
        offsets,
        torch.from_numpy(labels[:n]),
        700,
        20,
    )


def load_events(
    name: str,
    split: str,
    root: str | Path | None = None,
    bin_ms: float = 1.0,
    limit: int = 0,
) -> EventSet:
    """Load ``nmnist`` or ``shd`` (``split`` train or test) from the cache, binned by ``bin_ms``."""
    if name not in EVENT_DATASETS:
        raise DataError(f"unknown event dataset {name!r}; choose one of: nmnist, shd")
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test'; got {split!r}")
    if not bin_ms > 0:
        raise DataError(f"bin width must be positive; got {bin_ms} ms")
    directory = default_root(root) / name
    if not directory.is_dir():
        raise DataError(
            f"{EVENT_DATASETS[name].title} is not in the cache {directory}; "
            f"run `spikeforge data fetch {name}` to see where to get it"
        )
    if name == "nmnist":
        return _nmnist(directory, split, bin_ms, limit)
    return read_shd(directory / f"shd_{split}.h5", bin_ms, limit)


def _nmnist_problem(folder: Path) -> str | None:
    """The first problem of an N-MNIST copy found without decoding it: a split without
    ``<digit>/*.bin`` files, or a file whose size is not whole 40-bit (5-byte) events."""
    for split in ("Train", "Test"):
        files = [path for path in (folder / split).glob("*/*.bin") if path.parent.name.isdigit()]
        if not files:
            return f"{folder / split} holds no <digit>/*.bin files"
        for path in files:
            size = path.stat().st_size
            if size % 5:
                return f"{path} has {size} bytes, not whole 40-bit events (truncated?)"
    return None


def _shd_problem(folder: Path) -> str | None:
    """The first problem of an SHD copy found by opening it: a missing file, a file that is not
    HDF5, or one without equally long ``spikes/times``, ``spikes/units`` and ``labels``."""
    try:
        import h5py
    except ImportError:
        return "reading SHD needs h5py (pip install h5py)"
    for split in ("train", "test"):
        path = folder / f"shd_{split}.h5"
        if not path.is_file():
            return f"{path} is missing"
        try:
            with h5py.File(path, "r") as handle:
                lengths = {
                    key: len(handle[key]) for key in ("spikes/times", "spikes/units", "labels")
                }
        except (OSError, KeyError) as error:
            return f"{path} is not an SHD HDF5 file ({error})"
        if len(set(lengths.values())) != 1:
            return f"{path} has unequal numbers of samples: {lengths}"
    return None


def _source_problem(name: str, folder: Path) -> str | None:
    return _nmnist_problem(folder) if name == "nmnist" else _shd_problem(folder)


def fetch_events(
    name: str,
    root: str | Path | None = None,
    source_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> FetchReport:
    """Copy N-MNIST or SHD from ``source_dir`` into the cache, or confirm the cache holds it.

    Raises:
        DataError: naming where to download the dataset when neither the cache nor
            ``source_dir`` holds it.
    """
    spec = EVENT_DATASETS[name]
    cache = default_root(root) / name
    if source_dir is None and os.environ.get("SPIKEFORGE_DATA_FROM"):
        source_dir = os.environ["SPIKEFORGE_DATA_FROM"]
    hint = (
        f"download {spec.title} from {spec.url}, unpack it and run "
        f"`spikeforge data fetch {name} --from DIR` with DIR holding {spec.layout}"
    )
    if source_dir is not None:
        source = Path(source_dir).expanduser()
        problem = _source_problem(name, source) if source.is_dir() else f"{source} does not exist"
        if problem:
            raise DataError(f"cannot fetch {spec.title} from {source}: {problem}; {hint}")
        cache.mkdir(parents=True, exist_ok=True)
        entries = ("Train", "Test") if name == "nmnist" else ("shd_train.h5", "shd_test.h5")
        for entry in entries:
            temp = cache / f"{entry}.{os.getpid()}.part"
            if (source / entry).is_dir():
                shutil.copytree(source / entry, temp)
                if (cache / entry).exists():
                    shutil.rmtree(cache / entry)
            else:
                shutil.copyfile(source / entry, temp)
            os.replace(temp, cache / entry)
        log(f"{name}: directory {source}: copied {', '.join(entries)} into {cache}")
        return FetchReport(name=name, directory=cache, source=f"directory {source}")
    if cache.is_dir() and _source_problem(name, cache) is None:
        log(f"{name}: cache: present in {cache}")
        return FetchReport(name=name, directory=cache, source="cache")
    raise DataError(f"{spec.title} cannot be downloaded automatically; {hint}")


def check_events(name: str, root: str | Path | None = None) -> list[str]:
    """Problems with the cached copy of ``name`` (one line each; empty when all is well)."""
    cache = default_root(root) / name
    problem = _source_problem(name, cache) if cache.is_dir() else f"{cache} does not exist"
    if problem is None:
        try:
            load_events(name, "test", root=root, limit=1)
        except DataError as error:
            return [str(error)]
        return []
    return [f"{problem}; run `spikeforge data fetch {name} --from DIR`"]

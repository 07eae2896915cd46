import hashlib

import numpy as np
import pytest
import torch

from spikeforge.data import sources
from spikeforge.data.errors import DataError
from spikeforge.data.idx import write_idx
from spikeforge.data.sources import DatasetSpec, FileSpec, dataset_dir, default_root, fetch
from spikeforge.data.vision import VisionSet, load_vision


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch):
    monkeypatch.delenv("SPIKEFORGE_DATA", raising=False)
    monkeypatch.delenv("SPIKEFORGE_DATA_FROM", raising=False)


def _install_fake_mnist(tmp_path, monkeypatch, train_labels=None):
    """Register a tiny 'mnist' (5 train, 3 test images of 4x3) and fetch it into a tmp root."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (5, 4, 3), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.array([0, 9, 3, 3, 1], dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (3, 4, 3), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.array([2, 7, 5], dtype=np.uint8),
    }
    if train_labels is not None:
        arrays["train-labels-idx1-ubyte"] = np.asarray(train_labels, dtype=np.uint8)
    folder = tmp_path / "files"
    folder.mkdir()
    files = []
    for name, array in arrays.items():
        data = write_idx(folder / name, array).read_bytes()
        files.append(FileSpec(name, hashlib.sha256(data).hexdigest(), len(data)))
    monkeypatch.setitem(sources.DATASETS, "mnist", DatasetSpec("mnist", "MNIST", tuple(files)))
    root = tmp_path / "root"
    fetch("mnist", root=root, source_dir=folder, log=lambda line: None)
    return root, arrays


def test_mnist_style_loading(tmp_path, monkeypatch):
    root, arrays = _install_fake_mnist(tmp_path, monkeypatch)
    train = load_vision("mnist", "train", root=root)
    assert isinstance(train, VisionSet) and (train.name, train.split) == ("mnist", "train")
    assert len(train) == 5
    assert train.images.dtype == torch.uint8 and train.images.shape == (5, 4, 3)
    assert train.labels.dtype == torch.int64
    assert train.labels.tolist() == [0, 9, 3, 3, 1]
    np.testing.assert_array_equal(train.images.numpy(), arrays["train-images-idx3-ubyte"])
    test = load_vision("mnist", "test", root=root, limit=2)
    assert len(test) == 2 and test.labels.tolist() == [2, 7]
    flat = train.flat_intensities()
    assert flat.dtype == torch.float32 and flat.shape == (5, 12)
    assert 0.0 <= flat.min() and flat.max() <= 1.0
    assert torch.allclose(flat[0, 0], train.images[0, 0, 0].float() / 255)


def test_image_and_label_counts_must_agree(tmp_path, monkeypatch):
    root, _ = _install_fake_mnist(tmp_path, monkeypatch, train_labels=[1, 2, 3])
    with pytest.raises(DataError) as caught:
        load_vision("mnist", "train", root=root)
    message = str(caught.value)
    assert "5 images" in message and "3 labels" in message
    assert "train-labels-idx1-ubyte" in message
    assert "spikeforge data fetch mnist" in message


def test_labels_must_be_digits(tmp_path, monkeypatch):
    root, _ = _install_fake_mnist(tmp_path, monkeypatch, train_labels=[0, 1, 12, 3, 4])
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte has labels in 0\.\.12"):
        load_vision("mnist", "train", root=root)


def test_corrupt_cached_header_names_file_and_fix(tmp_path, monkeypatch):
    root, _ = _install_fake_mnist(tmp_path, monkeypatch)
    path = dataset_dir("mnist", root) / "t10k-images-idx3-ubyte"
    data = bytearray(path.read_bytes())
    data[2] = 0x42  # same size, so only reading the header can notice
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=f"{path} has a wrong magic.*spikeforge data fetch mnist"):
        load_vision("mnist", "test", root=root)


def test_missing_dataset_says_to_fetch(tmp_path):
    with pytest.raises(DataError, match="run `spikeforge data fetch fashion-mnist`"):
        load_vision("fashion-mnist", root=tmp_path)


def test_bad_name_or_split():
    with pytest.raises(DataError, match="'cifar'.*mnist, fashion-mnist, digits"):
        load_vision("cifar")
    with pytest.raises(DataError, match="'validation'.*train, test"):
        load_vision("digits", "validation")


def test_digits_split_shapes_and_determinism():
    train = load_vision("digits", "train")
    test = load_vision("digits", "test")
    assert (len(train), len(test)) == (1437, 360)
    assert train.images.shape == (1437, 8, 8) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and set(train.labels.tolist()) == set(range(10))
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0
    assert train.flat_intensities().shape == (1437, 64)
    again = load_vision("digits", "train")
    assert torch.equal(train.images, again.images) and torch.equal(train.labels, again.labels)
    assert len(load_vision("digits", "test", limit=10)) == 10


def test_digits_split_is_a_partition_of_scikit_learn_digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    expected = np.rint(digits.images * 255 / 16).astype(np.uint8)
    both = torch.cat([load_vision("digits", "train").images, load_vision("digits", "test").images])
    # Same multiset of images: compare sorted rows of the flattened arrays.
    got = np.sort(both.reshape(len(both), -1).numpy().view("S64").ravel())
    want = np.sort(expected.reshape(len(expected), -1).view("S64").ravel())
    assert np.array_equal(got, want)


# Read before the autouse fixture clears SPIKEFORGE_DATA, so a user's own cache is honoured.
_REAL_ROOT = default_root()


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_real_dataset_from_default_cache(name):
    try:
        dataset_dir(name, _REAL_ROOT)
    except DataError:
        pytest.skip(f"{name} is not in {_REAL_ROOT}; run `spikeforge data fetch {name}`")
    train = load_vision(name, "train", root=_REAL_ROOT)
    test = load_vision(name, "test", root=_REAL_ROOT)
    assert train.images.shape == (60000, 28, 28) and len(test) == 10000
    assert sorted(torch.unique(train.labels).tolist()) == list(range(10))

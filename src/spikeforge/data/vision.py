"""Labelled image datasets as uint8 tensors: MNIST, Fashion-MNIST and scikit-learn's digits."""

import dataclasses
from pathlib import Path

import numpy as np
import torch

from .errors import DataError
from .idx import read_idx
from .sources import DATASETS, dataset_dir

__all__ = ["VISION_DATASETS", "VisionSet", "load_vision"]

VISION_DATASETS = ("mnist", "fashion-mnist", "digits")
_SPLITS = ("train", "test")
_DIGITS_SEED = 0
_DIGITS_TRAIN = 1437  # of 1797; the last 360 are the test split


@dataclasses.dataclass
class VisionSet:
    """Images with integer class labels.

    Attributes:
        images: uint8 intensities 0..255, shape [N, H, W].
        labels: int64 classes 0..9, shape [N].
        name: Dataset name, e.g. ``mnist``.
        split: ``train`` or ``test``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    name: str
    split: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def flat_intensities(self) -> torch.Tensor:
        """Return the images flattened and scaled to [0, 1]: float32, shape [N, H*W]."""
        return self.images.reshape(len(self), -1).to(torch.float32) / 255.0


def load_vision(
    name: str, split: str = "train", root: str | Path | None = None, limit: int = 0
) -> VisionSet:
    """Load a labelled image dataset.

    MNIST and Fashion-MNIST are read from the cache filled by ``spikeforge data fetch NAME``.
    ``digits`` (8x8 images, 1797 samples) ships with scikit-learn: its values 0..16 are scaled to
    0..255, and a fixed permutation (seed 0) splits it into 1437 train and 360 test samples.

    Args:
        name: ``mnist``, ``fashion-mnist`` or ``digits``.
        split: ``train`` or ``test``.
        root: Cache root for MNIST-style datasets (default: env ``SPIKEFORGE_DATA``, else
            ``~/.cache/spikeforge``).
        limit: If > 0, keep only the first ``limit`` samples.

    Returns:
        The images [N, H, W] uint8 and labels [N] int64.

    Raises:
        DataError: For an unknown name or split, a dataset missing from the cache, or files whose
            image and label counts disagree or whose labels are outside 0..9.
    """
    if split not in _SPLITS:
        raise DataError(f"unknown split {split!r} for {name}; choose one of: {', '.join(_SPLITS)}")
    if name == "digits":
        images, labels = _digits(split)
    elif name in DATASETS:
        images, labels = _idx_pair(name, split, root)
    else:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(VISION_DATASETS)}")
    if limit > 0:
        images, labels = images[:limit], labels[:limit]
    return VisionSet(
        images=torch.from_numpy(np.ascontiguousarray(images)),
        labels=torch.from_numpy(labels.astype(np.int64)),
        name=name,
        split=split,
    )


def _idx_pair(name: str, split: str, root: str | Path | None) -> tuple[np.ndarray, np.ndarray]:
    """Read and validate the images and labels of an MNIST-style split."""
    directory = dataset_dir(name, root)
    prefix = "train" if split == "train" else "t10k"
    images_path = directory / f"{prefix}-images-idx3-ubyte"
    labels_path = directory / f"{prefix}-labels-idx1-ubyte"
    fix = f"run `spikeforge data fetch {name}` to verify and replace it"
    images = read_idx(images_path, fix=fix)
    labels = read_idx(labels_path, fix=fix)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataError(
            f"{images_path} holds {images.dtype} data of shape {list(images.shape)}, expected "
            f"uint8 [N, H, W]; {fix}"
        )
    if labels.ndim != 1:
        raise DataError(
            f"{labels_path} holds labels of shape {list(labels.shape)}, expected [N]; {fix}"
        )
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels; "
            f"{fix}"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(
            f"{labels_path} has labels in {labels.min()}..{labels.max()}, expected 0..9; {fix}"
        )
    return images, labels


def _digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits as uint8 0..255, with the fixed train/test split."""
    from sklearn.datasets import load_digits  # imported here: scikit-learn is slow to import

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    order = np.random.default_rng(_DIGITS_SEED).permutation(len(images))
    chosen = order[:_DIGITS_TRAIN] if split == "train" else order[_DIGITS_TRAIN:]
    return images[chosen], digits.target[chosen]

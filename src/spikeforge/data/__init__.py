"""Datasets, IDX files and spike encoders.

Fetch a dataset once (``spikeforge data fetch mnist``, or :func:`fetch`), then load it with
:func:`load_vision` and turn intensities into spikes with an encoder.
"""

from .encoders import latency_encode, poisson_encode
from .errors import DataError
from .idx import read_idx, write_idx
from .sources import DATASETS, FetchReport, check, dataset_dir, default_root, fetch
from .vision import VISION_DATASETS, VisionSet, load_vision

__all__ = [
    "DATASETS",
    "DataError",
    "FetchReport",
    "VISION_DATASETS",
    "VisionSet",
    "check",
    "dataset_dir",
    "default_root",
    "fetch",
    "latency_encode",
    "load_vision",
    "poisson_encode",
    "read_idx",
    "write_idx",
]

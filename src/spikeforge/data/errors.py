"""The one exception type raised for problems with data files."""

__all__ = ["DataError"]


class DataError(Exception):
    """A data file or dataset is missing, corrupt or unusable.

    The message is a single line that names the file (or dataset) and the problem, and says how
    to fix it, e.g. ``MNIST file /x/train-images-idx3-ubyte is truncated: expected 47040016 bytes,
    found 1000; run `spikeforge data fetch mnist` to replace it``.
    """

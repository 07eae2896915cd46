"""Reading and writing IDX files (the MNIST container format), raw or gzip-compressed.

An IDX file is a 4-byte magic number ``00 00 TYPE NDIM``, then ``NDIM`` big-endian uint32
dimension sizes, then the values in big-endian C order.
"""

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from .errors import DataError

__all__ = ["read_idx", "write_idx"]

_GZIP_MAGIC = b"\x1f\x8b"
_DEFAULT_FIX = "re-create the file or fetch it again"

# IDX type code -> big-endian numpy dtype.
_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES: dict[np.dtype, int] = {dtype.newbyteorder("="): code for code, dtype in _DTYPES.items()}


def read_idx(path: str | Path, *, fix: str = _DEFAULT_FIX) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed (detected by its magic bytes, not its name).

    Args:
        path: File to read.
        fix: What the user should do if the file is bad; appended to every error message.

    Returns:
        Array with the file's shape and dtype (uint8, int8, int16, int32, float32 or float64),
        in native byte order, writable.

    Raises:
        DataError: If the file is missing, is not IDX, or its payload is truncated or too long.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"IDX file {path} does not exist; {fix}")
    data = path.read_bytes()
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:
            raise DataError(f"IDX file {path} is a corrupt gzip file ({error}); {fix}") from None
    if len(data) < 4:
        raise DataError(f"IDX file {path} is truncated: only {len(data)} bytes; {fix}")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in _DTYPES or ndim == 0:
        raise DataError(
            f"IDX file {path} has a wrong magic number {data[:4].hex()} "
            f"(expected 0000 then a type code in 08/09/0b/0c/0d/0e and ndim >= 1); {fix}"
        )
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(
            f"IDX file {path} is truncated inside its header: expected at least {header_size} "
            f"bytes, found {len(data)}; {fix}"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    dtype = _DTYPES[code]
    expected = header_size + math.prod(shape) * dtype.itemsize
    if len(data) < expected:
        raise DataError(
            f"IDX file {path} is truncated: expected {expected} bytes for shape {list(shape)}, "
            f"found {len(data)}; {fix}"
        )
    if len(data) > expected:
        raise DataError(
            f"IDX file {path} is too long: expected {expected} bytes for shape {list(shape)}, "
            f"found {len(data)}; {fix}"
        )
    values = np.frombuffer(data, dtype=dtype, offset=header_size).reshape(shape)
    # astype always copies: the result is native-endian and writable (torch.from_numpy needs it).
    return values.astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write an array as an IDX file, gzip-compressed if ``path`` ends in ``.gz``.

    Args:
        path: Destination file; its parent directory must exist.
        array: Array of dtype uint8, int8, int16, int32, float32 or float64 with ndim >= 1.

    Returns:
        The path written.

    Raises:
        ValueError: If the dtype has no IDX type code or the array is 0-dimensional.
    """
    path = Path(path)
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=")
    if native not in _CODES or array.ndim == 0 or array.ndim > 255:
        raise ValueError(
            f"cannot write {array.dtype} array of ndim {array.ndim} as IDX; "
            "use uint8, int8, int16, int32, float32 or float64 with 1 <= ndim <= 255"
        )
    code = _CODES[native]
    header = struct.pack(f">HBB{array.ndim}I", 0, code, array.ndim, *array.shape)
    payload = np.ascontiguousarray(array, dtype=_DTYPES[code]).tobytes()
    content = header + payload
    if path.name.endswith(".gz"):
        content = gzip.compress(content, mtime=0)
    path.write_bytes(content)
    return path

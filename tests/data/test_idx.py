import gzip
import struct

import numpy as np
import pytest

from spikeforge.data.errors import DataError
from spikeforge.data.idx import read_idx, write_idx

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_round_trip_every_type_raw_and_gz(tmp_path, dtype, suffix):
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    path = write_idx(tmp_path / f"values-idx3{suffix}", array)
    loaded = read_idx(path)
    assert loaded.dtype == np.dtype(dtype)
    assert loaded.dtype.isnative
    assert loaded.flags.writeable
    np.testing.assert_array_equal(loaded, array)


def test_header_and_payload_are_big_endian(tmp_path):
    path = write_idx(tmp_path / "x", np.array([258, -2], dtype=np.int16))
    assert path.read_bytes() == b"\x00\x00\x0b\x01" + struct.pack(">I", 2) + b"\x01\x02\xff\xfe"


def test_gzip_is_detected_by_magic_bytes_not_by_name(tmp_path):
    array = np.arange(6, dtype=np.uint8).reshape(2, 3)
    raw = write_idx(tmp_path / "raw", array).read_bytes()
    (tmp_path / "looks-compressed.gz").write_bytes(raw)
    (tmp_path / "looks-raw").write_bytes(gzip.compress(raw))
    np.testing.assert_array_equal(read_idx(tmp_path / "looks-compressed.gz"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "looks-raw"), array)


def _error(path, **kwargs) -> str:
    with pytest.raises(DataError) as caught:
        read_idx(path, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_missing_file(tmp_path):
    message = _error(tmp_path / "nope", fix="run `spikeforge data fetch mnist`")
    assert "does not exist" in message
    assert "spikeforge data fetch mnist" in message


@pytest.mark.parametrize(
    "header",
    [b"\x01\x00\x08\x01", b"\x00\x00\x07\x01", b"\x00\x00\x08\x00"],
    ids=["nonzero-prefix", "unknown-type", "zero-ndim"],
)
def test_wrong_magic(tmp_path, header):
    path = tmp_path / "bad"
    path.write_bytes(header + struct.pack(">I", 1) + b"\x00")
    message = _error(path, fix="do the fix")
    assert "magic" in message
    assert message.endswith("; do the fix")


def test_truncated_payload_names_sizes_and_fix(tmp_path):
    path = write_idx(tmp_path / "t", np.zeros((10, 4), dtype=np.int32))
    path.write_bytes(path.read_bytes()[:-3])
    message = _error(path, fix="delete it")
    assert "truncated" in message
    assert "expected 172 bytes" in message and "found 169" in message
    assert message.endswith("delete it")


def test_truncated_header(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 5)
    assert "truncated" in _error(path)
    path.write_bytes(b"\x00\x00")
    assert "truncated" in _error(path)


def test_over_long_payload(tmp_path):
    path = write_idx(tmp_path / "long.gz", np.zeros(3, dtype=np.uint8))
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()) + b"\x00"))
    assert "too long" in _error(path)


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "broken.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + b"\x00" * 100)[:20])
    assert "gzip" in _error(path)


def test_write_rejects_types_without_idx_code(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_idx(tmp_path / "b", np.zeros(3, dtype=bool))
    with pytest.raises(ValueError):
        write_idx(tmp_path / "s", np.array(3, dtype=np.uint8))

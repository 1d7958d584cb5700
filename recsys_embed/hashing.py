"""Stable 64-bit hashing of ids and strings, identical in numpy and torch.

Neither Python's ``hash`` (salted per process) nor polars' ``Expr.hash`` (documented as
unstable across polars versions) may decide ids that must survive an upgrade between
training and scoring. These functions are fixed by golden values in the tests.

* integers: ``splitmix64(value ^ seed)`` (the SplitMix64 finaliser, Steele et al. 2014);
* strings: FNV-1a 64 over the UTF-8 bytes starting from ``seed``, then ``splitmix64``;
* ``seed_of(salt)``: FNV-1a 64 of the salt's UTF-8 bytes.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_GOLDEN = 0x9E3779B97F4A7C15
_U64 = (1 << 64) - 1


def seed_of(salt: str) -> int:
    """The 64-bit seed of a salt string (FNV-1a 64 of its UTF-8 bytes)."""
    return _fnv1a(FNV_OFFSET, salt.encode("utf-8"))


def splitmix64_np(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser over a uint64 array (wrapping arithmetic)."""
    z = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        z += np.uint64(_GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_M1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_M2)
        z ^= z >> np.uint64(31)
    return z


def hash_int_np(values: np.ndarray, seed: int) -> np.ndarray:
    """Hash int64 values to uint64."""
    return splitmix64_np(values.astype(np.int64).view(np.uint64) ^ np.uint64(seed))


_SCALAR_TAIL = 32  # below this many strings still unfinished, a Python loop per byte beats numpy per position


def hash_str_arrow(values: pa.Array, seed: int) -> np.ndarray:
    """Hash an Arrow string array to uint64, in time linear in its total bytes.

    Strings are processed longest first, vectorised over byte positions: at position p only
    the strings longer than p (a prefix of that order) are touched. Once fewer than
    ``_SCALAR_TAIL`` strings remain, each finishes in a scalar loop, so one huge value costs
    its own bytes, not its length times the column's. Nulls hash like the empty string;
    callers mask them first.
    """
    values = values.cast(pa.large_string()) if pa.types.is_string(values.type) else values
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    n = len(values)
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int64)[values.offset : values.offset + n + 1]
    data_buf = values.buffers()[2]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    order = np.argsort(-np.diff(offsets), kind="stable")  # longest first
    starts, lengths = offsets[:-1][order], np.diff(offsets)[order]
    h = np.full(n, seed, dtype=np.uint64)
    prime = np.uint64(FNV_PRIME)
    falling = -lengths  # ascending: the strings longer than p are the first searchsorted(falling, -p) ones
    with np.errstate(over="ignore"):
        for pos in range(int(lengths[0]) if n else 0):
            live = int(np.searchsorted(falling, -pos, side="left"))
            if live < _SCALAR_TAIL:
                for i in range(live):
                    h[i] = _fnv1a(int(h[i]), data[starts[i] + pos : starts[i] + lengths[i]].tobytes())
                break
            h[:live] = (h[:live] ^ data[starts[:live] + pos]) * prime
    out = np.empty(n, np.uint64)
    out[order] = h
    return splitmix64_np(out)


def _fnv1a(h: int, data: bytes) -> int:
    for byte in data:
        h = ((h ^ byte) * FNV_PRIME) & _U64
    return h


def hash_arrow(values: pa.Array, seed: int) -> np.ndarray:
    """Hash an Arrow integer or string array to uint64 (nulls hash as 0 / '')."""
    if pa.types.is_integer(values.type):
        return hash_int_np(pc.fill_null(values, 0).to_numpy(zero_copy_only=False), seed)
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        return hash_str_arrow(values, seed)
    raise TypeError(f"can only hash integer or string values, got {values.type}")


def _srl(x: torch.Tensor, shift: int) -> torch.Tensor:
    """Logical right shift of int64 (torch shifts signed values arithmetically)."""
    return (x >> shift) & ((1 << (64 - shift)) - 1)


def _to_signed(value: int) -> int:
    value &= _U64
    return value - (1 << 64) if value >= (1 << 63) else value


def hash_int_torch(values: torch.Tensor, seed: int) -> torch.Tensor:
    """``hash_int_np`` on int64 tensors; the result is the same 64 bits viewed as int64."""
    z = values.to(torch.int64) ^ _to_signed(seed)
    z = z + _to_signed(_GOLDEN)
    z = (z ^ _srl(z, 30)) * _to_signed(_M1)
    z = (z ^ _srl(z, 27)) * _to_signed(_M2)
    return z ^ _srl(z, 31)


def bucket_torch(values: torch.Tensor, seed: int, buckets: int) -> torch.Tensor:
    """``hash(value) mod buckets`` as non-negative int64 (unsigned modulo of the 64 bits)."""
    h = hash_int_torch(values, seed)
    # unsigned mod: split into the high 32 and low 32 bits so nothing overflows
    hi = _srl(h, 32)
    lo = h & 0xFFFFFFFF
    return ((hi % buckets) * ((1 << 32) % buckets) + lo % buckets) % buckets

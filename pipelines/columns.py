"""Column checks and conversions shared by fit and transform.

Each function takes one Arrow column of one record batch and a :class:`Where` (file,
column, first row) so that an error names the file, the column, the row and what was
expected. Conversions:

* :func:`keys`: a categorical column as the table group's key type (int64 or string),
  dictionary encoding kept, nulls kept (they become id 0);
* :func:`sequence_keys`: a list column or delimited string column as per-row lengths plus
  flat keys, null and empty items dropped, only the most recent ``max_len`` items kept;
* :func:`numeric_values`: a numeric column as floats with nulls and NaN replaced by
  ``fill_value``, and for ``log1p`` transforms negatives clipped to 0 first (documented
  choice, as DLRM's Criteo preprocessing does: counters hold a few negative values, and
  ``log1p`` of them is undefined below -1 and meaningless for a count).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_embed.errors import ColumnTypeError, DataError
from recsys_embed.features import FeatureSpec, NumericTransform

INT64_MAX = np.iinfo(np.int64).max
FLOAT32_MAX = float(np.finfo(np.float32).max)
KEY_TYPES = ("int", "str")


@dataclass(frozen=True, eq=False)
class Where:
    """Where a column comes from, for error messages; ``rows`` maps the positions of a
    flattened list column to the rows they belong to."""

    source: str
    column: str
    first_row: int = 0
    rows: np.ndarray | None = None

    def __call__(self, message: str, row: int | None = None) -> str:
        if row is None:
            return f"{self.source}: column {self.column!r}: {message}"
        row = int(row if self.rows is None else self.rows[row])
        return f"{self.source}: column {self.column!r}, row {self.first_row + row}: {message}"


def is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t) or pa.types.is_list_view(t)


def _is_id(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return _is_id(t.value_type)
    return pa.types.is_integer(t) or pa.types.is_boolean(t) or is_string(t) or pa.types.is_null(t)


def key_type_of(t: pa.DataType) -> str | None:
    """The natural key type of a categorical or sequence column: ``int`` for integers,
    ``str`` for strings (delimited sequences included), None for an all-null column."""
    if pa.types.is_dictionary(t):
        return key_type_of(t.value_type)
    if _is_list(t):
        return key_type_of(t.value_type)
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        return "int"
    return "str" if is_string(t) else None


def check_type(spec: FeatureSpec, t: pa.DataType, where: Where) -> None:
    """Raise :class:`ColumnTypeError` (a ``TypeError``) when column type ``t`` cannot feed feature ``spec``."""
    if spec.is_sequence:
        if _is_list(t) and _is_id(t.value_type):
            return
        if is_string(t) and spec.delimiter is None:
            raise ColumnTypeError(where(f"holds strings ({t}); sequence feature {spec.name!r} needs a list column or a delimiter"))
        if not (is_string(t) or pa.types.is_null(t)):
            raise ColumnTypeError(where(f"holds {t}; sequence feature {spec.name!r} expects lists of integers or strings"))
        return
    if _is_list(t):
        raise ColumnTypeError(
            where(f"holds lists ({t}) but feature {spec.name!r} is {spec.kind.value} and expects one value per row; "
                  "for a list column declare kind='sequence' with max_len")  # fmt: skip
        )
    if spec.kind.value == "categorical" and not _is_id(t):
        raise ColumnTypeError(where(f"holds {t}; categorical feature {spec.name!r} expects integers or strings"))
    if spec.kind.value == "numeric":
        check_number_type(t, where, f"numeric feature {spec.name!r}")


def check_number_type(t: pa.DataType, where: Where, what: str) -> None:
    ok = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_null(t)
    if not (ok or pa.types.is_decimal(t)):
        raise ColumnTypeError(where(f"holds {t}; {what} expects numbers"))


def numpy_view(array: pa.Array) -> tuple[np.ndarray, np.ndarray | None]:
    """The values of an integer or floating-point Arrow array as a zero-copy numpy view (null
    slots hold arbitrary values) and its validity as a bool array, None without nulls."""
    n = len(array)
    dtype = np.dtype(array.type.to_pandas_dtype())
    data = array.buffers()[1]
    values = np.frombuffer(data, dtype, n, array.offset * dtype.itemsize) if n else np.zeros(0, dtype)
    if not array.null_count:
        return values, None
    bits = np.frombuffer(array.buffers()[0], np.uint8)
    return values, np.unpackbits(bits, count=array.offset + n, bitorder="little")[array.offset :].view(bool)


def string_bytes(values: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The UTF-8 bytes of a string array followed by 8 zero bytes (so that an 8-byte window
    read at any string's start stays in bounds), and the start and length of each string."""
    if pa.types.is_string_view(values.type):
        values = values.cast(pa.large_string())
    n = len(values)
    width = np.int64 if pa.types.is_large_string(values.type) else np.int32
    offsets = np.frombuffer(values.buffers()[1], width, n + 1, values.offset * np.dtype(width).itemsize).astype(np.int64)
    data = values.buffers()[2]
    used = np.frombuffer(data, np.uint8, int(offsets[-1])) if data is not None and offsets[-1] else np.zeros(0, np.uint8)
    return np.concatenate([used, np.zeros(8, np.uint8)]), offsets[:-1], np.diff(offsets)


_LOW_BYTES = np.array([(1 << (8 * r)) - 1 for r in range(8)] + [(1 << 64) - 1], np.uint64)


def byte_word(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray, word: int) -> np.ndarray:
    """Bytes ``8 word`` to ``8 word + 7`` of each string of :func:`string_bytes` as a
    little-endian uint64, zero past the string's end (equal words: equal bytes;
    ``byteswap()`` gives words that compare in byte order)."""
    words = np.ndarray((len(data) - 7,), np.dtype("<u8"), buffer=data, strides=(1,))  # unaligned: one per byte offset
    at = np.minimum(starts + 8 * word, len(data) - 8)
    return words[at] & _LOW_BYTES[np.clip(lengths - 8 * word, 0, 8)]


def _check_int64_range(array: pa.Array, where: Where) -> None:
    if pa.types.is_uint64(array.type) and len(array) and (pc.max(array).as_py() or 0) > INT64_MAX:
        row = int(np.argmax(pc.fill_null(array, 0).to_numpy() > np.uint64(INT64_MAX)))
        raise ValueError(where(f"value {array[row].as_py()} exceeds the int64 range (ids must be < 2**63)", row))


def _empty_as_null(array: pa.Array) -> pa.Array:
    """Empty strings are missing values, as an empty field of a CSV file is."""
    if pa.types.is_dictionary(array.type):
        empty = pc.index(array.dictionary, "").as_py()
        if empty < 0:
            return array
        indices = pc.if_else(pc.equal(array.indices, empty), pa.scalar(None, array.indices.type), array.indices)
        return pa.DictionaryArray.from_arrays(indices, array.dictionary)
    if len(array) and pc.min(pc.binary_length(array)).as_py() == 0:
        return pc.if_else(pc.equal(pc.binary_length(array), 0), pa.scalar(None, array.type), array)
    return array


def keys(array: pa.Array, key_type: str, where: Where) -> pa.Array:
    """A categorical column as int64 or string keys (dictionary arrays stay encoded); empty
    strings become nulls."""
    t = array.type
    if pa.types.is_dictionary(t):
        if key_type == "str" and (pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type)):
            return _empty_as_null(array)
        array = array.dictionary_decode()
        t = array.type
    if pa.types.is_null(t):
        return pa.nulls(len(array), pa.int64() if key_type == "int" else pa.large_string())
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        _check_int64_range(array, where)
        ints = array.cast(pa.int64())
        return ints if key_type == "int" else ints.cast(pa.large_string())
    if pa.types.is_string_view(t):
        array = array.cast(pa.large_string())
    array = _empty_as_null(array)
    if key_type == "str":
        return array
    try:
        return array.cast(pa.int64())
    except pa.ArrowInvalid as err:
        integer = pc.fill_null(pc.match_substring_regex(array, r"^[+-]?[0-9]{1,19}$"), True)
        bad = np.flatnonzero(~integer.to_numpy(zero_copy_only=False))
        row = int(bad[0]) if bad.size else None
        value = f"value {array[row].as_py()!r}" if row is not None else "a value"
        raise ValueError(where(f"{value} is not an int64 integer, but this table group holds integer ids ({err})", row)) from None


def sequence_keys(array: pa.Array, spec: FeatureSpec, key_type: str, where: Where) -> tuple[np.ndarray, pa.Array]:
    """A sequence column as ``(lengths [N] int64, flat keys)``: null lists are empty, null and
    empty-string items dropped, each row keeps its last ``spec.max_len`` items (most recent last)."""
    n = len(array)
    if pa.types.is_null(array.type):
        return np.zeros(n, np.int64), keys(pa.nulls(0), key_type, where)
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if is_string(array.type):
        array = pc.split_pattern(array.cast(pa.large_string()), pattern=spec.delimiter)
    lengths = pc.fill_null(pc.list_value_length(array), 0).to_numpy().astype(np.int64)
    rows = np.repeat(np.arange(n), lengths)
    values = keys(pc.list_flatten(array), key_type, replace(where, rows=rows))
    keep = pc.is_valid(values)
    if keep.false_count:
        lengths = np.bincount(rows[keep.to_numpy(zero_copy_only=False)], minlength=n).astype(np.int64)
        values = values.filter(keep)
    if lengths.size and lengths.max() > spec.max_len:
        kept = np.minimum(lengths, spec.max_len)
        starts = np.cumsum(lengths) - lengths
        position = np.arange(len(values)) - np.repeat(starts, lengths)
        recent = position >= np.repeat(lengths - kept, lengths)
        values, lengths = values.filter(pa.array(recent)), kept
    return lengths, values


def numeric_values(array: pa.Array, spec: FeatureSpec, where: Where) -> tuple[np.ndarray, np.ndarray]:
    """A numeric column as ``(values [N], missing [N] bool)``: nulls and NaN replaced by
    ``fill_value``. For ``log1p`` transforms negatives are clipped to 0 and ``log(1 + x)`` is
    taken in float32 (the dtype fed to the model; 5x faster than float64 ``log1p``); other
    transforms stay float64 so bucket boundaries compare exactly. Infinities, and finite values
beyond the float32 range (they would reach the model as infinities), are an error."""
    log = spec.transform in (NumericTransform.LOG1P, NumericTransform.LOG1P_STANDARDIZE)
    dtype = np.float32 if log else np.float64
    if pa.types.is_null(array.type) or not len(array):
        values, missing = np.zeros(len(array), dtype), np.ones(len(array), bool)
    else:
        if not (pa.types.is_float32(array.type) or pa.types.is_float64(array.type)):
            array = array.cast(pa.from_numpy_dtype(dtype), safe=False)
        raw, valid = numpy_view(array)
        with np.errstate(invalid="ignore"):
            huge = np.flatnonzero(np.isfinite(raw) & (np.abs(raw) > FLOAT32_MAX) & (True if valid is None else valid))
        if huge.size:
            row = int(huge[0])
            raise DataError(where(f"value {raw[row]:g} is outside the float32 range the model reads (|x| <= {FLOAT32_MAX:.3g}); "
                                  "scale it or mark it missing (null)", row))  # fmt: skip
        values = raw.astype(dtype)  # a copy: worked on in place below
        missing = ~np.isfinite(values)  # NaN (missing) or infinite (an error)
        if valid is not None:
            missing |= ~valid  # null slots hold arbitrary values
        bad = np.flatnonzero(missing)
        infinite = bad[np.isinf(values[bad]) & (True if valid is None else valid[bad])]
        if infinite.size:
            row = int(infinite[0])
            raise ValueError(where(f"value {values[row]} is infinite; replace it or mark it missing (null)", row))
    np.copyto(values, values.dtype.type(spec.fill_value), where=missing)
    if log:
        np.maximum(values, 0.0, out=values)
        values += 1.0
        np.log(values, out=values)
    return values, missing

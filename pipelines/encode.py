"""Transform: one record batch of source columns to one record batch of model inputs.

Output columns, in schema order: every sparse feature as ``int64`` ids (categorical and
bucketized numeric) or ``list<int64>`` (sequences, most recent last, at most ``max_len``);
every dense feature as ``float32``; then ``label`` (float32) and ``group`` (int64) when the
schema has them. Group values: integers as they are, strings as their stable 64-bit hash
(``recsys_embed.hashing``, salt = the group column name) viewed as int64.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_embed.errors import ColumnTypeError, DataError
from recsys_embed.features import FIRST_VALUE_ID, FeatureKind, FeatureSpec, NumericTransform, Schema
from recsys_embed.hashing import hash_str_arrow, seed_of
from recsys_embed.pipelines.columns import (
    Where,
    check_number_type,
    check_type,
    is_string,
    keys,
    numeric_values,
    sequence_keys,
)
from recsys_embed.pipelines.fit import read_spec
from recsys_embed.pipelines.lookup import IdLookup
from recsys_embed.pipelines.sources import ReadSpec
from recsys_embed.pipelines.state import FittedState

LABEL_COLUMN = "label"
GROUP_COLUMN = "group"


class Encoder:
    """Applies a fitted state to record batches (picklable: worker processes get a copy)."""

    def __init__(self, schema: Schema, state: FittedState, labels: bool = True) -> None:
        self.schema = schema
        self.state = state
        self.labels = labels and schema.label is not None
        self.lookups = {t: IdLookup(s) for t, s in state.tables.items() if s.ids != "buckets"}
        self.read_spec: ReadSpec = read_spec(_targets(schema, self.labels), with_targets=True)
        fields = []
        for spec in schema.features:
            if spec.is_sequence:
                fields.append(pa.field(spec.name, pa.list_(pa.int64())))
            else:
                fields.append(pa.field(spec.name, pa.int64() if spec.is_sparse else pa.float32()))
        if self.labels:
            fields.append(pa.field(LABEL_COLUMN, pa.float32()))
        if schema.group:
            fields.append(pa.field(GROUP_COLUMN, pa.int64()))
        self.output_schema = pa.schema(fields)

    def __call__(self, batch: pa.RecordBatch, source: str, first_row: int) -> pa.RecordBatch:
        """Encode one batch; ``source`` and ``first_row`` only serve error messages."""

        columns = []
        for spec in self.schema.features:
            where = Where(source, spec.source, first_row)  # type: ignore[arg-type]
            column = batch.column(spec.source)
            check_type(spec, column.type, where)
            columns.append(self._feature(spec, column, where))
        if self.labels:
            label = self.schema.label
            columns.append(self._label(batch.column(label), Where(source, label, first_row)))  # type: ignore[arg-type]
        if self.schema.group:
            columns.append(self._group(batch.column(self.schema.group), Where(source, self.schema.group, first_row)))
        return pa.RecordBatch.from_arrays(columns, schema=self.output_schema)

    def _feature(self, spec: FeatureSpec, column: pa.Array, where: Where) -> pa.Array:
        if spec.kind is FeatureKind.NUMERIC:
            values, _ = numeric_values(column, spec, where)
            stats = self.state.numeric[spec.name]
            if spec.transform is NumericTransform.BUCKETIZE:
                buckets = np.searchsorted(np.asarray(stats.boundaries, np.float64), values, side="right")
                return pa.array(buckets.astype(np.int64) + FIRST_VALUE_ID)
            if spec.transform in (NumericTransform.STANDARDIZE, NumericTransform.LOG1P_STANDARDIZE):
                values -= values.dtype.type(stats.mean)
                values /= values.dtype.type(stats.std)
            return pa.array(values.astype(np.float32, copy=False))
        table = self.state.tables[spec.table]  # type: ignore[index]
        lookup = self.lookups[spec.table]  # type: ignore[index]
        if not spec.is_sequence:
            return pa.array(lookup(keys(column, table.key_type, where), cache=spec.name))
        lengths, values = sequence_keys(column, spec, table.key_type, where)
        offsets = np.zeros(len(lengths) + 1, np.int32)
        np.cumsum(lengths, out=offsets[1:])
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(lookup(values)))

    def _label(self, column: pa.Array, where: Where) -> pa.Array:
        check_number_type(column.type, where, "the label")
        if column.null_count:
            row = int(np.argmax(pc.is_null(column).to_numpy(zero_copy_only=False)))
            raise ValueError(where("the label is missing; every row needs one (pass labels=False to read unlabelled data)", row))
        labels = column.cast(pa.float32())
        outside = np.flatnonzero((labels.to_numpy() != 0) & (labels.to_numpy() != 1))
        if len(outside):
            value = labels[int(outside[0])].as_py()
            raise DataError(where(f"label {value:g} is not 0 or 1; a click label is 0 (no click) or 1 (click)", int(outside[0])))
        return labels

    def _group(self, column: pa.Array, where: Where) -> pa.Array:
        if column.null_count:
            row = int(np.argmax(pc.is_null(column).to_numpy(zero_copy_only=False)))
            raise ValueError(where("the group (e.g. user id for GAUC) is missing; every row needs one", row))
        seed = seed_of(self.schema.group or "")
        if pa.types.is_dictionary(column.type) and is_string(column.type.value_type):
            hashes = hash_str_arrow(column.dictionary, seed).view(np.int64)
            return pa.array(hashes[column.indices.to_numpy()])
        if pa.types.is_dictionary(column.type):
            column = column.dictionary_decode()
        if is_string(column.type):
            return pa.array(hash_str_arrow(column, seed).view(np.int64))
        if pa.types.is_integer(column.type) or pa.types.is_boolean(column.type):
            return keys(column, "int", where)
        raise ColumnTypeError(where(f"holds {column.type}; the group column expects integers or strings"))


def _targets(schema: Schema, labels: bool) -> Schema:
    """``schema`` with ``label`` dropped when labels are not read."""
    return schema if labels else Schema(schema.features, label=None, group=schema.group)

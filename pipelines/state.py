"""What ``Pipeline.fit`` learns: per table group an id space, per numeric feature its stats.

A state is saved as ``(arrays, config)`` (:meth:`FittedState.export_state`): the
vocabularies as Arrow arrays named ``vocabulary.<table group>`` (artifacts store integer
ones as safetensors tensors and string ones in an Arrow IPC file), everything else as plain
JSON types, with the fingerprint of the schema it was fitted for, so a state is never
applied to another schema. Nothing is pickled. States of format 1 (vocabularies inline as
JSON lists in the config) still load.

    >>> import pyarrow as pa
    >>> state = FittedState(
    ...     schema_fingerprint="abc",
    ...     tables={"item_id": TableState("vocabulary", key_type="int", vocabulary=pa.array([7, 3]))},
    ...     numeric={"price": NumericState(mean=1.5, std=0.5)},
    ... )
    >>> state.tables["item_id"].num_embeddings  # 0 missing, 1 OOV, 2 -> 7, 3 -> 3
    4
    >>> arrays, config = state.export_state()
    >>> {name: array.to_pylist() for name, array in arrays.items()}, config["tables"]
    ({'vocabulary.item_id': [7, 3]}, {'item_id': {'ids': 'vocabulary', 'key_type': 'int', 'size': 2}})
    >>> FittedState.from_state(arrays, config) == state
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from recsys_embed.features import FIRST_VALUE_ID

ID_KINDS = ("vocabulary", "hashing", "buckets")
FORMAT_VERSION = 2  # 2: vocabularies as arrays beside the config; 1: inline JSON lists
VOCABULARY = "vocabulary."  # arrays are named VOCABULARY + table group
KEY_TYPES = {"int": pa.int64(), "str": pa.large_string()}


@dataclass
class TableState:
    """The id space of one table group.

    Attributes:
        ids: ``vocabulary`` (fitted values), ``hashing`` (stable hash buckets) or
            ``buckets`` (quantile buckets of a bucketized numeric feature).
        key_type: ``int`` or ``str``: every column of the group is read as this type.
        vocabulary: the values ordered by id (value ``vocabulary[i]`` has id ``2 + i``).
        seed: the hashing seed (``recsys_embed.hashing.seed_of(salt)``).
        size: number of value ids: vocabulary length, ``hash_buckets`` or ``num_buckets``.
    """

    ids: str
    key_type: str = ""
    vocabulary: pa.Array | None = None
    seed: int | None = None
    size: int = 0

    def __post_init__(self) -> None:
        if self.ids not in ID_KINDS:
            raise ValueError(f"table state: ids={self.ids!r} is not one of {ID_KINDS}")
        if self.ids == "vocabulary":
            if self.vocabulary is None:
                raise ValueError("table state: ids='vocabulary' needs a vocabulary")
            self.size = len(self.vocabulary)
        if self.ids == "hashing" and (self.seed is None or self.size < 1):
            raise ValueError("table state: ids='hashing' needs a seed and size >= 1")

    @property
    def num_embeddings(self) -> int:
        """Rows of the table: the value ids plus the missing and OOV rows."""
        return self.size + FIRST_VALUE_ID

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TableState):
            return NotImplemented
        same_vocab = (self.vocabulary is None and other.vocabulary is None) or (
            self.vocabulary is not None and other.vocabulary is not None and self.vocabulary.equals(other.vocabulary)
        )
        return same_vocab and (self.ids, self.key_type, self.seed, self.size) == (
            other.ids, other.key_type, other.seed, other.size,
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """Everything but the vocabulary, as JSON types."""
        out: dict[str, Any] = {"ids": self.ids, "key_type": self.key_type, "size": self.size}
        if self.seed is not None:
            out["seed"] = self.seed
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], name: str, vocabulary: pa.Array | None = None) -> TableState:
        """The state of table group ``name`` from :meth:`to_dict` and its vocabulary array."""
        key_type = data.get("key_type", "")
        if vocabulary is not None:
            allowed = {"int": (pa.int64(),), "str": (pa.large_string(), pa.string())}.get(key_type, ())
            if vocabulary.type not in allowed:
                raise ValueError(f"fitted state: table {name!r}: vocabulary of type {vocabulary.type} for key_type {key_type!r}")
            if vocabulary.null_count:
                raise ValueError(f"fitted state: table {name!r}: vocabulary holds {vocabulary.null_count} nulls")
        try:
            return cls(ids=data["ids"], key_type=key_type, vocabulary=vocabulary, seed=data.get("seed"), size=data.get("size", 0))
        except (KeyError, ValueError) as err:
            raise ValueError(f"fitted state: table {name!r}: {err}") from None


def inline_vocabulary(data: dict[str, Any], name: str) -> pa.Array | None:
    """The vocabulary a format 1 state holds inline as a JSON list (``None`` without one)."""
    values = data.get("vocabulary")
    if values is None:
        return None
    arrow_type = KEY_TYPES.get(data.get("key_type", ""), pa.large_string())
    try:
        return pa.array(values, type=arrow_type)
    except (pa.ArrowException, TypeError, OverflowError) as err:
        raise ValueError(f"fitted state: table {name!r}: vocabulary is not a list of {data.get('key_type')} values ({err})") from None


@dataclass
class NumericState:
    """Stats of one numeric feature after fill and ``log1p`` (when its transform has it).

    ``boundaries`` are the ``num_buckets - 1`` inner quantile cut points of a bucketized
    feature: value x falls in bucket ``searchsorted(boundaries, x, side="right")``.
    """

    mean: float = 0.0
    std: float = 1.0
    boundaries: list[float] = field(default_factory=list)
    count: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "boundaries": list(self.boundaries), "count": self.count}

    @classmethod
    def from_dict(cls, data: dict[str, Any], name: str) -> NumericState:
        try:
            state = cls(float(data["mean"]), float(data["std"]), [float(b) for b in data["boundaries"]], int(data["count"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"fitted state: numeric feature {name!r}: bad stats {data!r} ({err})") from None
        if not (math.isfinite(state.mean) and math.isfinite(state.std) and state.std > 0):
            raise ValueError(f"fitted state: numeric feature {name!r}: mean {state.mean} and std {state.std} must be finite, std > 0")
        if not all(map(math.isfinite, state.boundaries)) or state.boundaries != sorted(state.boundaries):
            raise ValueError(f"fitted state: numeric feature {name!r}: bucket boundaries {state.boundaries} must be finite and sorted")
        return state


@dataclass
class FittedState:
    """The fitted state of a pipeline.

    Attributes:
        schema_fingerprint: :meth:`recsys_embed.features.Schema.fingerprint` of the schema.
        tables: table group -> :class:`TableState`.
        numeric: numeric feature name -> :class:`NumericState`.
        rows: rows seen by the fit.
    """

    schema_fingerprint: str
    tables: dict[str, TableState] = field(default_factory=dict)
    numeric: dict[str, NumericState] = field(default_factory=dict)
    rows: int = 0

    @property
    def num_embeddings(self) -> dict[str, int]:
        return {name: table.num_embeddings for name, table in self.tables.items()}

    def export_state(self) -> tuple[dict[str, pa.Array], dict[str, Any]]:
        """``(arrays, config)``: the vocabularies by ``vocabulary.<table group>``, the rest as JSON types."""
        arrays = {f"{VOCABULARY}{name}": t.vocabulary for name, t in self.tables.items() if t.vocabulary is not None}
        config = {
            "format_version": FORMAT_VERSION,
            "schema_fingerprint": self.schema_fingerprint,
            "rows": self.rows,
            "tables": {name: t.to_dict() for name, t in self.tables.items()},
            "numeric": {name: n.to_dict() for name, n in self.numeric.items()},
        }
        return arrays, config

    @classmethod
    def from_state(cls, arrays: Mapping[str, pa.Array], config: dict[str, Any]) -> FittedState:
        """The state :meth:`export_state` gave ``(arrays, config)``, or a format 1 ``config``
        (vocabularies inline, ``arrays`` empty)."""
        if not isinstance(config, dict) or "schema_fingerprint" not in config:
            raise ValueError("fitted state: expected a mapping with 'schema_fingerprint', 'tables' and 'numeric'")
        version = config.get("format_version", FORMAT_VERSION)
        if type(version) is not int or version not in (1, FORMAT_VERSION):  # JSON true equals 1 in Python, and is no version
            raise ValueError(f"fitted state: format_version {version!r} is not supported (this library reads 1 and {FORMAT_VERSION})")
        tables = {}
        for name, data in config.get("tables", {}).items():
            if version == 1:
                vocabulary = inline_vocabulary(data, name)
            elif data.get("ids") == "vocabulary" and f"{VOCABULARY}{name}" not in arrays:
                raise ValueError(f"fitted state: table {name!r}: its vocabulary array {VOCABULARY + name!r} is missing")
            else:
                vocabulary = arrays.get(f"{VOCABULARY}{name}")
            tables[name] = TableState.from_dict(data, name, vocabulary)
        return cls(
            schema_fingerprint=str(config["schema_fingerprint"]),
            tables=tables,
            numeric={name: NumericState.from_dict(n, name) for name, n in config.get("numeric", {}).items()},
            rows=int(config.get("rows", 0)),
        )

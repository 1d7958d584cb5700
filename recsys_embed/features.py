"""The schema: one list of feature specs that describes every model input.

A :class:`Schema` names the label, the optional group column (e.g. ``user_id`` for GAUC)
and one :class:`FeatureSpec` per input. It round-trips through JSON and travels inside
every saved artifact, so scoring uses exactly the training vocabularies.

Id layout of every categorical or sequence feature (fitted by ``recsys_embed.pipelines``):
``0`` is missing (null), ``1`` is out-of-vocabulary, ``2..`` are fitted values (vocabulary)
or hash buckets (hashing). An unseen value never maps to another value's id.

Example::

    >>> schema = Schema(features=[
    ...     FeatureSpec("item_id", embedding_dim=16),
    ...     FeatureSpec("hist_item_id", kind="sequence", table="item_id", max_len=50),
    ...     FeatureSpec("price", kind="numeric", transform="log1p_standardize"),
    ... ])
    >>> Schema.from_json(schema.to_json()) == schema
    True
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any

MISSING_ID = 0
OOV_ID = 1
FIRST_VALUE_ID = 2


class FeatureKind(str, Enum):
    CATEGORICAL = "categorical"
    NUMERIC = "numeric"
    SEQUENCE = "sequence"


class IdStrategy(str, Enum):
    VOCABULARY = "vocabulary"
    HASHING = "hashing"


class NumericTransform(str, Enum):
    NONE = "none"
    LOG1P = "log1p"
    STANDARDIZE = "standardize"
    LOG1P_STANDARDIZE = "log1p_standardize"
    BUCKETIZE = "bucketize"


@dataclass
class FeatureSpec:
    """One model input.

    Args:
        name: feature name, unique in the schema; the key in batches and embeddings.
        kind: ``categorical`` (one id per row), ``numeric`` (one float per row) or
            ``sequence`` (a list of ids per row, most recent last).
        source: column in the data; defaults to ``name``.
        ids: ``vocabulary`` (fitted, with ``min_count``/``max_size``) or ``hashing``
            (``hash_buckets`` buckets, salted by ``salt``, stable across versions).
        table: table group: features with the same ``table`` share a vocabulary and an
            embedding table (``hist_item_id`` with ``table="item_id"``). Defaults to ``name``.
        max_len: sequences keep their most recent ``max_len`` ids.
        delimiter: sequences stored as delimited strings are split on it.
        transform: numeric transform; ``bucketize`` turns the value into ``num_buckets``
            quantile bucket ids and the feature is embedded like a categorical one.
        fill_value: numeric value used for nulls (before the transform).
    """

    name: str
    kind: FeatureKind = FeatureKind.CATEGORICAL
    source: str | None = None
    ids: IdStrategy = IdStrategy.VOCABULARY
    min_count: int = 1
    max_size: int | None = None
    hash_buckets: int = 0
    salt: str = ""
    embedding_dim: int = 16
    table: str | None = None
    max_len: int = 0
    delimiter: str | None = None
    transform: NumericTransform = NumericTransform.NONE
    num_buckets: int = 0
    fill_value: float = 0.0

    def __post_init__(self) -> None:
        self.kind = _enum(FeatureKind, self.kind, self.name, "kind")
        self.ids = _enum(IdStrategy, self.ids, self.name, "ids")
        self.transform = _enum(NumericTransform, self.transform, self.name, "transform")
        self.source = self.source or self.name
        self.table = self.table or self.name
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"feature name must be a non-empty string, got {self.name!r}")
        if self.embedding_dim <= 0:
            raise ValueError(f"feature {self.name!r}: embedding_dim must be > 0, got {self.embedding_dim}")
        if self.kind is FeatureKind.SEQUENCE and self.max_len <= 0:
            raise ValueError(f"sequence feature {self.name!r}: set max_len > 0 (e.g. max_len=50)")
        if self.ids is IdStrategy.HASHING and self.is_sparse and self.hash_buckets <= 0:
            raise ValueError(f"feature {self.name!r}: ids='hashing' needs hash_buckets > 0")
        if self.transform is NumericTransform.BUCKETIZE and self.num_buckets < 2:
            raise ValueError(f"feature {self.name!r}: transform='bucketize' needs num_buckets >= 2")
        if self.min_count < 1:
            raise ValueError(f"feature {self.name!r}: min_count must be >= 1, got {self.min_count}")

    @property
    def is_sparse(self) -> bool:
        """True when the feature reaches the model through an embedding table."""
        return self.kind is not FeatureKind.NUMERIC or self.transform is NumericTransform.BUCKETIZE

    @property
    def is_sequence(self) -> bool:
        return self.kind is FeatureKind.SEQUENCE

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("kind", "ids", "transform"):
            out[key] = out[key].value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        known = {f.name for f in fields(cls)}
        name = data.get("name", "<unnamed>")
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"feature {name!r}: unknown key(s) {unknown}; expected some of {sorted(known)}"
            )
        if "name" not in data:
            raise ValueError(f"feature spec {data!r} has no 'name'")
        return cls(**data)


def _enum(enum_type: type[Enum], value: Any, feature: str, key: str) -> Any:
    try:
        return enum_type(value)
    except ValueError:
        allowed = [m.value for m in enum_type]  # type: ignore[attr-defined]
        raise ValueError(f"feature {feature!r}: {key}={value!r} is not one of {allowed}") from None


@dataclass
class Schema:
    """All model inputs, the label and the group column, in a fixed order.

    ``sparse_features`` (categorical, sequence, bucketized numeric) become the keys of the
    batch's ``KeyedJaggedTensor`` in schema order; ``dense_features`` the columns of its
    dense tensor.
    """

    features: list[FeatureSpec] = field(default_factory=list)
    label: str | None = "label"
    group: str | None = None

    def __post_init__(self) -> None:
        self.features = [f if isinstance(f, FeatureSpec) else FeatureSpec.from_dict(f) for f in self.features]
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"schema: duplicate feature name(s) {dupes}")
        by_table: dict[str, FeatureSpec] = {}
        for spec in self.sparse_features:
            owner = by_table.setdefault(spec.table, spec)
            if owner.embedding_dim != spec.embedding_dim or owner.ids != spec.ids:
                raise ValueError(
                    f"features {owner.name!r} and {spec.name!r} share table {spec.table!r} but differ in "
                    "embedding_dim or ids; a table group needs one dim and one id strategy"
                )

    def __getitem__(self, name: str) -> FeatureSpec:
        for spec in self.features:
            if spec.name == name:
                return spec
        raise KeyError(f"schema has no feature {name!r}; it has {[f.name for f in self.features]}")

    @property
    def sparse_features(self) -> list[FeatureSpec]:
        return [f for f in self.features if f.is_sparse]

    @property
    def dense_features(self) -> list[FeatureSpec]:
        return [f for f in self.features if not f.is_sparse]

    @property
    def tables(self) -> dict[str, list[FeatureSpec]]:
        """Table group name -> the sparse features that read it, in schema order."""
        groups: dict[str, list[FeatureSpec]] = {}
        for spec in self.sparse_features:
            groups.setdefault(spec.table, []).append(spec)  # type: ignore[arg-type]
        return groups

    @property
    def source_columns(self) -> list[str]:
        cols = [f.source for f in self.features]
        cols += [c for c in (self.label, self.group) if c]
        return list(dict.fromkeys(cols))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return {"features": [f.to_dict() for f in self.features], "label": self.label, "group": self.group}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schema:
        unknown = sorted(set(data) - {"features", "label", "group"})
        if unknown:
            raise ValueError(f"schema: unknown key(s) {unknown}; expected 'features', 'label', 'group'")
        if not isinstance(data.get("features"), list):
            raise ValueError("schema: 'features' must be a list of feature specs")
        return cls(
            features=[FeatureSpec.from_dict(f) for f in data["features"]],
            label=data.get("label", "label"),
            group=data.get("group"),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Schema:
        return cls.from_dict(json.loads(text))

    def summary(self) -> str:
        """A readable table: one line per feature."""
        head = f"{'feature':<20} {'kind':<12} {'source':<20} {'ids':<11} {'table':<16} {'dim':>4} {'max_len':>7}"
        lines = [head, "-" * len(head)]
        for f in self.features:
            ids = f.ids.value if f.is_sparse else f.transform.value
            lines.append(
                f"{f.name:<20} {f.kind.value:<12} {f.source:<20} {ids:<11} {f.table if f.is_sparse else '-':<16} "
                f"{f.embedding_dim if f.is_sparse else '-':>4} {f.max_len or '-':>7}"
            )
        lines.append(f"label={self.label!r} group={self.group!r}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Schema(\n{self.summary()}\n)"

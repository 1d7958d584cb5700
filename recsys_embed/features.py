"""The schema: one list of feature specs that describes every model input.

A :class:`Schema` names the label, the optional group column (e.g. ``user_id`` for GAUC)
and one :class:`FeatureSpec` per input. It round-trips through JSON and travels inside
every saved artifact, so scoring uses exactly the training vocabularies.

Id layout of every categorical or sequence feature (fitted by ``recsys_embed.pipelines``):
``0`` is missing (null, or an empty string), ``1`` is out-of-vocabulary, ``2..`` are fitted
values (vocabulary) or hash buckets (hashing). An unseen value never maps to another value's id.

Example::

    >>> schema = Schema(features=[
    ...     FeatureSpec("item_id", embedding_dim=16),
    ...     FeatureSpec("hist_item_id", kind="sequence", table="item_id", max_len=50),
    ...     FeatureSpec("price", kind="numeric", transform="log1p_standardize"),
    ... ])
    >>> Schema.from_json(schema.to_json()) == schema
    True

Schemas are also written by hand in YAML or TOML (:meth:`Schema.load` picks the format by
suffix); every key is checked and an error names the file, the feature and what was expected::

    >>> Schema.from_yaml('''
    ... label: click
    ... features:
    ...   - {name: item_id, ids: hashing, hash_buckets: 1000}
    ...   - {name: hist_item_id, kind: sequence, table: item_id, max_len: 20, ids: hashing, hash_buckets: 1000}
    ... ''').tables["item_id"][1].name
    'hist_item_id'
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any

import yaml

from recsys_embed.errors import ConfigTypeError
from recsys_embed.yaml_strict import describe, load_yaml

MISSING_ID = 0
OOV_ID = 1
FIRST_VALUE_ID = 2
DTYPES = {"string": "str", "int": "int"}  # a feature's dtype -> the key type of its table group


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
        salt: hashing salt; defaults to the table group name. Features of one table group
            share it (and ``hash_buckets``, ``min_count``, ``max_size``): they share one id space.
        table: table group: features with the same ``table`` share a vocabulary and an
            embedding table (``hist_item_id`` with ``table="item_id"``). Defaults to ``name``.
        max_len: sequences keep their most recent ``max_len`` ids.
        delimiter: sequences stored as delimited strings are split on it.
        transform: numeric transform; ``bucketize`` turns the value into ``num_buckets``
            quantile bucket ids and the feature is embedded like a categorical one.
        fill_value: numeric value used for nulls (before the transform).
        dtype: the id type of a categorical or sequence feature's values, ``string`` or
            ``int``; unset, the fitted data's column type decides (integers if any column of
            the group holds integers). Set ``string`` so a pipeline fitted on Parquet integers
            and applied to CSV strings (or the reverse) gives the same ids and ``"02139-4307"``
            is OOV in both; ``int`` reads ``"007"`` and ``7`` as one value.
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
    dtype: str | None = None

    def __post_init__(self) -> None:
        _check_field_types(self)
        self.kind = _enum(FeatureKind, self.kind, self.name, "kind")
        self.ids = _enum(IdStrategy, self.ids, self.name, "ids")
        self.transform = _enum(NumericTransform, self.transform, self.name, "transform")
        self.source = self.source or self.name
        self.table = self.table or self.name
        self.salt = self.salt or self.table
        if not self.name:
            raise ValueError("feature name must be a non-empty string")
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
        if self.max_size is not None and self.max_size < 1:
            raise ValueError(f"feature {self.name!r}: max_size must be >= 1 or None, got {self.max_size}")
        if self.kind is not FeatureKind.SEQUENCE and (self.max_len or self.delimiter is not None):
            raise ValueError(
                f"feature {self.name!r}: max_len and delimiter are for sequence features; set kind='sequence' or drop them"
            )
        if self.ids is IdStrategy.VOCABULARY and self.hash_buckets:
            raise ValueError(f"feature {self.name!r}: hash_buckets is set but ids='vocabulary'; set ids='hashing'")
        if self.kind is not FeatureKind.NUMERIC and self.transform is not NumericTransform.NONE:
            raise ValueError(f"feature {self.name!r}: transform={self.transform.value!r} needs kind='numeric'")
        if self.dtype is not None and (self.dtype not in DTYPES or not self.is_sparse or self.kind is FeatureKind.NUMERIC):
            raise ValueError(
                f"feature {self.name!r}: dtype={self.dtype!r}; expected one of {sorted(DTYPES)} on a categorical or sequence feature"
            )
        if self.num_buckets and self.transform is not NumericTransform.BUCKETIZE:
            raise ValueError(f"feature {self.name!r}: num_buckets is set but transform is not 'bucketize'")

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
        if out["dtype"] is None:
            del out["dtype"]  # unset: schemas (and their fingerprints) saved before it existed still match
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        if not isinstance(data, dict):
            raise ValueError(f"feature spec must be a mapping with at least 'name', got {data!r}")
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


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,), "source": (str, type(None)), "min_count": (int,), "max_size": (int, type(None)),
    "hash_buckets": (int,), "salt": (str,), "embedding_dim": (int,), "table": (str, type(None)),
    "max_len": (int,), "delimiter": (str, type(None)), "num_buckets": (int,), "fill_value": (int, float),
    "dtype": (str, type(None)),
}  # fmt: skip


def _check_field_types(spec: FeatureSpec) -> None:
    for key, allowed in _FIELD_TYPES.items():
        value = getattr(spec, key)
        if isinstance(value, bool) or not isinstance(value, allowed):
            expected = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
            raise ConfigTypeError(f"feature {spec.name!r}: {key} must be {expected}, got {value!r} ({type(value).__name__})")


_SHARED_BY_TABLE = ("embedding_dim", "ids", "hash_buckets", "salt", "min_count", "max_size", "dtype")


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
        self.label = self.label or None
        self.group = self.group or None
        for key in ("label", "group"):
            if not isinstance(getattr(self, key), (str, type(None))):
                raise ConfigTypeError(f"schema: {key} must be a column name or null, got {getattr(self, key)!r}")
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"schema: duplicate feature name(s) {dupes}")
        by_table: dict[str, FeatureSpec] = {}
        for spec in self.sparse_features:
            owner = by_table.setdefault(spec.table, spec)  # type: ignore[arg-type]
            if owner is spec:
                continue
            if NumericTransform.BUCKETIZE in (owner.transform, spec.transform):
                raise ValueError(
                    f"features {owner.name!r} and {spec.name!r} share table {spec.table!r}, but a bucketized "
                    "numeric feature needs a table of its own (its ids are its buckets)"
                )
            for key in _SHARED_BY_TABLE:
                a, b = getattr(owner, key), getattr(spec, key)
                if a != b:
                    show = (lambda v: v.value if isinstance(v, Enum) else v)  # noqa: E731
                    raise ValueError(
                        f"features {owner.name!r} and {spec.name!r} share table {spec.table!r} but differ in "
                        f"{key} ({show(a)!r} vs {show(b)!r}); features of a table group share one id space, "
                        f"so set the same {key} on both"
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
        features = []
        for index, spec in enumerate(data["features"]):
            try:
                features.append(FeatureSpec.from_dict(spec))
            except (ValueError, TypeError) as err:
                raise _same_kind(err)(f"schema: features[{index}]: {err}") from None
        return cls(
            features=features,
            label=data.get("label", "label"),
            group=data.get("group"),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Schema:
        return cls.from_dict(_mapping(json.loads(text), "JSON"))

    @classmethod
    def from_yaml(cls, text: str) -> Schema:
        """A schema from YAML text with the keys of :meth:`to_dict`."""
        try:
            data = load_yaml(text)
        except yaml.YAMLError as err:
            raise ValueError(f"schema: invalid YAML: {describe(err)}") from None
        return cls.from_dict(_mapping(data, "YAML"))

    @classmethod
    def from_toml(cls, text: str) -> Schema:
        """A schema from TOML text: top-level ``label``/``group`` and one ``[[features]]`` table per
        feature. TOML has no null: leave ``group`` out, or write ``label = ""`` for no label."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"schema: invalid TOML: {err}") from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Schema:
        """Read a schema file; the format follows the suffix (.json, .yaml/.yml, .toml)."""
        path = Path(path)
        readers = {".json": cls.from_json, ".yaml": cls.from_yaml, ".yml": cls.from_yaml, ".toml": cls.from_toml}
        reader = readers.get(path.suffix.lower())
        if reader is None:
            raise ValueError(f"schema file {path}: unknown suffix {path.suffix!r}; expected one of {sorted(readers)}")
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise ValueError(f"schema file {path}: cannot read it ({err.strerror})") from None
        try:
            return reader(text)
        except (ValueError, TypeError) as err:
            raise _same_kind(err)(f"schema file {path}: {err}") from None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the schema as JSON or YAML (by suffix), atomically (temp file + rename)."""
        path = Path(path)
        if path.suffix.lower() == ".json":
            text = self.to_json()
        elif path.suffix.lower() in (".yaml", ".yml"):
            text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        else:
            raise ValueError(f"schema file {path}: can write .json, .yaml or .yml, not {path.suffix!r}")
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        return path

    def fingerprint(self) -> str:
        """SHA-256 (hex) of everything a fitted pipeline depends on: the schema without the
        embedding dims. A fitted state records it; a state from another schema is refused."""
        data = self.to_dict()
        for spec in data["features"]:
            del spec["embedding_dim"]
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

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


def _mapping(data: Any, fmt: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError(f"schema: the {fmt} document must be a mapping with 'features', got {type(data).__name__}")
    return data


def _same_kind(err: Exception) -> type[Exception]:
    """The error type to re-raise ``err`` with more context: its own, except that a bare
    ``TypeError`` becomes a :class:`ConfigTypeError` (still a ``TypeError``, and a ``ValueError``
    the CLI reports in one line)."""
    return ConfigTypeError if isinstance(err, TypeError) and not isinstance(err, ValueError) else type(err)

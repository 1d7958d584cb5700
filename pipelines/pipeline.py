"""The columnar feature pipeline: fit once, then stream any source to model batches.

    >>> import tempfile, pathlib, pyarrow as pa, pyarrow.parquet as pq
    >>> from recsys_embed.features import FeatureSpec, Schema
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> pq.write_table(pa.table({
    ...     "item_id": [10, 11, 10, None], "hist": [[10, 11], [], [11, 11, 12], None],
    ...     "price": [1.0, 3.0, None, 7.0], "label": [1, 0, 0, 1]}), folder / "train.parquet")
    >>> schema = Schema([
    ...     FeatureSpec("item_id"),
    ...     FeatureSpec("hist", kind="sequence", table="item_id", max_len=2),
    ...     FeatureSpec("price", kind="numeric", transform="log1p_standardize")])
    >>> pipe = Pipeline(schema).fit(folder)
    >>> pipe.state.tables["item_id"].vocabulary.to_pylist()  # 10 and 11 seen 3 times (tie: by value), 12 once
    [10, 11, 12]
    >>> pipe.num_embeddings
    {'item_id': 5}
    >>> next(pipe.transform(folder)).column("hist").to_pylist()  # ids; only the 2 most recent kept
    [[2, 3], [], [3, 4], []]
    >>> batch = next(iter(pipe.batches(folder, batch_size=4)))
    >>> batch.sparse.keys(), batch.dense.shape, batch.labels.tolist()
    (['item_id', 'hist'], torch.Size([4, 1]), [1.0, 0.0, 0.0, 1.0])
    >>> pipe.save(folder / "pipeline") and Pipeline.load(folder / "pipeline").state == pipe.state
    True
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from recsys_embed.artifacts import load_arrays, load_artifact, save_artifact
from recsys_embed.features import Schema
from recsys_embed.pipelines.batching import BatchStream, encode_shards
from recsys_embed.pipelines.encode import GROUP_COLUMN, LABEL_COLUMN, Encoder
from recsys_embed.pipelines.fit import MIN_COVERAGE, fit_state
from recsys_embed.pipelines.sources import Source, shards_of
from recsys_embed.pipelines.state import FittedState

FORMAT = "recsys-embed-pipeline"


class Pipeline:
    """Schema + fitted state: turns Parquet/CSV/TSV data into model inputs.

    Args:
        schema: the features, label and group column.
        state: a fitted state (from :meth:`fit`, :meth:`load` or :meth:`from_state`); it must
            have been fitted for this schema (same :meth:`Schema.fingerprint`).
    """

    def __init__(self, schema: Schema, state: FittedState | None = None) -> None:
        if not isinstance(schema, Schema):
            raise TypeError(f"Pipeline needs a Schema, got {type(schema).__name__}")
        for reserved, role in ((LABEL_COLUMN, schema.label), (GROUP_COLUMN, schema.group)):
            if role and reserved in {f.name for f in schema.features}:
                raise ValueError(
                    f"feature name {reserved!r} is reserved for the {reserved} column of encoded batches; rename the feature"
                )
        self.schema = schema
        self._state: FittedState | None = None
        if state is not None:
            self._check(state)
            self._state = state
        self._encoders: dict[bool, Encoder] = {}

    def _check(self, state: FittedState, where: str = "fitted state") -> None:
        if state.schema_fingerprint != self.schema.fingerprint():
            raise ValueError(
                f"{where} was fitted for another schema (fingerprint {state.schema_fingerprint[:12]}... vs "
                f"{self.schema.fingerprint()[:12]}... of this one); refit the pipeline on this schema"
            )

    @property
    def fitted(self) -> bool:
        return self._state is not None

    @property
    def state(self) -> FittedState:
        if self._state is None:
            raise ValueError("the pipeline is not fitted; call fit(source) or Pipeline.load(path)")
        return self._state

    @property
    def num_embeddings(self) -> dict[str, int]:
        """Table group -> rows: vocabulary size + 2, hash_buckets + 2 or num_buckets + 2."""
        return self.state.num_embeddings

    def fit(
        self, source: Source, progress: bool = False, batch_rows: int = 262_144, min_coverage: float = MIN_COVERAGE
    ) -> Pipeline:
        """Learn vocabularies and numeric stats in one streaming pass; returns ``self``. Warns
        when a table group's vocabulary keeps less than ``min_coverage`` of the values seen
        (see :func:`~recsys_embed.pipelines.fit.fit_state`)."""
        self._state = fit_state(self.schema, shards_of(source), batch_rows, progress, min_coverage)
        self._encoders.clear()
        return self

    def encoder(self, labels: bool = True) -> Encoder:
        """The record-batch encoder of the fitted state (``labels=False``: no label column read)."""
        self._check(self.state)
        if labels not in self._encoders:
            self._encoders[labels] = Encoder(self.schema, self.state, labels=labels)
        return self._encoders[labels]

    def transform(self, source: Source, batch_rows: int = 65_536, labels: bool = True) -> Iterator[pa.RecordBatch]:
        """Encoded record batches of at most ``batch_rows`` rows, in source order: sparse
        features as int64 ids or list<int64>, dense features float32, ``label`` float32 and
        ``group`` int64. ``labels=False`` reads unlabelled data (no ``label`` column)."""
        return encode_shards(self.encoder(labels), shards_of(source), batch_rows)

    def batches(
        self,
        source: Source,
        batch_size: int = 4096,
        shuffle: bool = False,
        shuffle_buffer: int = 262_144,
        seed: int = 0,
        drop_last: bool = False,
        num_workers: int = 0,
        labels: bool = True,
    ) -> BatchStream:
        """A re-iterable :class:`BatchStream` of :class:`recsys_embed.batch.Batch` (one pass per
        epoch; with ``shuffle`` a new order per epoch drawn from ``seed`` and the epoch)."""
        return BatchStream(
            self.encoder(labels), shards_of(source), batch_size=batch_size, shuffle=shuffle,
            shuffle_buffer=shuffle_buffer, seed=seed, drop_last=drop_last, num_workers=num_workers,
        )  # fmt: skip

    def export_state(self) -> tuple[dict[str, pa.Array], dict[str, Any]]:
        """``(arrays, config)``: the vocabularies as Arrow arrays, schema and the rest of the
        fitted state as JSON types (what :meth:`save` and model artifacts store)."""
        arrays, state = self.state.export_state()
        return arrays, {"format": FORMAT, "schema": self.schema.to_dict(), "state": state}

    @classmethod
    def from_state(cls, arrays: Mapping[str, pa.Array], config: dict[str, Any], where: str = "pipeline") -> Pipeline:
        """The pipeline :meth:`export_state` gave ``(arrays, config)`` (or a format 1 config)."""
        if not isinstance(config, dict) or config.get("format") != FORMAT or "schema" not in config or "state" not in config:
            raise ValueError(f"{where}: not a saved pipeline (expected a mapping with format={FORMAT!r}, 'schema', 'state')")
        pipeline = cls(Schema.from_dict(config["schema"]))
        state = FittedState.from_state(arrays, config["state"])
        pipeline._check(state, where)
        pipeline._state = state
        return pipeline

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write schema + fitted state to the artifact directory ``path``, atomically
        (``recsys_embed.artifacts``: vocabularies as arrays, the rest in the JSON manifest)."""
        arrays, config = self.export_state()
        return save_artifact(path, {}, {"pipeline": config}, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Pipeline:
        """Read the pipeline of an artifact directory (written by :meth:`save` or
        ``save_model``), or a JSON pipeline file of format 1 (written by earlier versions)."""
        if Path(path).is_dir():
            _, manifest = load_artifact(path)
            if "pipeline" not in manifest:
                raise ValueError(f"artifact {path}: manifest has no 'pipeline'; it holds no fitted pipeline")
            return cls.from_state(load_arrays(path, manifest), manifest["pipeline"], where=f"artifact {path}")
        try:
            with open(path, encoding="utf-8") as src:
                data = json.load(src)
        except OSError as err:
            raise ValueError(f"{path}: cannot read the pipeline ({err.strerror})") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not a JSON pipeline file ({err})") from None
        return cls.from_state({}, data, where=str(path))

    def __repr__(self) -> str:
        fitted = f"fitted on {self.state.rows} rows, tables {self.num_embeddings}" if self.fitted else "not fitted"
        return f"Pipeline({len(self.schema.features)} features, {fitted})"


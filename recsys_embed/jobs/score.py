"""Batch scoring of a saved CTR model: :class:`Scorer` (Arrow rows in, click probabilities
out) and :class:`ScoreJob` (one Parquet file in, one out; run by ``score_files.run_local`` or
``score_ray.run_ray``).

Rows go through the artifact's own fitted pipeline: its vocabularies, hash salts and numeric
stats (nothing is refit; an unseen category gets the OOV id, a null the schema's rule: id 0
for categorical features, ``fill_value`` for numeric ones), then the model in eval mode under
``torch.no_grad()`` (not ``inference_mode``, whose tensors break gloo collectives when the
model is sharded). A score is ``sigmoid(logit)``, float32.

    scorer = Scorer.from_artifact("runs/demo/model")
    scores = scorer.score_table(pyarrow_table)          # pa.Array [N] float32
    for scores in scorer.score_batches(record_batches):  # one array per batch
        ...
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from recsys_embed.batch import Batch
from recsys_embed.features import Schema
from recsys_embed.jobs.model_io import load_model
from recsys_embed.jobs.ranking_model import RankingModel
from recsys_embed.jobs.score_files import InputFile, SchemaMismatch
from recsys_embed.pipelines import Pipeline
from recsys_embed.pipelines.batching import to_batch
from recsys_embed.pipelines.columns import Where, check_type
from recsys_embed.pipelines.encode import Encoder
from recsys_embed.pipelines.prefetch import prefetch

if TYPE_CHECKING:
    import ray.data

    from recsys_embed.jobs.score_ray import RayOptions

SCORE_COLUMN = "score"


def artifact_fingerprint(path: str | Path) -> str:
    """sha256 over the names and bytes of every file of an artifact directory (manifest,
    tensors and whatever else its format holds): changes with any byte of the model."""
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(path).iterdir() if p.is_file()):
        digest.update(file.name.encode() + b"\0")
        with open(file, "rb") as src:
            for block in iter(lambda: src.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class Scorer:
    """A CTR model with its fitted pipeline as a function of Arrow rows (see the module docstring)."""

    def __init__(self, pipeline: Pipeline, model: RankingModel, fingerprint: str = "") -> None:
        self.schema = Schema(pipeline.schema.features, label=None, group=None)  # scoring reads features only
        self.encoder = Encoder(self.schema, pipeline.state, labels=False)
        self.model = model.eval()
        self.fingerprint = fingerprint
        self.columns = list(dict.fromkeys(f.source for f in self.schema.features))  # type: ignore[misc]

    @classmethod
    def from_artifact(cls, path: str | Path) -> Scorer:
        """Load an artifact written by ``save_model`` (never unpickles; a corrupt or tampered
        artifact is a ``ValueError``)."""
        loaded = load_model(path)
        return cls(loaded.pipeline, loaded.model, artifact_fingerprint(path))

    def check(self, schema: pa.Schema) -> list[str]:
        """Every missing or mistyped feature column of ``schema``; empty when it fits."""
        missing = [c for c in self.columns if c not in schema.names]
        problems = [f"missing column(s) {missing}"] if missing else []
        for spec in self.schema.features:
            if spec.source in schema.names:
                try:
                    check_type(spec, schema.field(spec.source).type, Where("", spec.source))  # type: ignore[arg-type]
                except TypeError as err:
                    problems.append(str(err).removeprefix(": "))
        return problems

    def score_table(self, rows: pa.Table | pa.RecordBatch) -> pa.Array:
        """Click probabilities ``[rows.num_rows]`` float32 of a table or record batch holding
        the model's feature columns (others are ignored)."""
        problems = self.check(rows.schema)
        if problems:
            raise SchemaMismatch("the rows do not fit the model's schema: " + "; ".join(problems))
        batches = rows.to_batches() if isinstance(rows, pa.Table) else [rows]
        scores = [self.forward(self.encode(batch)) for batch in batches]
        return pa.concat_arrays(scores) if scores else pa.array([], pa.float32())

    def score_batches(self, batches: Iterable[pa.RecordBatch | pa.Table]) -> Iterator[pa.Array]:
        """:meth:`score_table` of each batch, lazily (e.g. inside another engine's map over Arrow batches)."""
        for batch in batches:
            yield self.score_table(batch)

    def encode(self, batch: pa.RecordBatch, source: str = "<rows>", first_row: int = 0) -> Batch:
        """Source columns to a model :class:`Batch` through the fitted pipeline (``source`` and
        ``first_row`` name the rows in errors)."""
        return to_batch(self.encoder(batch, source, first_row), self.schema)

    @torch.no_grad()
    def forward(self, batch: Batch) -> pa.Array:
        """``sigmoid(model(batch))``: ``[B]`` float32."""
        return pa.array(torch.sigmoid(self.model(batch)).numpy())


class ScoreJob:
    """The ``score`` job: each input row's ``keep`` columns (as read) and its ``score``."""

    def __init__(self, scorer: Scorer, keep: Sequence[str] = (), artifact: str | Path | None = None) -> None:
        if SCORE_COLUMN in keep:
            raise ValueError(f"--keep {SCORE_COLUMN!r}: the output's {SCORE_COLUMN!r} column is the model's; rename the input column")
        self.scorer, self.keep, self.artifact = scorer, list(keep), artifact
        self.fingerprint = scorer.fingerprint
        self.settings: dict[str, Any] = {"job": "score", "keep": self.keep}
        self.columns = list(dict.fromkeys([*scorer.columns, *self.keep]))

    @classmethod
    def from_artifact(cls, path: str | Path, keep: Sequence[str] = ()) -> ScoreJob:
        return cls(Scorer.from_artifact(path), keep, path)

    def check(self, schema: pa.Schema) -> list[str]:
        missing = [c for c in self.keep if c not in schema.names]
        return self.scorer.check(schema) + ([f"missing --keep column(s) {missing}"] if missing else [])

    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        return pa.schema([pa.field(k, schema.field(k).type) for k in self.keep] + [pa.field(SCORE_COLUMN, pa.float32())])

    def output_rows(self, item: InputFile) -> int:
        return item.rows

    def output(self, rows: pa.RecordBatch | pa.Table, scores: pa.Array) -> pa.RecordBatch:
        """The output rows of input ``rows`` and their ``scores``."""
        columns = [rows.column(k) for k in self.keep]
        if isinstance(rows, pa.Table):
            columns = [c.combine_chunks() for c in columns]
        return pa.RecordBatch.from_arrays([*columns, scores], names=[*self.keep, SCORE_COLUMN])

    def outputs(self, path: Path, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """Stream ``path`` by row groups, reading only the needed columns; reading and encoding
        run ahead in threads (Parquet decoding and most of the encoding release the GIL)."""
        reader = pq.ParquetFile(path, page_checksum_verification=True).iter_batches(batch_size=batch_rows, columns=self.columns)
        encoded = prefetch(((batch, self.scorer.encode(batch, str(path), row)) for row, batch in _numbered(prefetch(reader))))
        for batch, model_batch in encoded:
            yield self.output(batch, self.scorer.forward(model_batch))

    def ray_dataset(self, paths: list[str], options: RayOptions, batch_rows: int) -> ray.data.Dataset:
        """Ray Data: ``read_parquet`` (with the path of each row) -> :class:`ScorerActor` s."""
        import pyarrow.fs
        import ray.data

        from recsys_embed.jobs.score_ray import ScorerActor

        dataset = ray.data.read_parquet(paths, include_paths=True, filesystem=pyarrow.fs.LocalFileSystem())
        return dataset.select_columns([*self.columns, "path"]).map_batches(
            ScorerActor, fn_constructor_kwargs={"make_job": functools.partial(ScoreJob.from_artifact, str(self.artifact), self.keep),
                                                "threads": options.actor_cpus},
            compute=ray.data.ActorPoolStrategy(size=options.actors), num_cpus=options.actor_cpus, batch_size=batch_rows, batch_format="pyarrow",
        )  # fmt: skip


def _numbered(batches: Iterable[pa.RecordBatch]) -> Iterator[tuple[int, pa.RecordBatch]]:
    """``(first row, batch)``."""
    row = 0
    for batch in batches:
        yield row, batch
        row += batch.num_rows

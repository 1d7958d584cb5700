"""The ``recommend`` job: top-k next items per user from a saved SASRec or BERT4Rec, one output per
events file, on the engines of :mod:`recsys_embed.jobs.score_files` (local) and
:mod:`recsys_embed.jobs.score_ray` (Ray Data).

Input: Parquet events with a user, an item and a timestamp column; each user's events lie in
one file (partition the events by user). A file's histories are built as in training
(:func:`~recsys_embed.pipelines.derived.user_sequences`: ordered by timestamp, ties in file order;
duplicate events and nulls dropped). The model reads each history's most recent ``max_len``
items; with ``exclude_history`` no item of the history is recommended. Item ids outside the
model's vocabulary are skipped (a history of only unknown items gets the non-personal ranking).

Output: the user column, ``items`` (raw item ids, best first; fewer than ``k`` when the
history excludes nearly every item) and ``scores`` (the model's logits, float32), one row per
user, sorted by user.

The coupling to the sequential model's artifact is :func:`load_topk` alone: anything with
``recommend(histories, k, exclude_history) -> (items, scores)`` plugs in.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from recsys_embed.jobs.score import artifact_fingerprint
from recsys_embed.jobs.score_files import InputFile
from recsys_embed.pipelines.columns import is_string, key_type_of
from recsys_embed.pipelines.derived import user_sequences

if TYPE_CHECKING:
    import ray.data

    from recsys_embed.jobs.score_ray import RayOptions

SCORE_CELLS = 1 << 22  # users x items scored per forward pass (16 MiB of float32)


class TopK(Protocol):
    item_type: pa.DataType  # of the raw item ids

    def recommend(self, histories: pl.Series, k: int, exclude_history: bool) -> tuple[pa.Array, pa.Array]:
        """Raw item ids (list per history, best first) and their scores (list<float32>)."""


class SequentialTopK:
    """Top-k with scores of a :class:`~recsys_embed.jobs.sequential.SequentialRecommender`,
    as Arrow lists of raw item ids, ``SCORE_CELLS`` users x items per forward pass."""

    def __init__(self, recommender: Any) -> None:
        self.recommender = recommender
        self.item_type = recommender.vocabulary.type

    def recommend(self, histories: pl.Series, k: int, exclude_history: bool) -> tuple[pa.Array, pa.Array]:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        step = max(1, SCORE_CELLS // self.recommender.model.rows)
        parts = [self.recommender.top_k(histories.slice(start, step), k, exclude_history) for start in range(0, len(histories), step)]
        best = torch.cat([b for b, _ in parts]).numpy() if parts else np.zeros((0, 0), np.float32)
        top = torch.cat([t for _, t in parts]).numpy() if parts else np.zeros((0, 0), np.int64)
        finite = np.isfinite(best)
        offsets = pa.array(np.r_[0, np.cumsum(finite.sum(1))].astype(np.int32))
        items = pa.ListArray.from_arrays(offsets, self.recommender.vocabulary.take(pa.array(top[finite])))
        return items, pa.ListArray.from_arrays(offsets, pa.array(best[finite]))


def load_topk(path: str | Path) -> TopK:
    """The recommender saved by the sequential job (``RUN_DIR/model``)."""
    from recsys_embed.jobs.sequential import load_sequential

    return SequentialTopK(load_sequential(path))


class RecommendJob:
    """The ``recommend`` job (see the module docstring)."""

    def __init__(self, topk: TopK, artifact: str | Path, k: int = 10, exclude_history: bool = False, user: str = "user_id",
                 item: str = "item_id", timestamp: str = "timestamp", fingerprint: str = "") -> None:  # fmt: skip
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.topk, self.artifact, self.fingerprint = topk, artifact, fingerprint
        self.k, self.exclude_history, self.user, self.item, self.timestamp = k, exclude_history, user, item, timestamp
        self.columns = [user, item, timestamp]
        self.settings: dict[str, Any] = {"job": "recommend", "k": k, "exclude_history": exclude_history, "columns": self.columns}

    @classmethod
    def from_artifact(cls, path: str | Path, **settings: Any) -> RecommendJob:
        return cls(load_topk(path), path, fingerprint=artifact_fingerprint(path), **settings)

    def check(self, schema: pa.Schema) -> list[str]:
        missing = [c for c in self.columns if c not in schema.names]
        problems = [f"missing column(s) {missing}"] if missing else []
        vocabulary = "str" if is_string(self.topk.item_type) else "int"
        if self.item in schema.names and key_type_of(schema.field(self.item).type) not in (vocabulary, None):
            problems.append(f"column {self.item!r} holds {schema.field(self.item).type}, but the model's item ids are {self.topk.item_type}")
        if self.user in schema.names and key_type_of(schema.field(self.user).type) is None:
            problems.append(f"column {self.user!r} holds {schema.field(self.user).type}; user ids are integers or strings")
        if self.timestamp in schema.names:
            t = schema.field(self.timestamp).type
            if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_temporal(t)):
                problems.append(f"column {self.timestamp!r} holds {t}; timestamps are numbers, dates or times")
        return problems

    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        return pa.schema([pa.field(self.user, schema.field(self.user).type), pa.field("items", pa.list_(self.topk.item_type)),
                          pa.field("scores", pa.list_(pa.float32()))])  # fmt: skip

    def output_rows(self, item: InputFile) -> None:
        return None  # one per user: known once the file is read

    def outputs(self, path: Path, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """Each user's history from the whole file, then ``batch_rows`` users at a time."""
        try:
            histories = user_sequences(pl.scan_parquet(path).select(self.columns), min_length=1,
                                       user=self.user, item=self.item, timestamp=self.timestamp)  # fmt: skip
        except pl.exceptions.PolarsError as err:
            raise ValueError(f"{path}: cannot read the events: {err}") from None
        schema = self.output_schema(pq.read_schema(path))
        for start in range(0, histories.height, batch_rows):
            chunk = histories.slice(start, batch_rows)
            items, scores = self.topk.recommend(chunk["items"], self.k, self.exclude_history)
            users = chunk[self.user].to_arrow().cast(schema.field(self.user).type)
            yield pa.RecordBatch.from_arrays([users, items, scores], schema=schema)

    def ray_dataset(self, paths: list[str], options: RayOptions, batch_rows: int) -> ray.data.Dataset:
        """Ray Data: the file paths -> :class:`~recsys_embed.jobs.score_ray.FileActor` s, a file per call."""
        import ray.data

        from recsys_embed.jobs.score_ray import FileActor

        make_job = functools.partial(RecommendJob.from_artifact, str(self.artifact), k=self.k, exclude_history=self.exclude_history,
                                     user=self.user, item=self.item, timestamp=self.timestamp)  # fmt: skip
        return ray.data.from_items([{"path": p} for p in paths]).map_batches(
            FileActor, fn_constructor_kwargs={"make_job": make_job, "threads": options.actor_cpus, "batch_rows": batch_rows},
            compute=ray.data.ActorPoolStrategy(size=options.actors), num_cpus=options.actor_cpus, batch_size=1,
            batch_format="pyarrow",
        )  # fmt: skip

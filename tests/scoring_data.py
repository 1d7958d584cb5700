"""Real artifacts and Parquet inputs for the batch-scoring tests (tests/test_score*.py).

The CTR model is built untrained from a fitted pipeline (scoring does not care how good it
is); the BERT4Rec model is trained for one epoch by the sequential job."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import torch

from recsys_embed.jobs.builders import build_model, build_tables, layout_for_model
from recsys_embed.jobs.model_io import save_model
from recsys_embed.jobs.ranking_model import RankingModel
from recsys_embed.jobs.sequential import SequentialConfig, train_sequential
from recsys_embed.models import BERT4RecConfig
from recsys_embed.pipelines import Pipeline
from recsys_embed.pipelines.synthetic.ctr import ctr_schema, write_ctr
from recsys_embed.pipelines.synthetic.seq import write_sequences
from recsys_embed.tables import TableOptimizer


def ctr_inputs(root: Path, files: int = 3, rows_per_file: int = 2000, row_group: int = 500) -> Path:
    """``files`` Parquet files of synthetic CTR rows under ``root/in``."""
    write_ctr(root / "raw", rows=files * rows_per_file, seed=0, row_group_size=row_group, overwrite=True, progress=False)
    table = pq.read_table(root / "raw")
    (root / "in").mkdir(parents=True, exist_ok=True)
    for i in range(files):
        pq.write_table(table.slice(i * rows_per_file, rows_per_file), root / "in" / f"part-{i}.parquet", row_group_size=row_group)
    return root / "in"


def ctr_artifact(root: Path, data: Path, model: str = "din", seed: int = 0) -> Path:
    """An (untrained) ``model`` on the pipeline fitted to ``data``, saved to ``root/model-<model>-<seed>``."""
    torch.manual_seed(seed)
    schema = ctr_schema(8)
    pipeline = Pipeline(schema).fit(data)
    layout = layout_for_model({"name": "per_feature"}, {"name": model})
    tables = build_tables(layout, schema, pipeline.num_embeddings, TableOptimizer("sgd", lr=0.1))
    net = build_model({"name": model}, tables.shapes(len(schema.dense_features)), schema)
    return save_model(root / f"model-{model}-{seed}", pipeline, RankingModel(tables, net), layout, {"name": model})


def seq_artifact(root: Path, users: int = 300) -> tuple[Path, Path]:
    """Events of ``users`` users in two files (users split by parity) and a BERT4Rec trained on them."""
    write_sequences(root / "raw", users=users, seed=0, overwrite=True, progress=False)
    events = pl.read_parquet(root / "raw")
    (root / "events").mkdir(parents=True, exist_ok=True)
    for i in range(2):
        events.filter(pl.col("user_id") % 2 == i).write_parquet(root / "events" / f"part-{i}.parquet", row_group_size=2000)
    config = SequentialConfig(BERT4RecConfig(max_len=16, dim=16, num_layers=1), epochs=1, batch_size=64, progress=False)
    train_sequential(events.lazy(), config, root / "run")
    return root / "events", root / "run" / "model"

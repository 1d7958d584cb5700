"""The sequential job: user events -> item sequences through the fitted pipeline -> SASRec or
BERT4Rec on a table layout, trained by the Trainer -> leave-one-out next-item ranking against a
popularity baseline -> a saved recommender.

``train_sequential(events, config, run_dir)`` takes events with ``user_id``, ``item_id`` and
``timestamp`` (a polars frame), builds each user's item sequence ordered by time (ties in the
order of the events), keeps users with at least ``min_length`` events (the others are counted
in the summary), and splits them leave-one-out: the last item is the test target, the second
last the validation target, the items before them train the model (with ``windows``, a
sequence longer than a training row is cut into several rows so no item is left out). Item
ids come from a :class:`~recsys_embed.pipelines.Pipeline` of :func:`sequence_schema` (one
sequence feature ``items``) fitted on every item of the kept sequences, as in the BERT4Rec
paper (0 pads, 1 is out-of-vocabulary, 2.. items): an item seen only as a validation or test
target keeps its initial embedding and simply scores low. The item table comes from the
``layout`` (``per_feature``, ``multiplexed``, ...: :func:`~recsys_embed.jobs.builders.build_tables`)
with its fused ``table_optimizer``; the rest of the model trains with AdamW. The model is
SASRec (:class:`~recsys_embed.models.SASRecConfig`, full cross-entropy) or BERT4Rec
(:class:`~recsys_embed.models.BERT4RecConfig`, Cloze).

Metrics are HR@k, NDCG@k and MRR@k of the held-out item among all items (or among the target
and ``negatives`` sampled ones), with the user's history excluded from the candidates by
default (the summary line says which protocol ran), for the model and for
:class:`~recsys_embed.models.Popularity` on the same split. Validation runs every
``eval_every`` steps (or each epoch); the model of the best validation NDCG@10 is kept, and
training stops after ``patience`` evaluations without improvement or after ``max_seconds``.
The run directory gets ``metrics.json`` (every evaluation with its wall-clock seconds and
resident memory), ``training_curves.png``, ``model/`` (the one artifact of
:mod:`~recsys_embed.jobs.model_io`, task ``sequential``; no pickle) and ``checkpoint/`` (the
Trainer's, at each evaluation and every ``checkpoint_every`` steps, unless ``checkpoints`` is
false; ``resume=True`` continues from it). :func:`load_sequential` rebuilds a :class:`SequentialRecommender`, whose ``recommend``
takes histories of raw item ids and returns raw item ids and their scores; a raw id the
vocabulary does not know reads the out-of-vocabulary row.

Example::

    >>> import tempfile
    >>> events = pl.DataFrame({"user_id": [u for u in range(60) for _ in range(6)],
    ...                        "item_id": [10 * ((u + t) % 9) for u in range(60) for t in range(6)],
    ...                        "timestamp": [t for _ in range(60) for t in range(6)]})
    >>> config = SequentialConfig(SASRecConfig(max_len=8, dim=16, num_layers=1, dropout=0.1),
    ...                           epochs=2, batch_size=16, progress=False)
    >>> run_dir = Path(tempfile.mkdtemp())
    >>> report = train_sequential(events, config, run_dir)
    >>> sorted(report.test)[:3], report.summary().endswith(f"saved to {run_dir}/")
    (['hr@1', 'hr@10', 'hr@20'], True)
    >>> recommender = load_sequential(run_dir / "model")
    >>> items, scores = recommender.recommend([[10, 20, 30], [999]], k=3)
    >>> len(items[0]), set(items[0]) & {10, 20, 30}, set(items[1]) <= set(range(0, 90, 10)), len(scores[1])
    (3, set(), True, 3)
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import torch

from recsys_embed.features import Schema
from recsys_embed.files import write_text
from recsys_embed.jobs.builders import build_sequential_model, build_tables, sequential_config, sequential_name
from recsys_embed.jobs.config import from_mapping
from recsys_embed.jobs.model_io import load_model, save_model
from recsys_embed.jobs.next_item_model import (
    NextItemModel,
    NextItemSplit,
    RankingProtocol,
    evaluate_next_item,
    history_grid,
)
from recsys_embed.jobs.run_dir import RunDir
from recsys_embed.jobs.trainer import Trainer, TrainerConfig, peak_resident_mb, seed_everything
from recsys_embed.models import BERT4RecConfig, Popularity, SASRecConfig
from recsys_embed.models.next_item_ranking import FIRST_ITEM_ID
from recsys_embed.pipelines import Pipeline
from recsys_embed.pipelines.derived import leave_one_out, sequence_schema, sliding_windows, user_sequences
from recsys_embed.pipelines.lookup import IdLookup
from recsys_embed.pipelines.readers import read_movielens, read_user_lines
from recsys_embed.pipelines.sources import resolve_files
from recsys_embed.tables import TableOptimizer

TASK = "sequential"
FEATURE = "items"
DEFAULT_TABLE_OPTIMIZER = TableOptimizer("rowwise_adagrad", lr=0.05)


@dataclass
class SequentialConfig:
    """Args:
    model: the sequential model: a :class:`~recsys_embed.models.SASRecConfig` or
        :class:`~recsys_embed.models.BERT4RecConfig`, or a mapping ``{name: sasrec | bert4rec,
        **fields}`` (``name`` required); ``dim`` is also the item table's.
    layout: the item table's layout, ``{"name": "per_feature"}`` or another of
        :func:`~recsys_embed.jobs.builders.build_tables` (its vectors must be ``dim`` wide).
    table_optimizer: the optimizer fused into the item table's kernel.
    min_length: users with fewer events are dropped (>= 3: train, valid and test items).
    windows: cut training sequences longer than a training row (``model.sequence_len`` ids)
        into overlapping rows (:func:`~recsys_embed.pipelines.derived.sliding_windows`), so every
        training item is trained on; False keeps each user's most recent row only.
    batch_size: training rows per step.
    epochs: passes over the training rows, at most.
    eval_every: steps between validations (0: one per epoch).
    patience: validations without improvement of validation NDCG@10 before stopping.
    max_seconds: wall-clock budget of training and validation (0: none).
    lr / weight_decay: AdamW (Adam with decoupled weight decay) for everything but the table.
    seed: seeds the initialisation, the shuffling, the masking and the sampled negatives.
    ks: cut-offs of HR@k, NDCG@k and MRR@k; the best model is chosen on validation NDCG@10
        (NDCG at the largest k when 10 is not among them).
    negatives: 0 ranks the target among all items; N > 0 among itself and N negatives drawn
        ``negative_sampling="uniform"`` or ``"popularity"`` (by training counts).
    exclude_history: the items a user already had are no candidates (in evaluation and in
        ``recommend``), as in SASRec's, S3-Rec's and ICLRec's protocol.
    checkpoints: write the Trainer's checkpoints (at each validation and every
        ``checkpoint_every`` steps); with them ``train_sequential(..., resume=True)`` after a
        kill reaches the same final weights as an uninterrupted run.
    device: torch device to train and evaluate on.
    progress: a tqdm bar with the running loss and rows/s.
    """

    model: SASRecConfig | BERT4RecConfig = field(default_factory=SASRecConfig)
    layout: dict[str, Any] = field(default_factory=lambda: {"name": "per_feature"})
    table_optimizer: TableOptimizer = field(default_factory=lambda: DEFAULT_TABLE_OPTIMIZER)
    min_length: int = 5
    windows: bool = True
    batch_size: int = 128
    epochs: int = 200
    eval_every: int = 0
    patience: int = 10
    max_seconds: float = 0.0
    lr: float = 1e-3
    weight_decay: float = 0.01
    seed: int = 0
    ks: tuple[int, ...] = (1, 5, 10, 20)
    negatives: int = 0
    negative_sampling: str = "uniform"
    exclude_history: bool = True
    checkpoints: bool = True
    checkpoint_every: int = 0
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self) -> None:
        self.model = sequential_config(self.model)
        if isinstance(self.table_optimizer, Mapping):
            self.table_optimizer = TableOptimizer(**self.table_optimizer)
        if self.min_length < 3:
            raise ValueError(f"min_length must be >= 3 (train, valid and test items), got {self.min_length}")
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError(f"batch_size and epochs must be >= 1; got {self.batch_size}, {self.epochs}")
        self.ks = self.protocol.ks
        self.trainer_config()  # checks eval_every, patience, max_seconds, checkpoint_every

    @property
    def protocol(self) -> RankingProtocol:
        return RankingProtocol(self.ks, self.negatives, self.negative_sampling, self.exclude_history, self.seed)

    def trainer_config(self) -> TrainerConfig:
        """The Trainer's settings: AdamW, validation every ``eval_every`` steps, the best NDCG kept."""
        return TrainerConfig(
            epochs=self.epochs, lr=self.lr, weight_decay=self.weight_decay, optimizer="adamw",
            metric=f"ndcg@{self.protocol.selection_k}", eval_every=self.eval_every, patience=self.patience,
            max_seconds=self.max_seconds, checkpoints=self.checkpoints, checkpoint_every=self.checkpoint_every,
            seed=self.seed, progress=self.progress,
        )  # fmt: skip


def item_lookup(pipeline: Pipeline) -> IdLookup:
    """Raw item ids -> pipeline ids of the item feature's table group."""
    return pipeline.encoder(labels=False).lookups[pipeline.schema[FEATURE].table]  # type: ignore[index]


def encode_histories(lookup: IdLookup, histories: pl.Series) -> tuple[torch.Tensor, torch.Tensor]:
    """A list column of raw item ids as jagged pipeline ids ``(values [N], lengths [U])``;
    null items are dropped, unknown ones read the out-of-vocabulary id."""
    histories = histories.list.drop_nulls()
    lengths = histories.list.len().fill_null(0).to_numpy().astype(np.int64)
    values = lookup(histories.explode(empty_as_null=False, keep_nulls=False).to_arrow())
    return torch.from_numpy(values.astype(np.int64)), torch.from_numpy(lengths)


@dataclass
class SequenceData:
    """The fitted pipeline, the training users (``user_id``, ``items``: raw ids), the
    validation and test splits (pipeline ids), and how many users had too few events."""

    pipeline: Pipeline
    train: pl.DataFrame
    valid: NextItemSplit
    test: NextItemSplit
    skipped_users: int = 0


def sequence_data(
    events: pl.LazyFrame | pl.DataFrame, model: SASRecConfig | BERT4RecConfig, min_length: int = 5
) -> SequenceData:
    """Sequences by time per user (:func:`~recsys_embed.pipelines.derived.user_sequences`),
    the pipeline fitted on all their items (the item feature keeps ``model.sequence_len`` ids),
    and the leave-one-out split."""
    sequences = user_sequences(events.lazy(), min_length=min_length)
    if sequences.height == 0:
        raise ValueError(f"events: no user has at least min_length={min_length} events")
    users = events.lazy().select(pl.col("user_id").drop_nulls().n_unique()).collect().item()
    schema = sequence_schema(max_len=model.sequence_len, embedding_dim=model.dim, items=FEATURE)
    every_item = sequences.explode(FEATURE).with_columns(pl.concat_list(FEATURE))  # one row per item: all counted
    pipeline = Pipeline(schema).fit(every_item)
    lookup = item_lookup(pipeline)
    train, valid, test = leave_one_out(sequences, FEATURE)

    def held_out(frame: pl.DataFrame) -> NextItemSplit:
        values, lengths = encode_histories(lookup, frame[FEATURE])
        return NextItemSplit(values, lengths, torch.from_numpy(lookup(frame["target"].to_arrow()).astype(np.int64)))

    return SequenceData(pipeline, train, held_out(valid), held_out(test), users - sequences.height)


@dataclass
class SequentialReport:
    """What :func:`train_sequential` returns: the model's metrics on the kept validation and on
    test, the popularity baseline's on both, the protocol, the validation the model was kept
    at, training throughput, and the trained model as a :class:`SequentialRecommender`."""

    run_dir: Path
    model: str
    valid: dict[str, float]
    test: dict[str, float]
    popularity_valid: dict[str, float]
    popularity_test: dict[str, float]
    protocol: RankingProtocol
    rows_per_second: float
    skipped_users: int
    recommender: SequentialRecommender = field(repr=False)

    def summary(self) -> str:
        """``sasrec test NDCG@10 0.xxx (popularity 0.yyy)  HR@10 ...  MRR@10 ...  [full ranking,
        history excluded]  kept step S (T s)  N rows/s  [K users skipped]  saved to DIR/``."""
        k = self.protocol.selection_k

        def versus(name: str) -> str:
            key = f"{name.lower()}@{k}"
            return f"{name}@{k} {self.test[key]:.4f} (popularity {self.popularity_test[key]:.4f})"

        parts = [f"{self.model} test {versus('NDCG')}", versus("HR"), versus("MRR"), f"[{describe(self.protocol)}]",
                 f"kept step {self.valid.get('steps', 0):.0f} ({self.valid.get('seconds', 0):.0f} s)",
                 f"{self.rows_per_second:,.0f} rows/s"]  # fmt: skip
        if self.skipped_users:
            parts.append(f"{self.skipped_users:,} users skipped (fewer than min_length events)")
        return "  ".join([*parts, f"saved to {self.run_dir}/"])


def describe(protocol: RankingProtocol) -> str:
    """``full ranking, history excluded`` or ``100 uniform negatives, history included``."""
    ranking = f"{protocol.negatives} {protocol.negative_sampling} negatives" if protocol.negatives else "full ranking"
    return f"{ranking}, history {'excluded' if protocol.exclude_history else 'included'}"


def train_sequential(
    events: pl.LazyFrame | pl.DataFrame, config: SequentialConfig, run_dir: str | Path, resume: bool = False,
    overwrite: bool = False,
) -> SequentialReport:  # fmt: skip
    """Split, train, evaluate against popularity, and write ``metrics.json``,
    ``training_curves.png`` and the ``model`` artifact into ``run_dir`` (see the module docstring),
    together at the end. Training checkpoints go to ``run_dir/checkpoint``; ``resume=True``
    continues from there, ``overwrite=True`` replaces an earlier run (one is refused otherwise;
    see :mod:`recsys_embed.jobs.run_dir`)."""
    with RunDir.open(run_dir, resume=resume, overwrite=overwrite) as run:
        seed_everything(config.seed)  # tables and model weights are drawn from the run's seed
        data = sequence_data(events, config.model, config.min_length)
        pipeline, schema = data.pipeline, data.pipeline.schema
        rows = pipeline.num_embeddings[schema[FEATURE].table]  # type: ignore[index]
        lookup = item_lookup(pipeline)
        popularity = Popularity(rows).fit(torch.from_numpy(lookup(data.train[FEATURE].explode().to_arrow())))
        tables = build_tables(config.layout, schema, pipeline.num_embeddings, config.table_optimizer)
        check_item_dim(tables, schema, config.model)
        network = build_sequential_model(config.model, rows)
        model = NextItemModel(tables, network, schema, FEATURE, config.protocol, popularity).to(config.device)
        trainer = Trainer(model, config.trainer_config(), run.path, reports_dir=run.staging)
        rows_frame = sliding_windows(data.train, config.model.sequence_len, FEATURE) if config.windows else data.train
        train = pipeline.batches(rows_frame, batch_size=config.batch_size, shuffle=True, seed=config.seed)
        result = trainer.fit(train, data.valid, resume=resume)
        test = trainer.evaluate(data.test)
        counts = popularity.counts
        baseline = {name: evaluate_next_item(lambda _, lengths: popularity.score_next(lengths.numel()), split, config.protocol, rows, counts)
                    for name, split in (("valid", data.valid), ("test", data.test))}
        name = sequential_name(config.model)
        model.tables = model.tables.serving_layout()  # what is served (a codebook method's codes, a pruned table's kept rows)
        save_model(run.staging / "model", pipeline, model, dict(config.layout), {"name": name, **asdict(config.model)},
                   task=TASK, task_settings={"feature": FEATURE, "exclude_history": config.exclude_history})
        train_items = data.train[FEATURE].list.len()
        metrics = json.loads((run.staging / "metrics.json").read_text())
        metrics.update({
            "model": name, "protocol": {**asdict(config.protocol), "ks": list(config.ks), "description": describe(config.protocol)},
            "data": {"users": len(data.test), "skipped_users": data.skipped_users, "items": rows - FIRST_ITEM_ID,
                     "train_items": int(train_items.sum()), "train_rows": rows_frame.height,
                     "train_items_in_rows": int(rows_frame[FEATURE].list.len().clip(upper_bound=config.model.sequence_len).sum())},
            "test": test, "popularity": baseline, "peak_rss_mb": peak_resident_mb(), "config": _json_config(config),
        })  # fmt: skip
        write_text(run.staging / "metrics.json", json.dumps(metrics, indent=2))
        run.commit()
    recommender = SequentialRecommender(pipeline, model, config.exclude_history)
    return SequentialReport(run.path, name, result.best, test, baseline["valid"], baseline["test"], config.protocol,
                            result.samples_per_second, data.skipped_users, recommender)  # fmt: skip


def _json_config(config: SequentialConfig) -> dict[str, Any]:
    out = asdict(config)
    out["ks"] = list(config.ks)
    out["model"] = {"name": sequential_name(config.model), **out["model"]}
    return out


def check_item_dim(tables: torch.nn.Module, schema: Schema, model: SASRecConfig | BERT4RecConfig) -> None:
    """Refuse a layout whose item vectors are not as wide as the model."""
    width = tables.shapes().sequences[FEATURE][1]
    if width != model.dim:
        raise ValueError(
            f"layout: its {FEATURE!r} vectors are {width} wide but model.dim is {model.dim}; "
            "make them equal (multiplexed: probes x chunk_dim)"
        )


class SequentialRecommender:
    """A trained next-item model with its fitted pipeline: raw item ids in, raw item ids out."""

    def __init__(self, pipeline: Pipeline, model: NextItemModel, exclude_history: bool = True) -> None:
        self.pipeline = pipeline
        self.model = model.eval()
        self.exclude_history = exclude_history
        self.lookup = item_lookup(pipeline)
        self.vocabulary: pa.Array = pipeline.state.tables[model.group].vocabulary  # type: ignore[assignment]

    @torch.no_grad()
    def top_k(self, histories: pl.Series, k: int, exclude_history: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores and vocabulary positions ``[U, min(k, items)]`` (best first; ``-inf`` where the
        history excludes an item) of the next item after each history of ``histories``, a list
        column of raw item ids; unknown ids read the out-of-vocabulary row."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        values, lengths = encode_histories(self.lookup, histories)
        scores = self.model.score_next(values, lengths)
        if exclude_history:
            scores.scatter_(1, history_grid(values, lengths)[0].to(scores.device), float("-inf"))
        best, ids = scores.topk(min(k, self.model.rows - FIRST_ITEM_ID), dim=1)
        return best.cpu(), ids.cpu() - FIRST_ITEM_ID

    def recommend(
        self, histories: Sequence[Sequence[Any]], k: int = 10, exclude_history: bool | None = None
    ) -> tuple[list[list[Any]], list[list[float]]]:
        """The top-``k`` next raw item ids after each history of raw ids (oldest first), best
        first, and their scores. A raw id the vocabulary does not know reads the
        out-of-vocabulary row; with ``exclude_history`` (default: the training setting) the
        history is never recommended."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not histories:
            return [], []
        try:
            column = pl.Series([list(history) for history in histories], dtype=pl.List(pl.from_arrow(self.vocabulary[:0]).dtype))
        except (TypeError, pl.exceptions.PolarsError) as err:
            raise ValueError(f"histories: item ids must be of the vocabulary's type {self.vocabulary.type}: {err}") from None
        best, ids = self.top_k(column, k, self.exclude_history if exclude_history is None else exclude_history)
        items, values_out = [], []
        for row, row_scores in zip(ids, best):
            kept = torch.isfinite(row_scores)
            items.append(self.vocabulary.take(pa.array(row[kept].numpy())).to_pylist())
            values_out.append(row_scores[kept].tolist())
        return items, values_out


def load_sequential(path: str | Path) -> SequentialRecommender:
    """Rebuild the recommender saved by :func:`train_sequential` (``RUN_DIR/model``)."""
    loaded = load_model(path, task=TASK)
    return SequentialRecommender(loaded.pipeline, loaded.model, loaded.manifest["task_settings"].get("exclude_history", True))


# ---- run config (``recsys-embed train --config run.yaml`` with ``task: sequential``) ----------
_FORMAT_HINTS = {".data": "movielens", ".dat": "movielens", ".base": "movielens", ".test": "movielens", ".txt": "user_lines"}


def scan_parquet_events(path: str | Path) -> pl.LazyFrame:
    """The Parquet file, directory or glob of events (e.g. written by ``write_sequences``); a
    file of another format is refused with the ``data.format`` that reads it."""
    hint = _FORMAT_HINTS.get(Path(path).suffix.lower())
    if hint:
        raise ValueError(f"data.events: {path} is not a Parquet file; if it is in the {hint} format, set data.format: {hint}")
    return pl.scan_parquet(resolve_files(path))


EVENT_READERS: dict[str, Callable[[Path], pl.LazyFrame]] = {
    "synthetic": scan_parquet_events,
    "parquet": scan_parquet_events,
    "movielens": read_movielens,
    "user_lines": read_user_lines,
}


@dataclass
class EventsConfig:
    """``events``: a Parquet file/directory of ``user_id, item_id, timestamp`` (``synthetic``,
    ``parquet``), a MovieLens ``ratings.dat`` / ``u.data`` file (``movielens``) or a file of
    one user per line, ``user_id item_id item_id ...`` (``user_lines``, e.g. ``Beauty.txt``)."""

    events: str
    format: str = "synthetic"


@dataclass
class SequentialRunConfig:
    """A run YAML of ``task: sequential``; ``trainer`` holds :class:`SequentialConfig` fields,
    ``layout`` and ``table_optimizer`` the item table's (as in a CTR run)."""

    data: EventsConfig
    task: str = TASK
    model: dict[str, Any] = field(default_factory=lambda: {"name": "sasrec"})
    layout: dict[str, Any] = field(default_factory=lambda: {"name": "per_feature"})
    table_optimizer: TableOptimizer = field(default_factory=lambda: DEFAULT_TABLE_OPTIMIZER)
    trainer: dict[str, Any] = field(default_factory=dict)
    run_dir: str = "runs/sequential"


_TOP_LEVEL = ("model", "layout", "table_optimizer")


def sequential_run_config(mapping: Mapping[str, Any], where: str = "config") -> tuple[SequentialRunConfig, SequentialConfig]:
    """Validate a run mapping ``{task: sequential, data: {events, format}, model: {name, ...},
    layout: {...}, table_optimizer: {...}, trainer: {...}, run_dir}``; a bad key or value is a
    ``ValueError`` naming ``where`` and the dotted key. ``trainer`` takes the
    :class:`SequentialConfig` fields other than ``model``, ``layout`` and ``table_optimizer``."""
    run = from_mapping(SequentialRunConfig, dict(mapping) if isinstance(mapping, Mapping) else mapping, where)
    if run.task != TASK:
        raise ValueError(f"{where}.task: expected {TASK!r}, got {run.task!r}")
    if run.data.format not in EVENT_READERS:
        raise ValueError(f"{where}.data.format: expected one of {sorted(EVENT_READERS)}, got {run.data.format!r}")
    trainer_keys = sorted(f.name for f in dataclasses.fields(SequentialConfig) if f.name not in _TOP_LEVEL)
    unknown = sorted(set(run.trainer) - set(trainer_keys))
    if unknown:
        moved = sorted(set(unknown) & set(_TOP_LEVEL))
        hint = f"; {moved} go under the top-level key(s) of that name" if moved else ""
        if "mask_prob" in unknown:
            hint += "; mask_prob is BERT4Rec's: it goes under model (model: {name: bert4rec, mask_prob: ...})"
        raise ValueError(f"{where}.trainer: unknown key(s) {unknown}; expected some of {trainer_keys}{hint}")
    config = from_mapping(SequentialConfig, run.trainer, f"{where}.trainer")
    model = sequential_config(run.model, f"{where}.model")
    try:
        return run, dataclasses.replace(config, model=model, layout=run.layout, table_optimizer=run.table_optimizer)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def train_sequential_from_config(
    mapping: Mapping[str, Any], where: str = "config", base_dir: str | Path | None = None, resume: bool = False,
    overwrite: bool = False,
) -> SequentialReport:  # fmt: skip
    """Validate ``mapping`` (:func:`sequential_run_config`), read the events (a relative
    ``data.events`` is taken from ``base_dir``, e.g. the YAML's folder) and train
    (``resume`` / ``overwrite`` as in :func:`train_sequential`)."""
    run, config = sequential_run_config(mapping, where)
    path = Path(run.data.events)
    if base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    if not path.exists():
        raise ValueError(f"{where}.data.events: {path} does not exist")
    return train_sequential(EVENT_READERS[run.data.format](path), config, run.run_dir, resume=resume, overwrite=overwrite)

"""The sequential job: user events -> BERT4Rec trained by Cloze -> leave-one-out next-item
ranking against a popularity baseline -> a saved recommender.

``train_sequential(events, config, run_dir)`` takes events with ``user_id``, ``item_id`` and
``timestamp`` (a polars frame), builds each user's item sequence ordered by time, keeps users
with at least ``min_length`` events, and splits them leave-one-out: the last item is the test
target, the second last the validation target, the items before them train the model. Raw item
ids map to contiguous ids ``1..N`` (sorted raw ids; 0 pads, ``N + 1`` is BERT4Rec's mask token).
The vocabulary holds every item of the kept sequences, as in the BERT4Rec paper: an item seen
only as a validation or test target keeps its initial embedding and simply scores low.

Metrics are HR@k, NDCG@k and MRR@k of the held-out item among all items (or among the target
and ``negatives`` sampled ones), with the user's history excluded from the candidates by
default, for BERT4Rec and for :class:`~recsys_embed.models.Popularity` on the same split. The
run directory gets ``metrics.json``, ``training_curves.png``, ``model/`` (safetensors plus a
JSON manifest holding the model config and the item vocabulary; no pickle) and ``checkpoint/``
(after every epoch and every ``checkpoint_every`` steps; ``resume=True`` continues from it).
:func:`load_sequential` rebuilds a :class:`SequentialRecommender`, whose ``recommend`` takes raw
item ids and returns raw item ids; raw ids outside the vocabulary are skipped (they have no
embedding), so a history of only unknown items gets the model's non-personal ranking.

Example::

    >>> import tempfile
    >>> events = pl.DataFrame({"user_id": [u for u in range(60) for _ in range(6)],
    ...                        "item_id": [10 * ((u + t) % 9) for u in range(60) for t in range(6)],
    ...                        "timestamp": [t for _ in range(60) for t in range(6)]})
    >>> config = SequentialConfig(BERT4RecConfig(max_len=8, dim=16, num_layers=1),
    ...                           epochs=2, batch_size=16, progress=False)
    >>> run_dir = Path(tempfile.mkdtemp())
    >>> report = train_sequential(events, config, run_dir)
    >>> sorted(report.test)[:3], report.summary().endswith(f"saved to {run_dir}/")
    (['hr@1', 'hr@10', 'hr@5'], True)
    >>> recommender = load_sequential(run_dir / "model")
    >>> top = recommender.recommend([10, 20, 30], k=3)
    >>> len(top), set(top) & {10, 20, 30}, set(top) <= set(range(0, 90, 10))
    (3, set(), True)
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from recsys_embed import metrics
from recsys_embed.artifacts import load_artifact, save_artifact
from recsys_embed.jobs.config import from_mapping
from recsys_embed.models import BERT4Rec, BERT4RecConfig, Popularity, cloze_mask, rank_of, sample_negatives
from recsys_embed.pipelines.derived import leave_one_out, user_sequences
from recsys_embed.pipelines.readers import read_movielens
from recsys_embed.pipelines.sources import resolve_files
from recsys_embed.jobs.trainer import FitResult, plot_curves, restore_checkpoint, save_checkpoint, seed_everything

TASK = "sequential"
NEGATIVE_SAMPLING = ("uniform", "popularity")
SCORES_PER_EVAL_BATCH = 1 << 22  # eval rows x vocabulary size per scoring call (16 MiB of float32)


@dataclass
class SequentialConfig:
    """Args:
    model: the BERT4Rec encoder (a :class:`~recsys_embed.models.BERT4RecConfig` or a mapping of
        its fields) without ``num_items``, which the job counts in the data.
    min_length: users with fewer events are dropped (>= 3: train, valid and test items).
    mask_prob: Cloze masking probability of each training item.
    batch_size / epochs: training sequences per step / passes over the training users.
    lr / weight_decay: AdamW (Adam with decoupled weight decay, as BERT).
    seed: seeds the initialisation, the shuffling, the masking and the sampled negatives.
    ks: cut-offs of HR@k, NDCG@k and MRR@k; the best epoch is chosen on validation NDCG@10
        (NDCG at the largest k when 10 is not among them).
    negatives: 0 ranks the target among all items; N > 0 among itself and N negatives drawn
        ``negative_sampling="uniform"`` or ``"popularity"`` (by training counts).
    exclude_history: the items a user already had are no candidates (in evaluation and in
        ``recommend``).
    checkpoint_every: steps between checkpoints (0: only at the end of each epoch); with them
        ``train_sequential(..., resume=True)`` after a kill reaches the same final weights as an
        uninterrupted run.
    device: torch device to train and evaluate on.
    progress: a tqdm bar per epoch with the running loss and sequences/s.
    """

    model: BERT4RecConfig = field(default_factory=BERT4RecConfig)
    min_length: int = 5
    mask_prob: float = 0.2
    batch_size: int = 32
    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 0.01
    seed: int = 0
    ks: tuple[int, ...] = (1, 5, 10)
    negatives: int = 0
    negative_sampling: str = "uniform"
    exclude_history: bool = True
    checkpoint_every: int = 0
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.model, Mapping):
            self.model = BERT4RecConfig(**self.model)
        if self.model.num_items is not None:
            raise ValueError(
                f"model.num_items is counted from the data by the sequential job; leave it out (got {self.model.num_items})"
            )
        if self.min_length < 3:
            raise ValueError(f"min_length must be >= 3 (train, valid and test items), got {self.min_length}")
        if not 0.0 < self.mask_prob < 1.0:
            raise ValueError(f"mask_prob must lie in (0, 1), got {self.mask_prob}")
        if self.batch_size < 1 or self.epochs < 1 or self.negatives < 0 or self.checkpoint_every < 0:
            raise ValueError(
                "batch_size and epochs must be >= 1, negatives and checkpoint_every >= 0; got "
                f"{self.batch_size}, {self.epochs}, {self.negatives}, {self.checkpoint_every}"
            )
        self.ks = tuple(self.ks)
        if not self.ks or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in self.ks):
            raise ValueError(f"ks must be a non-empty list of positive integers, got {list(self.ks)}")
        if self.negative_sampling not in NEGATIVE_SAMPLING:
            raise ValueError(f"negative_sampling must be one of {list(NEGATIVE_SAMPLING)}, got {self.negative_sampling!r}")

    @property
    def selection_k(self) -> int:
        return 10 if 10 in self.ks else max(self.ks)


class ItemIndex:
    """Raw item ids <-> contiguous ids ``1..N`` in sorted raw order; ``0`` pads and stands for
    an unknown raw id.

    Example::

        >>> index = ItemIndex.from_values(pl.Series([30, 10, 30, 20]))
        >>> len(index), index.encode([20, 99, 30]).tolist(), index.decode([3, 1])
        (3, [2, 0, 3], [30, 10])
        >>> ItemIndex.from_json(json.loads(json.dumps(index.to_json()))).encode([10]).tolist()
        [1]
    """

    def __init__(self, raw: pl.Series) -> None:
        if raw.null_count() or raw.n_unique() != raw.len():
            raise ValueError("ItemIndex: raw item ids must be unique and not null")
        self.raw = raw.sort()
        self._ids = pl.int_range(1, raw.len() + 1, dtype=pl.Int64, eager=True)

    @classmethod
    def from_values(cls, values: pl.Series) -> ItemIndex:
        """The index of the distinct non-null values (e.g. an ``item_id`` column)."""
        return cls(values.drop_nulls().unique())

    @classmethod
    def from_json(cls, raw: list[Any]) -> ItemIndex:
        return cls(pl.Series("item_id", raw))

    def to_json(self) -> list[Any]:
        """The raw ids in id order (id ``i`` is entry ``i - 1``)."""
        return self.raw.to_list()

    def __len__(self) -> int:
        return self.raw.len()

    def encode(self, values: pl.Series | Sequence[Any]) -> np.ndarray:
        """Contiguous ids (int64) of raw ids, 0 for nulls and raw ids not in the index."""
        series = values if isinstance(values, pl.Series) else pl.Series(list(values))
        if series.dtype != self.raw.dtype:
            if not (series.dtype == pl.Null or (series.dtype.is_integer() and self.raw.dtype.is_integer())):
                raise TypeError(f"item ids have type {series.dtype}, but the item vocabulary holds {self.raw.dtype}")
            series = series.cast(self.raw.dtype)
        return series.replace_strict(self.raw, self._ids, default=0, return_dtype=pl.Int64).fill_null(0).to_numpy(writable=True)

    def decode(self, ids: Sequence[int] | np.ndarray | torch.Tensor) -> list[Any]:
        """Raw ids of contiguous ids ``1..N``."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 1 or ids.max() > len(self)):
            raise IndexError(f"item ids must lie in [1, {len(self)}], got min {ids.min()} max {ids.max()}")
        return self.raw.gather(ids - 1).to_list()


@dataclass
class ItemSequences:
    """Users' contiguous item id sequences, flat: user ``u`` has ``items[offsets[u]:offsets[u + 1]]``, oldest first."""

    items: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_lists(cls, lists: pl.Series, index: ItemIndex) -> ItemSequences:
        """Encode a list column of raw item ids; nulls and ids not in ``index`` are dropped."""
        lists = lists.list.drop_nulls()
        lengths = lists.list.len().fill_null(0).to_numpy().astype(np.int64)
        ids = index.encode(lists.explode(empty_as_null=False, keep_nulls=False))
        known = ids != 0
        kept = np.bincount(np.repeat(np.arange(len(lengths)), lengths)[known], minlength=len(lengths))
        return cls(ids[known], np.r_[0, np.cumsum(kept)].astype(np.int64))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def padded(self, rows: np.ndarray, last: int | None = None) -> torch.Tensor:
        """The ``rows`` as a left-aligned, zero-padded ``[B, L]`` int64 tensor holding each
        row's most recent ``last`` items (all with None); L is the longest kept row (>= 1)."""
        rows = np.asarray(rows, dtype=np.int64)
        ends = self.offsets[rows + 1]
        keep = ends - self.offsets[rows] if last is None else np.minimum(ends - self.offsets[rows], last)
        width = max(int(keep.max(initial=0)), 1)
        index = (ends - keep)[:, None] + np.arange(width)[None, :]
        real = np.arange(width)[None, :] < keep[:, None]
        values = np.take(self.items, index, mode="clip") if len(self.items) else np.zeros_like(index)
        return torch.from_numpy(np.where(real, values, 0))


@dataclass
class NextItemSplit:
    """One held-out item per user: ``targets [U]`` followed ``histories``."""

    histories: ItemSequences
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)


@dataclass
class SequenceSplits:
    """Leave-one-out splits of the users' sequences: ``train`` (all but the last two items),
    ``valid`` (second last item after those), ``test`` (last item after all others)."""

    items: ItemIndex
    train: ItemSequences
    valid: NextItemSplit
    test: NextItemSplit


def split_sequences(events: pl.LazyFrame | pl.DataFrame, min_length: int = 5) -> SequenceSplits:
    """Sequences by time per user (:func:`~recsys_embed.pipelines.readers.user_sequences`),
    the item vocabulary over them, and the leave-one-out split."""
    sequences = user_sequences(events.lazy(), min_length=min_length)
    if sequences.height == 0:
        raise ValueError(f"events: no user has at least min_length={min_length} events")
    index = ItemIndex.from_values(sequences["items"].explode())
    train, valid, test = leave_one_out(sequences)

    def held_out(frame: pl.DataFrame) -> NextItemSplit:
        return NextItemSplit(ItemSequences.from_lists(frame["items"], index), index.encode(frame["target"]))

    return SequenceSplits(index, ItemSequences.from_lists(train["items"], index), held_out(valid), held_out(test))


def _chunks(n: int, size: int, order: torch.Tensor | None = None) -> Iterator[np.ndarray]:
    rows = np.arange(n) if order is None else order.numpy()
    for start in range(0, n, size):
        yield rows[start : start + size]


def fit_popularity(train: ItemSequences, num_items: int) -> Popularity:
    """The popularity baseline counted on the training sequences."""
    return Popularity(num_items).fit(train.padded(rows) for rows in _chunks(len(train), 4096))


@torch.no_grad()
def evaluate_next_item(
    score_next: Callable[[torch.Tensor], torch.Tensor],
    split: NextItemSplit,
    config: SequentialConfig,
    popularity: Popularity,
) -> dict[str, float]:
    """HR@k, NDCG@k and MRR@k (keys ``hr@10`` ...) of ``score_next(history [B, L]) -> [B, V]``
    on ``split``. ``popularity`` gives ``num_items`` and, with popularity sampling, the weights
    of the sampled negatives; the negatives depend only on the seed, so every model is ranked
    against the same ones."""
    generator = torch.Generator().manual_seed(config.seed)
    device = torch.device(config.device)
    num_items = popularity.num_items
    ranks = []
    weights = popularity.counts.cpu() if config.negative_sampling == "popularity" else None
    for rows in _chunks(len(split), max(1, SCORES_PER_EVAL_BATCH // (num_items + 2))):
        scores = score_next(split.histories.padded(rows, last=config.model.max_len).to(device))
        exclude = split.histories.padded(rows) if config.exclude_history else None
        targets = torch.from_numpy(split.targets[rows])
        if config.negatives:  # drawn on the CPU, where the generator lives
            negatives = sample_negatives(targets, num_items, config.negatives, exclude, weights, generator)
            ranks.append(rank_of(scores, targets.to(device), negatives=negatives.to(device)))
        else:
            ranks.append(rank_of(scores, targets.to(device), exclude=None if exclude is None else exclude.to(device)))
    all_ranks = torch.cat(ranks).cpu().numpy()
    out: dict[str, float] = {}
    for name, metric in (("hr", metrics.hit_rate), ("ndcg", metrics.ndcg), ("mrr", metrics.mrr)):
        out.update({f"{name}@{k}": metric(all_ranks, k) for k in config.ks})
    return out


def _evaluate_model(model: BERT4Rec, split: NextItemSplit, config: SequentialConfig, popularity: Popularity) -> dict[str, float]:
    model.eval()
    try:
        return evaluate_next_item(model.score_next, split, config, popularity)
    finally:
        model.train()


def fit_bert4rec(
    model: BERT4Rec,
    splits: SequenceSplits,
    config: SequentialConfig,
    popularity: Popularity,
    checkpoint: Path | None = None,
    resume: bool = False,
) -> FitResult:
    """Cloze training on ``splits.train`` (most recent ``max_len`` items per user), validation
    after every epoch; the model ends with the weights of the best validation NDCG.

    With a ``checkpoint`` path, the training state is saved there after every epoch and every
    ``config.checkpoint_every`` steps; ``resume=True`` continues from it (the order of an epoch
    depends only on the seed and the epoch, so the interrupted epoch skips the batches already
    trained on) and ends with the weights an uninterrupted run ends with."""
    device = torch.device(config.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    masking = torch.Generator().manual_seed(config.seed)
    selection = f"ndcg@{config.selection_k}"
    result, best_state, start_epoch, skip = FitResult(), None, 0, 0
    if resume:
        if checkpoint is None:
            raise ValueError("resume=True needs the checkpoint path of the interrupted run")
        result, position = restore_checkpoint(checkpoint, model, optimizer)
        start_epoch, skip, best_state = position["epoch"], position["batch_index"], position["best_model"]
        masking.set_state(position["masking"])

    def save(epoch: int, batch_index: int, seconds: float) -> None:
        if checkpoint is not None:
            timed = dataclasses.replace(result, train_seconds=result.train_seconds + seconds)
            position = {"epoch": epoch, "batch_index": batch_index, "best_model": best_state, "masking": masking.get_state()}
            save_checkpoint(checkpoint, model, optimizer, timed, position)

    model.train()
    batches = math.ceil(len(splits.train) / config.batch_size)
    for epoch in range(start_epoch, config.epochs):
        order = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(config.seed + 7919 * epoch))
        bar = tqdm(desc=f"epoch {epoch + 1}/{config.epochs}", total=batches, initial=skip,
                   unit="batch", disable=not config.progress, dynamic_ncols=True)
        running, start = None, time.perf_counter()
        for index, rows in enumerate(_chunks(len(splits.train), config.batch_size, order)):
            if index < skip:
                continue
            items = splits.train.padded(rows, last=config.model.max_len)
            inputs, targets = cloze_mask(items, config.mask_prob, model.config.mask_id, masking)
            loss = model.cloze_loss(inputs.to(device), targets.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"training loss became {value} at step {result.steps + 1}; lower lr")
            result.steps += 1
            result.samples += len(rows)
            running = value if running is None else 0.98 * running + 0.02 * value
            if result.steps % 20 == 0 or result.steps == 1:
                result.losses.append((result.steps, value))
                elapsed = result.train_seconds + time.perf_counter() - start
                bar.set_postfix(loss=f"{running:.4f}", seq_s=f"{result.samples / elapsed:,.0f}")
            bar.update(1)
            if config.checkpoint_every and result.steps % config.checkpoint_every == 0:
                save(epoch, index + 1, time.perf_counter() - start)
        bar.close()
        skip = 0
        result.train_seconds += time.perf_counter() - start  # evaluation time is not training time
        valid = _evaluate_model(model, splits.valid, config, popularity)
        result.epochs.append({"epoch": float(epoch + 1), "steps": float(result.steps), **valid})
        if not result.best or valid[selection] > result.best[selection]:
            result.best, best_state = dict(result.epochs[-1]), copy.deepcopy(model.state_dict())
        save(epoch + 1, 0, 0.0)
    if best_state is not None:
        model.load_state_dict(best_state)
    return result


@dataclass
class SequentialReport:
    """What :func:`train_sequential` returns: BERT4Rec's metrics on the best validation epoch
    and on test, the popularity baseline's on both, training throughput, and the trained
    model as a :class:`SequentialRecommender`."""

    run_dir: Path
    valid: dict[str, float]
    test: dict[str, float]
    popularity_valid: dict[str, float]
    popularity_test: dict[str, float]
    sequences_per_second: float
    recommender: SequentialRecommender = field(repr=False)
    k: int = 10

    def summary(self) -> str:
        """``test NDCG@10 0.xxx (popularity 0.yyy)  HR@10 ...  MRR@10 ...  N seq/s  saved to DIR/``."""
        def versus(name: str) -> str:
            key = f"{name.lower()}@{self.k}"
            return f"{name}@{self.k} {self.test[key]:.4f} (popularity {self.popularity_test[key]:.4f})"

        return "  ".join([f"test {versus('NDCG')}", versus("HR"), versus("MRR"),
                          f"{self.sequences_per_second:,.0f} seq/s", f"saved to {self.run_dir}/"])


def train_sequential(
    events: pl.LazyFrame | pl.DataFrame, config: SequentialConfig, run_dir: str | Path, resume: bool = False
) -> SequentialReport:
    """Split, train, evaluate against popularity, and write ``metrics.json``,
    ``training_curves.png`` and the ``model`` artifact into ``run_dir`` (see the module docstring).
    Training checkpoints go to ``run_dir/checkpoint``; ``resume=True`` continues from there."""
    run_dir = Path(run_dir)
    seed_everything(config.seed)
    splits = split_sequences(events, config.min_length)
    num_items = len(splits.items)
    popularity = fit_popularity(splits.train, num_items).to(config.device)
    model = BERT4Rec(config.model.with_items(num_items)).to(config.device)
    result = fit_bert4rec(model, splits, config, popularity, run_dir / "checkpoint", resume)
    test = _evaluate_model(model, splits.test, config, popularity)
    baseline = {name: evaluate_next_item(popularity.score_next, split, config, popularity)
                for name, split in (("valid", splits.valid), ("test", splits.test))}
    save_recommender(run_dir / "model", model, splits.items, config.exclude_history)
    report = {
        "data": {"users": len(splits.test), "items": num_items, "train_items": int(len(splits.train.items))},
        "epochs": result.epochs, "best": result.best, "test": test, "popularity": baseline,
        "steps": result.steps, "sequences": result.samples, "train_seconds": result.train_seconds,
        "sequences_per_second": result.samples_per_second, "config": asdict(config),
    }
    tmp = run_dir / ".metrics.json.tmp"
    tmp.write_text(json.dumps(report, indent=2))
    tmp.rename(run_dir / "metrics.json")
    plot_curves(result, run_dir / "training_curves.png", f"ndcg@{config.selection_k}")
    recommender = SequentialRecommender(model, splits.items, config.exclude_history)
    return SequentialReport(run_dir, result.best, test, baseline["valid"], baseline["test"],
                            result.samples_per_second, recommender, config.selection_k)


class SequentialRecommender:
    """A trained BERT4Rec with its item vocabulary: raw item ids in, raw item ids out."""

    def __init__(self, model: BERT4Rec, items: ItemIndex, exclude_history: bool = True) -> None:
        if model.config.num_items != len(items):
            raise ValueError(f"the model scores {model.config.num_items} items but the vocabulary holds {len(items)}")
        self.model = model.eval()
        self.items = items
        self.exclude_history = exclude_history

    @torch.no_grad()
    def recommend_batch(self, histories: Sequence[Sequence[Any]], k: int = 10) -> list[list[Any]]:
        """Top-``k`` next raw item ids for each history of raw ids (oldest first), best first;
        unknown raw ids are skipped, and with ``exclude_history`` the history is never recommended."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not histories:
            return []
        sequences = ItemSequences.from_lists(pl.Series([list(history) for history in histories]), self.items)
        rows = np.arange(len(sequences))
        device = next(self.model.parameters()).device
        scores = self.model.score_next(sequences.padded(rows, last=self.model.config.max_len).to(device))
        if self.exclude_history:
            scores.scatter_(1, sequences.padded(rows).to(device), float("-inf"))
        values, ids = scores.topk(min(k, len(self.items)), dim=1)
        return [self.items.decode(row[torch.isfinite(best)].cpu()) for row, best in zip(ids, values)]

    def recommend(self, history: Sequence[Any], k: int = 10) -> list[Any]:
        """Top-``k`` next raw item ids after one history (see :meth:`recommend_batch`)."""
        return self.recommend_batch([history], k)[0]


def save_recommender(path: str | Path, model: BERT4Rec, items: ItemIndex, exclude_history: bool = True) -> Path:
    """Write the model weights (safetensors) and a manifest with its config and vocabulary."""
    manifest = {"task": TASK, "model": {"name": "bert4rec", **asdict(model.config)},
                "items": items.to_json(), "exclude_history": exclude_history}
    return save_artifact(path, model.state_dict(), manifest)


def load_sequential(path: str | Path) -> SequentialRecommender:
    """Rebuild the recommender saved by :func:`train_sequential` (``RUN_DIR/model``)."""
    tensors, manifest = load_artifact(path)
    if manifest.get("task") != TASK:
        raise ValueError(f"artifact {path}: task is {manifest.get('task')!r}, not a {TASK!r} model")
    spec = dict(manifest.get("model") or {})
    if spec.pop("name", None) != "bert4rec":
        raise ValueError(f"artifact {path}: manifest model {manifest.get('model')!r} is not a 'bert4rec' config")
    model = BERT4Rec(BERT4RecConfig(**spec))
    try:
        model.load_state_dict(tensors)
    except RuntimeError as err:
        raise ValueError(f"artifact {path}: weights do not fit the BERT4Rec config: {err}") from None
    return SequentialRecommender(model, ItemIndex.from_json(manifest["items"]), manifest.get("exclude_history", True))


# ---- run config (``recsys-embed train --config run.yaml`` with ``task: sequential``) ----------
def scan_parquet_events(path: str | Path) -> pl.LazyFrame:
    """The Parquet file, directory or glob of events (e.g. written by ``write_sequences``)."""
    return pl.scan_parquet(resolve_files(path))


EVENT_READERS: dict[str, Callable[[Path], pl.LazyFrame]] = {
    "synthetic": scan_parquet_events,
    "parquet": scan_parquet_events,
    "movielens": read_movielens,
}


@dataclass
class EventsConfig:
    """``events``: a Parquet file/directory of ``user_id, item_id, timestamp`` (``synthetic``,
    ``parquet``) or a MovieLens ``ratings.dat`` / ``u.data`` file (``movielens``)."""

    events: str
    format: str = "synthetic"


@dataclass
class SequentialRunConfig:
    """A run YAML of ``task: sequential``; ``trainer`` holds :class:`SequentialConfig` fields."""

    data: EventsConfig
    task: str = TASK
    model: BERT4RecConfig = field(default_factory=BERT4RecConfig)
    trainer: dict[str, Any] = field(default_factory=dict)
    run_dir: str = "runs/sequential"


def sequential_run_config(mapping: Mapping[str, Any], where: str = "config") -> tuple[SequentialRunConfig, SequentialConfig]:
    """Validate a run mapping ``{task: sequential, data: {events, format}, model: {...},
    trainer: {...}, run_dir}``; a bad key or value is a ``ValueError`` naming ``where`` and the
    dotted key. ``trainer`` takes the :class:`SequentialConfig` fields other than ``model``."""
    run = from_mapping(SequentialRunConfig, dict(mapping) if isinstance(mapping, Mapping) else mapping, where)
    if run.task != TASK:
        raise ValueError(f"{where}.task: expected {TASK!r}, got {run.task!r}")
    if run.data.format not in EVENT_READERS:
        raise ValueError(f"{where}.data.format: expected one of {sorted(EVENT_READERS)}, got {run.data.format!r}")
    trainer_keys = sorted(f.name for f in dataclasses.fields(SequentialConfig) if f.name != "model")
    unknown = sorted(set(run.trainer) - set(trainer_keys))
    if unknown:
        hint = "; model settings go under the top-level 'model' key" if "model" in unknown else ""
        raise ValueError(f"{where}.trainer: unknown key(s) {unknown}; expected some of {trainer_keys}{hint}")
    config = from_mapping(SequentialConfig, run.trainer, f"{where}.trainer")
    try:
        return run, dataclasses.replace(config, model=run.model)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def train_sequential_from_config(
    mapping: Mapping[str, Any], where: str = "config", base_dir: str | Path | None = None
) -> SequentialReport:
    """Validate ``mapping`` (:func:`sequential_run_config`), read the events (a relative
    ``data.events`` is taken from ``base_dir``, e.g. the YAML's folder) and train."""
    run, config = sequential_run_config(mapping, where)
    path = Path(run.data.events)
    if base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    if not path.exists():
        raise ValueError(f"{where}.data.events: {path} does not exist")
    return train_sequential(EVENT_READERS[run.data.format](path), config, run.run_dir)

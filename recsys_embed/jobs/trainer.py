"""The Trainer: ``Trainer(model, config, run_dir).fit(train, valid)`` for scripts, one loop
for every task.

The model gives its training loss on a batch (``loss(batch) -> (loss, output)``), its
validation metrics on a validation set (``evaluate(data) -> {name: value}``) and the param
groups its table layout's fused kernel does not update (``dense_param_groups(lr, wd)``):
:class:`~recsys_embed.jobs.ranking_model.RankingModel` for CTR (AUC, logloss, GAUC),
:class:`~recsys_embed.jobs.next_item_model.NextItemModel` for next-item ranking (HR, NDCG,
MRR @k). Tables are updated by the optimizer fused into their kernel (inside ``backward``);
every other parameter by a torch Adam (or AdamW). An evaluation ends each epoch, or comes
every ``config.eval_every`` steps; early stopping after ``config.patience`` evaluations
without improvement of ``config.metric`` (optionally guarded by validation logloss,
``config.logloss_guard``; or when ``config.max_seconds`` of wall clock are spent), and the
best model kept. The reports give each validation metric's peak with its epoch and step
(:attr:`FitResult.peaks`), besides the evaluation kept. Checkpoints at each evaluation and every
``config.checkpoint_every`` steps make ``resume=True`` after a kill reach the same final
weights as an uninterrupted run (data order is a function of the seed and the epoch, so the
interrupted epoch is replayed from its start and the batches already trained on are skipped). ``config.mba_l2 > 0`` adds
DIN's mini-batch aware L2 on the table rows (CTR), with the row frequencies counted in one
pass over the training data first.
"""

from __future__ import annotations

import json
import math
import os
import random
import resource
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from recsys_embed.batch import Batch
from recsys_embed.checkpoint import load_state, save_state
from recsys_embed.errors import ConfigError, TrainingDiverged
from recsys_embed.files import write_text, writing
from recsys_embed.tables.frequencies import row_frequencies

_LOWER_IS_BETTER = ("logloss",)


def improves(record: dict[str, float], earlier: list[dict[str, float]], best: float | None, metric: str, logloss_guard: float | None) -> bool:
    """Whether the evaluation ``record`` beats the kept one (score ``best``, None: nothing kept
    yet) under ``metric`` and, when set, ``logloss_guard`` ``r``: its logloss at most ``(1 + r)``
    times the lowest of the ``earlier`` evaluations' (see :class:`TrainerConfig`).

    >>> improves({"auc": 0.80, "logloss": 0.50}, [{"auc": 0.79, "logloss": 0.45}], 0.79, "auc", 0.01)
    False
    """
    score = record[metric]
    if best is None:
        return True
    if not (score < best if metric in _LOWER_IS_BETTER else score > best):
        return False
    if not logloss_guard:
        return True
    lowest = min((e["logloss"] for e in earlier if "logloss" in e), default=math.inf)
    return record["logloss"] <= (1 + logloss_guard) * lowest


_METRIC = re.compile(r"auc|gauc|logloss|(hr|ndcg|mrr)@[1-9][0-9]*")
_OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


@dataclass
class TrainerConfig:
    """Args:
    epochs: passes over the training data (at most).
    lr / weight_decay: Adam for the dense parameters (tables carry their own fused optimizer).
    optimizer: ``adam`` (weight decay as L2 in the gradient) or ``adamw`` (decoupled weight decay).
    metric: validation metric for early stopping and best-model selection: auc, gauc, logloss
        (CTR; logloss: lower is better) or hr@k, ndcg@k, mrr@k (next-item ranking).
    logloss_guard: r > 0 guards a higher-is-better ``metric`` (auc, gauc) with validation
        logloss: an evaluation counts as an improvement (its weights kept, patience reset) only
        if its metric is above the best kept one AND its logloss is at most ``(1 + r)`` times
        the lowest validation logloss of all evaluations so far (this one included); the first
        evaluation always counts. 0 or None: off (the metric alone decides).
    eval_every: steps between evaluations (0: at the end of each epoch); with N > 0 the last
        step is evaluated too when training stops between two evaluations.
    patience: evaluations without improvement before stopping (with ``eval_every``, a patience
        of ``patience * eval_every * batch_size`` training samples).
    max_seconds: wall-clock budget of training and evaluation (0: no limit): training stops
        when the closing evaluation would no longer fit (it reserves 1.25x the time the last
        evaluation took, for their variation).
    mba_l2: weight of DIN's mini-batch aware L2 on the table rows (0: off); when > 0, ``fit``
        first counts how often the training data reads each row (one pass over it).
    checkpoint_every: steps between checkpoints besides those at each evaluation (0: none).
    checkpoints: write them at all (False: no checkpoint, no ``resume``).
    max_steps: stop after this many steps in total (0: no limit).
    seed: seeds torch, numpy and random.
    progress: show a tqdm bar with running loss and samples/s.
    """

    epochs: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    mba_l2: float = 0.0
    metric: str = "auc"
    logloss_guard: float | None = None
    eval_every: int = 0
    patience: int = 1
    max_seconds: float = 0.0
    checkpoint_every: int = 0
    checkpoints: bool = True
    max_steps: int = 0
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if not _METRIC.fullmatch(self.metric):
            raise ConfigError(f"trainer.metric={self.metric!r} is not one of auc, gauc, logloss, hr@k, ndcg@k, mrr@k")
        if self.logloss_guard is not None and not (math.isfinite(self.logloss_guard) and self.logloss_guard >= 0):
            raise ConfigError(f"trainer.logloss_guard must be a finite number >= 0 (0 or null: off), got {self.logloss_guard}")
        if self.logloss_guard and self.metric in _LOWER_IS_BETTER:
            raise ConfigError(
                f"trainer.logloss_guard guards a metric where higher is better (auc, gauc); with metric: {self.metric} "
                "the logloss itself decides: remove logloss_guard"
            )
        if self.optimizer not in _OPTIMIZERS:
            raise ConfigError(f"trainer.optimizer={self.optimizer!r} is not one of {sorted(_OPTIMIZERS)}")
        if self.epochs < 1:
            raise ConfigError(f"trainer.epochs must be >= 1, got {self.epochs}")
        if self.mba_l2 < 0:
            raise ConfigError(f"trainer.mba_l2 must be >= 0 (0 turns mini-batch aware L2 off), got {self.mba_l2}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"trainer.lr must be a finite number > 0, got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"trainer.weight_decay must be a finite number >= 0, got {self.weight_decay}")
        if self.patience < 1:
            raise ConfigError(f"trainer.patience must be >= 1 (evaluations without improvement before stopping), got {self.patience}")
        if self.eval_every < 0:
            raise ConfigError(f"trainer.eval_every must be >= 0 (0: at the end of each epoch), got {self.eval_every}")
        if not (math.isfinite(self.max_seconds) and self.max_seconds >= 0):
            raise ConfigError(f"trainer.max_seconds must be a finite number >= 0 (0: no limit), got {self.max_seconds}")
        if self.max_steps < 0:
            raise ConfigError(f"trainer.max_steps must be >= 0 (0: no limit), got {self.max_steps}")
        if self.checkpoint_every < 0:
            raise ConfigError(f"trainer.checkpoint_every must be >= 0 (0: only at evaluations), got {self.checkpoint_every}")


@dataclass
class FitResult:
    """What ``fit`` returns: the validation metrics of each evaluation (with its ``epoch``,
    ``steps``, ``samples``, wall-clock ``seconds`` since the start and the process's ``rss_mb``),
    step losses, throughput, and the evaluation of the kept model (``best``)."""

    evaluations: list[dict[str, float]] = field(default_factory=list)
    losses: list[tuple[int, float]] = field(default_factory=list)
    steps: int = 0
    samples: int = 0
    train_seconds: float = 0.0
    best: dict[str, float] = field(default_factory=dict)

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.train_seconds if self.train_seconds else 0.0

    @property
    def peaks(self) -> dict[str, dict[str, float]]:
        """Each validation metric's best ``value`` over the evaluations (lowest logloss, highest
        of the others; NaN left out) with the ``epoch`` and ``steps`` of the first evaluation
        that reached it, e.g. ``{"auc": {"value": 0.76, "epoch": 2.0, "steps": 400.0}, ...}``."""
        peaks: dict[str, dict[str, float]] = {}
        for record in self.evaluations:
            for name, value in record.items():
                if not _METRIC.fullmatch(name) or not math.isfinite(value):
                    continue
                best = peaks.get(name)
                if best is None or (value < best["value"] if name in _LOWER_IS_BETTER else value > best["value"]):
                    peaks[name] = {"value": value, "epoch": record["epoch"], "steps": record["steps"]}
        return peaks


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resident_mb() -> float:
    """This process's resident memory now, in MiB (Linux ``/proc``; else the peak so far)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return peak_resident_mb()


def peak_resident_mb() -> float:
    """This process's peak resident memory so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class _Run:
    """Early-stopping state of one ``fit``: the best score, evaluations since it, the best
    weights (copied into buffers allocated once, so memory stays flat), and the start time."""

    best_score: float | None = None
    stale: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    start: float = 0.0
    evaluation_seconds: float = 0.0  # the latest evaluation's; 1.25x it is reserved for the closing one

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def keep(self, state: dict[str, torch.Tensor]) -> None:
        if self.best_state is None or self.best_state.keys() != state.keys():
            self.best_state = {name: value.detach().clone() for name, value in state.items()}
            return
        for name, value in state.items():
            self.best_state[name].copy_(value)


def dense_optimizer(name: str, groups: list[dict]) -> torch.optim.Optimizer:
    """The torch optimizer ``name`` (``adam`` or ``adamw``) over param ``groups``: fused (one
    kernel per group and step, about 3.5x faster than the loop over parameters on CPU for DIN's
    16 dense tensors) where every parameter is a plain floating-point tensor on CPU or CUDA, the
    default implementation otherwise (e.g. sharded tensors). Same update to float rounding."""
    params = [p for group in groups for p in group["params"]]
    fused = all(
        type(p) in (torch.Tensor, nn.Parameter) and p.is_floating_point() and p.device.type in ("cpu", "cuda")
        for p in params
    )
    return _OPTIMIZERS[name](groups, fused=fused or None)


class Trainer:
    """Trains a model (see the module docstring) on re-iterable streams of :class:`Batch`.

    A stream with ``set_epoch(e)`` is told the epoch before each pass (so its shuffle
    differs per epoch yet is reproducible).
    """

    def __init__(
        self, model: nn.Module, config: TrainerConfig | None = None, run_dir: str | Path | None = None,
        reports_dir: str | Path | None = None,
    ) -> None:  # fmt: skip
        """``run_dir`` holds the checkpoint and, unless ``reports_dir`` is given, the reports
        (``metrics.json``, ``training_curves.png``)."""
        self.model = model
        self.config = config or TrainerConfig()
        self.run_dir = Path(run_dir) if run_dir else None
        self.reports_dir = Path(reports_dir) if reports_dir else self.run_dir
        seed_everything(self.config.seed)
        groups = model.dense_param_groups(self.config.lr, self.config.weight_decay)
        self.optimizer = dense_optimizer(self.config.optimizer, groups)

    def evaluate(self, data: Any) -> dict[str, float]:
        """The model's metrics on ``data`` (e.g. AUC, logloss and GAUC of a CTR stream)."""
        return self.model.evaluate(data)

    # ---- training ---------------------------------------------------------------------
    def fit(self, train: Iterable[Batch], valid: Any = None, resume: bool = False) -> FitResult:
        """Train for at most ``config.epochs`` on ``train``, evaluating ``valid`` (what the
        model's ``evaluate`` takes) at the end of each epoch or every ``config.eval_every``
        steps; ends with the best validation weights."""
        cfg = self.config
        result, run = FitResult(), _Run()
        start_epoch, skip = 0, 0
        if cfg.mba_l2:  # before restoring: the counting pass may draw from the global RNG (loader workers)
            self.model.use_mini_batch_aware_l2(cfg.mba_l2, row_frequencies(self.model.tables, (b.sparse for b in train)))
        if resume:
            start_epoch, skip, result, run = self._restore()
        self.model.train()
        run.start = time.perf_counter() - result.train_seconds
        bar = tqdm(desc="training", unit="step", initial=result.steps, total=cfg.max_steps or None,
                   disable=not cfg.progress, dynamic_ncols=True)  # fmt: skip
        running, evaluated = None, True
        for epoch in range(start_epoch, cfg.epochs):
            if hasattr(train, "set_epoch"):
                train.set_epoch(epoch)
            for index, batch in enumerate(train):
                if index < skip:
                    continue
                loss, _ = self.model.loss(batch)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise TrainingDiverged(f"training loss became {value} at step {result.steps + 1}; lower the learning rates")
                result.steps += 1
                result.samples += batch.batch_size
                evaluated = False
                running = value if running is None else 0.98 * running + 0.02 * value
                if result.steps % 20 == 0 or result.steps == 1:
                    result.losses.append((result.steps, value))
                    bar.set_postfix(epoch=f"{epoch + 1}/{cfg.epochs}", loss=f"{running:.4f}", samples_s=f"{result.samples / max(run.elapsed(), 1e-9):,.0f}")
                bar.update(1)
                if cfg.eval_every and result.steps % cfg.eval_every == 0:
                    self._evaluate(valid, epoch, result, run)
                    evaluated = True
                    self._checkpoint(epoch, index + 1, result, run)
                elif cfg.checkpoint_every and result.steps % cfg.checkpoint_every == 0:
                    self._checkpoint(epoch, index + 1, result, run)
                if self._done(result, run):
                    break
            skip = 0
            if not cfg.eval_every:
                self._evaluate(valid, epoch, result, run)
                evaluated = True
                self._checkpoint(epoch + 1, 0, result, run)
            if self._done(result, run):
                break
        if not evaluated:  # stopped between two evaluations: the last weights are a candidate too
            self._evaluate(valid, epoch, result, run)
        bar.close()
        result.train_seconds = run.elapsed()
        if run.best_state is not None and run.stale:
            self.model.load_state_dict(run.best_state)
        if self.reports_dir:
            self.write_reports(result)
        return result

    def _done(self, result: FitResult, run: _Run) -> bool:
        cfg = self.config
        return (
            run.stale >= cfg.patience
            or bool(cfg.max_steps and result.steps >= cfg.max_steps)
            or bool(cfg.max_seconds and run.elapsed() + 1.25 * run.evaluation_seconds >= cfg.max_seconds)
        )

    def _evaluate(self, valid: Any, epoch: int, result: FitResult, run: _Run) -> None:
        """One evaluation on ``valid``: record it, keep the weights when ``config.metric`` improved."""
        cfg = self.config
        record: dict[str, float] = {"epoch": float(epoch + 1), "steps": float(result.steps), "samples": float(result.samples)}
        started = time.perf_counter()
        if valid is not None:
            record.update(self.evaluate(valid))
            if cfg.metric not in record:
                raise ValueError(f"trainer.metric={cfg.metric!r} is not among the validation metrics {sorted(record)}")
            if cfg.logloss_guard and "logloss" not in record:
                raise ValueError(f"trainer.logloss_guard needs a validation logloss, not among the validation metrics {sorted(record)}")
            if improves(record, result.evaluations, run.best_score, cfg.metric, cfg.logloss_guard):
                run.best_score, run.stale, result.best = record[cfg.metric], 0, record
                run.keep(self.model.state_dict())
            else:
                run.stale += 1
        run.evaluation_seconds = time.perf_counter() - started
        record.update(seconds=run.elapsed(), rss_mb=resident_mb())
        result.evaluations.append(record)

    # ---- checkpoints ------------------------------------------------------------------
    def _checkpoint(self, epoch: int, batch_index: int, result: FitResult, run: _Run) -> None:
        if not self.run_dir or not self.config.checkpoints:
            return
        timed = replace(result, train_seconds=run.elapsed())
        position = {"epoch": epoch, "batch_index": batch_index, "best_score": run.best_score, "stale": run.stale, "best_model": run.best_state}
        save_checkpoint(self.run_dir / "checkpoint", self.model, self.optimizer, timed, position)

    def _restore(self) -> tuple[int, int, FitResult, _Run]:
        if not self.run_dir:
            raise FileNotFoundError("resume=True but the Trainer has no run_dir to find a checkpoint in")
        if not self.config.checkpoints:
            raise ConfigError("resume=True but trainer.checkpoints is false: this run writes no checkpoint to resume from")
        result, p = restore_checkpoint(self.run_dir / "checkpoint", self.model, self.optimizer)
        return p["epoch"], p["batch_index"], result, _Run(best_score=p["best_score"], stale=p["stale"], best_state=p["best_model"])

    # ---- reports ----------------------------------------------------------------------
    def write_reports(self, result: FitResult) -> None:
        """``metrics.json`` (every evaluation, the kept one as ``best`` (selected by
        ``config.metric``), each metric's ``peaks``, throughput, the config) and
        ``training_curves.png`` in the reports directory."""
        assert self.reports_dir is not None
        self.reports_dir.mkdir(parents=True, exist_ok=True)
        report = {
            "evaluations": result.evaluations, "best": result.best, "peaks": result.peaks, "steps": result.steps,
            "samples": result.samples,
            "train_seconds": result.train_seconds, "samples_per_second": result.samples_per_second,
            "config": asdict(self.config),
        }
        write_text(self.reports_dir / "metrics.json", json.dumps(report, indent=2))
        plot_curves(result, self.reports_dir / "training_curves.png", self.config.metric)


_CHECKPOINT_KEYS = ("model", "buffers", "optimizer", "rng", "numpy_rng", "result")


def save_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, result: FitResult, position: dict[str, Any]
) -> None:
    """Write what a resumed run needs to go on as if never stopped: ``model`` and ``optimizer``
    state, the model's buffers that its state dict leaves out (e.g. the step counter of a
    fused table kernel), torch's and numpy's global RNG, ``result`` so far, and the caller's ``position`` (epoch,
    batch index, best weights, its own generators' states: tensors, numbers, strings, lists and
    dicts). Atomic (safetensors + JSON, no pickle; see :mod:`recsys_embed.checkpoint`)."""
    taken = sorted(set(position) & set(_CHECKPOINT_KEYS))
    if taken:
        raise ValueError(f"checkpoint position keys {taken} are reserved for the common state {list(_CHECKPOINT_KEYS)}")
    _, keys, pos, has_gauss, cached = np.random.get_state()
    model_state = model.state_dict()
    state: dict[str, Any] = {
        "model": model_state,
        "buffers": {name: buffer for name, buffer in model.named_buffers() if name not in model_state},
        "optimizer": optimizer.state_dict(),
        "rng": torch.get_rng_state(),
        "numpy_rng": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "result": asdict(result),
        **position,
    }
    save_state(path, state)


def restore_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[FitResult, dict[str, Any]]:
    """Load a :func:`save_checkpoint` into ``model``, ``optimizer`` and the global RNGs; returns
    the ``FitResult`` so far and the caller's ``position``."""
    if not path.exists():
        raise FileNotFoundError(f"resume=True but {path} does not exist")
    state = load_state(path)
    model.load_state_dict(state.pop("model"))
    buffers = dict(model.named_buffers())
    with torch.no_grad():
        for name, value in state.pop("buffers", {}).items():  # checkpoints of earlier versions have none
            buffers[name].copy_(value)
    optimizer.load_state_dict(state.pop("optimizer"))
    torch.set_rng_state(state.pop("rng"))
    rng = state.pop("numpy_rng")
    np.random.set_state(("MT19937", rng["keys"].numpy().astype(np.uint32), rng["pos"], rng["has_gauss"], rng["cached"]))
    r = state.pop("result")
    result = FitResult(
        evaluations=r["evaluations"], losses=[tuple(x) for x in r["losses"]], steps=r["steps"],
        samples=r["samples"], train_seconds=r["train_seconds"], best=r["best"],
    )
    return result, state


def plot_curves(result: FitResult, path: Path, metric: str) -> None:
    """Training loss by step and the validation metric by step, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    if result.losses:
        steps, losses = zip(*result.losses)
        left.plot(steps, losses)
    left.set(xlabel="step", ylabel="training loss", title="loss")
    evaluations = [e for e in result.evaluations if metric in e]
    right.plot([e["steps"] for e in evaluations], [e[metric] for e in evaluations], marker="o")
    right.set(xlabel="step", ylabel=f"validation {metric}", title=metric)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    with writing(path, tmp):
        try:
            fig.savefig(tmp)
        finally:
            plt.close(fig)
        tmp.rename(path)

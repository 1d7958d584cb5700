"""The Trainer: ``Trainer(model, config, run_dir).fit(train, valid)`` for scripts, one loop
for every task.

The model gives its training loss on a batch (``loss(batch) -> (loss, output)``), its
validation metrics on a validation set (``evaluate(data) -> {name: value}``) and the param
groups its table layout's fused kernel does not update (``dense_param_groups(lr, wd)``):
:class:`~recsys_embed.jobs.ranking_model.RankingModel` for CTR (AUC, logloss, GAUC),
:class:`~recsys_embed.jobs.next_item_model.NextItemModel` for next-item ranking (HR, NDCG,
MRR @k). Tables are updated by the optimizer fused into their kernel (inside ``backward``);
every other parameter by a torch Adam (or AdamW). Each epoch ends with an evaluation; early
stopping and the best model on ``config.metric``; checkpoints every ``config.checkpoint_every``
steps make ``resume=True`` after a kill reach the same final weights as an uninterrupted run
(data order is a function of the seed and the epoch, so the interrupted epoch is replayed
from its start and the batches already trained on are skipped). ``config.mba_l2 > 0`` adds
DIN's mini-batch aware L2 on the table rows (CTR), with the row frequencies counted in one
pass over the training data first.
"""

from __future__ import annotations

import copy
import json
import math
import random
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
_METRIC = re.compile(r"auc|gauc|logloss|(hr|ndcg|mrr)@[1-9][0-9]*")
_OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


@dataclass
class TrainerConfig:
    """Args:
    epochs: passes over the training data.
    lr / weight_decay: Adam for the dense parameters (tables carry their own fused optimizer).
    optimizer: ``adam`` (weight decay as L2 in the gradient) or ``adamw`` (decoupled weight decay).
    metric: validation metric for early stopping and best-model selection: auc, gauc, logloss
        (CTR) or hr@k, ndcg@k, mrr@k (next-item ranking).
    patience: epochs without improvement before stopping.
    mba_l2: weight of DIN's mini-batch aware L2 on the table rows (0: off); when > 0, ``fit``
        first counts how often the training data reads each row (one pass over it).
    checkpoint_every: steps between checkpoints (0: only at the end of each epoch).
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
    patience: int = 1
    checkpoint_every: int = 0
    max_steps: int = 0
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if not _METRIC.fullmatch(self.metric):
            raise ConfigError(f"trainer.metric={self.metric!r} is not one of auc, gauc, logloss, hr@k, ndcg@k, mrr@k")
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
            raise ConfigError(f"trainer.patience must be >= 1 (epochs without improvement before stopping), got {self.patience}")
        if self.max_steps < 0:
            raise ConfigError(f"trainer.max_steps must be >= 0 (0: no limit), got {self.max_steps}")
        if self.checkpoint_every < 0:
            raise ConfigError(f"trainer.checkpoint_every must be >= 0 (0: only at the end of each epoch), got {self.checkpoint_every}")


@dataclass
class FitResult:
    """What ``fit`` returns: per-epoch validation metrics, step losses, throughput."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    losses: list[tuple[int, float]] = field(default_factory=list)
    steps: int = 0
    samples: int = 0
    train_seconds: float = 0.0
    best: dict[str, float] = field(default_factory=dict)

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.train_seconds if self.train_seconds else 0.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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
        """Train for ``config.epochs`` on ``train``, evaluating ``valid`` (what the model's
        ``evaluate`` takes) after each epoch; ends with the best validation weights."""
        cfg = self.config
        result = FitResult()
        start_epoch, skip = 0, 0
        best_score, stale, best_state = None, 0, None
        if cfg.mba_l2:  # before restoring: the counting pass may draw from the global RNG (loader workers)
            self.model.use_mini_batch_aware_l2(cfg.mba_l2, row_frequencies(self.model.tables, (b.sparse for b in train)))
        if resume:
            start_epoch, skip, result, best_score, stale, best_state = self._restore()
        self.model.train()
        start = time.perf_counter()
        for epoch in range(start_epoch, cfg.epochs):
            if hasattr(train, "set_epoch"):
                train.set_epoch(epoch)
            bar = tqdm(desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", disable=not cfg.progress, dynamic_ncols=True)
            running = None
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
                running = value if running is None else 0.98 * running + 0.02 * value
                if result.steps % 20 == 0 or result.steps == 1:
                    result.losses.append((result.steps, value))
                    elapsed = time.perf_counter() - start + result.train_seconds
                    bar.set_postfix(loss=f"{running:.4f}", samples_s=f"{result.samples / max(elapsed, 1e-9):,.0f}")
                bar.update(1)
                if cfg.checkpoint_every and result.steps % cfg.checkpoint_every == 0:
                    self._checkpoint(epoch, index + 1, result, start, best_score, stale, best_state)
                if cfg.max_steps and result.steps >= cfg.max_steps:
                    break
            bar.close()
            skip = 0
            epoch_metrics: dict[str, float] = {"epoch": float(epoch + 1), "steps": float(result.steps)}
            if valid is not None:
                epoch_metrics.update(self.evaluate(valid))
                if cfg.metric not in epoch_metrics:
                    raise ValueError(f"trainer.metric={cfg.metric!r} is not among the validation metrics {sorted(epoch_metrics)}")
                score = epoch_metrics[cfg.metric]
                lower = cfg.metric in _LOWER_IS_BETTER
                better = best_score is None or (score < best_score if lower else score > best_score)
                if better:
                    best_score, stale, result.best = score, 0, dict(epoch_metrics)
                    best_state = copy.deepcopy(self.model.state_dict())
                else:
                    stale += 1
            result.epochs.append(epoch_metrics)
            self._checkpoint(epoch + 1, 0, result, start, best_score, stale, best_state)
            if stale >= cfg.patience or (cfg.max_steps and result.steps >= cfg.max_steps):
                break
        result.train_seconds += time.perf_counter() - start
        if best_state is not None and stale:
            self.model.load_state_dict(best_state)
        if self.reports_dir:
            self.write_reports(result)
        return result

    # ---- checkpoints ------------------------------------------------------------------
    def _checkpoint(
        self, epoch: int, batch_index: int, result: FitResult, start: float, best: float | None, stale: int, best_state: dict | None
    ) -> None:
        if not self.run_dir:
            return
        timed = replace(result, train_seconds=result.train_seconds + time.perf_counter() - start)
        position = {"epoch": epoch, "batch_index": batch_index, "best_score": best, "stale": stale, "best_model": best_state}
        save_checkpoint(self.run_dir / "checkpoint", self.model, self.optimizer, timed, position)

    def _restore(self) -> tuple[int, int, FitResult, float | None, int, dict | None]:
        if not self.run_dir:
            raise FileNotFoundError("resume=True but the Trainer has no run_dir to find a checkpoint in")
        result, p = restore_checkpoint(self.run_dir / "checkpoint", self.model, self.optimizer)
        return p["epoch"], p["batch_index"], result, p["best_score"], p["stale"], p["best_model"]

    # ---- reports ----------------------------------------------------------------------
    def write_reports(self, result: FitResult) -> None:
        """``metrics.json`` and ``training_curves.png`` in the reports directory."""
        assert self.reports_dir is not None
        self.reports_dir.mkdir(parents=True, exist_ok=True)
        report = {
            "epochs": result.epochs, "best": result.best, "steps": result.steps, "samples": result.samples,
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
        epochs=r["epochs"], losses=[tuple(x) for x in r["losses"]], steps=r["steps"],
        samples=r["samples"], train_seconds=r["train_seconds"], best=r["best"],
    )
    return result, state


def plot_curves(result: FitResult, path: Path, metric: str) -> None:
    """Training loss by step and the validation metric by epoch, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    if result.losses:
        steps, losses = zip(*result.losses)
        left.plot(steps, losses)
    left.set(xlabel="step", ylabel="training loss", title="loss")
    epochs = [e for e in result.epochs if metric in e]
    right.plot([e["epoch"] for e in epochs], [e[metric] for e in epochs], marker="o")
    right.set(xlabel="epoch", ylabel=f"validation {metric}", title=metric)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    with writing(path, tmp):
        try:
            fig.savefig(tmp)
        finally:
            plt.close(fig)
        tmp.rename(path)

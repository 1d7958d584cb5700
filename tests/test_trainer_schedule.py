"""When the Trainer validates and stops: every ``eval_every`` steps across epochs (the last step
too), patience counted in evaluations, a wall-clock budget, no checkpoints when told, one
progress bar, and the best weights kept in buffers allocated once."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from recsys_embed.errors import ConfigError
from recsys_embed.jobs.trainer import Trainer, TrainerConfig


@dataclass
class Step:
    batch_size: int = 4


class Scripted(nn.Module):
    """A one-parameter model whose validation NDCG@10 follows ``scores`` (one per evaluation)
    and whose loss pulls its weight up by one SGD-like step a batch."""

    def __init__(self, scores: list[float], sleep: float = 0.0, evaluation_sleep: float = 0.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))
        self.scores = list(scores)
        self.sleep = sleep
        self.evaluation_sleep = evaluation_sleep
        self.seen: list[float] = []

    def loss(self, batch: Step) -> tuple[torch.Tensor, None]:
        time.sleep(self.sleep)
        return -self.weight, None

    def evaluate(self, data: object) -> dict[str, float]:
        self.seen.append(float(self.weight.detach()))
        time.sleep(self.evaluation_sleep)
        return {"ndcg@10": self.scores.pop(0) if self.scores else 0.0}

    def dense_param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        return [{"params": [self.weight], "lr": lr, "weight_decay": weight_decay}]


def fit(model: Scripted, tmp_path: Path | None = None, **config: object) -> tuple[Trainer, object]:
    trainer = Trainer(model, TrainerConfig(metric="ndcg@10", optimizer="adam", lr=0.1, progress=False, **config), tmp_path)
    return trainer, trainer.fit([Step()] * 12, valid="valid")


def test_evaluations_every_n_steps_across_epochs_and_at_the_last_step() -> None:
    model = Scripted([0.1, 0.2, 0.3, 0.4, 0.5])
    _, result = fit(model, epochs=2, eval_every=5, patience=10)
    assert [e["steps"] for e in result.evaluations] == [5, 10, 15, 20, 24]
    assert [e["epoch"] for e in result.evaluations] == [1, 1, 2, 2, 2]
    assert all(e["seconds"] > 0 and e["rss_mb"] > 0 for e in result.evaluations)
    assert result.best["steps"] == 24 and result.steps == 24


def test_patience_counts_evaluations_and_the_best_weights_come_back() -> None:
    model = Scripted([0.1, 0.3, 0.2, 0.25, 0.9])
    _, result = fit(model, epochs=5, eval_every=4, patience=2)
    assert [e["steps"] for e in result.evaluations] == [4, 8, 12, 16]  # two evaluations below 0.3, then stop
    assert result.best["ndcg@10"] == 0.3 and result.best["steps"] == 8
    assert float(model.weight) == pytest.approx(model.seen[1])  # the weights of step 8


def test_the_wall_clock_budget_stops_training_and_validates_the_last_weights() -> None:
    model = Scripted([0.1, 0.2], sleep=0.05)
    _, result = fit(model, epochs=100, eval_every=1000, max_seconds=0.3)
    assert 3 <= result.steps < 20 and len(result.evaluations) == 1
    assert result.evaluations[0]["steps"] == result.steps and result.train_seconds >= 0.3


def test_the_budget_reserves_the_closing_evaluation() -> None:
    # steps of 10 ms, evaluations of 250 ms every 5 steps: the budget of 1 s ends after the third
    # evaluation (0.9 s), since a fourth (steps 16-20 and its evaluation, 1.2 s) would not fit
    model = Scripted([0.1, 0.2, 0.3, 0.4, 0.5], sleep=0.01, evaluation_sleep=0.25)
    _, result = fit(model, epochs=100, eval_every=5, max_seconds=1.0, patience=100)
    assert result.steps < 20 and result.train_seconds < 1.0 + 0.15


def test_per_epoch_evaluation_stays_the_default() -> None:
    _, result = fit(Scripted([0.1, 0.2, 0.15]), epochs=3, patience=1)
    assert [e["steps"] for e in result.evaluations] == [12, 24, 36] and result.best["epoch"] == 2


def test_without_checkpoints_nothing_is_written_and_resume_is_refused(tmp_path: Path) -> None:
    fit(Scripted([0.1, 0.2]), tmp_path, epochs=2, eval_every=5, checkpoints=False)
    assert not (tmp_path / "checkpoint").exists() and (tmp_path / "metrics.json").is_file()
    trainer = Trainer(Scripted([]), TrainerConfig(metric="ndcg@10", checkpoints=False, progress=False), tmp_path)
    with pytest.raises(ConfigError, match="trainer.checkpoints is false"):
        trainer.fit([Step()], valid="valid", resume=True)
    fit(Scripted([0.1, 0.2]), tmp_path / "with", epochs=1, eval_every=5)
    assert (tmp_path / "with" / "checkpoint").exists()


def test_the_best_weights_are_copied_into_the_same_buffers() -> None:
    """Memory stays flat over a long run: each improvement overwrites the kept copy."""
    model = Scripted([0.1, 0.2, 0.3, 0.4])
    buffers: list[int] = []
    original = model.evaluate

    def evaluate(data: object) -> dict[str, float]:
        run = trainer_run[0]
        if run.best_state is not None:
            buffers.append(run.best_state["weight"].data_ptr())
        return original(data)

    model.evaluate = evaluate  # type: ignore[method-assign]
    trainer = Trainer(model, TrainerConfig(metric="ndcg@10", epochs=1, eval_every=3, patience=10, progress=False))
    trainer_run: list = []
    keep = trainer._evaluate

    def spy(valid: object, epoch: int, result: object, run: object) -> None:
        trainer_run[:] = [run]
        keep(valid, epoch, result, run)

    trainer._evaluate = spy  # type: ignore[method-assign]
    trainer.fit([Step()] * 12, valid="valid")
    assert len(buffers) == 3 and len(set(buffers)) == 1


@pytest.mark.parametrize("key, value, message", [("eval_every", -1, "eval_every must be >= 0"),
                                                 ("max_seconds", float("nan"), "max_seconds must be a finite number")])
def test_bad_schedule_settings_are_named(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=f"trainer.{message}"):
        TrainerConfig(**{key: value})

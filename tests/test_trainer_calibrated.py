"""Calibrated model selection: stopping on validation logloss (lower is better), AUC guarded by
logloss (``logloss_guard``), and the reports giving each metric's peak with its epoch and step."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from test_trainer_schedule import Scripted, Step

from recsys_embed.errors import ConfigError
from recsys_embed.jobs.config import from_mapping
from recsys_embed.jobs.trainer import Trainer, TrainerConfig
from recsys_embed.pipelines import split_dataset
from recsys_embed.pipelines.synthetic.ctr import write_ctr


class Calibrated(Scripted):
    """A scripted model whose validation AUC and logloss follow ``scores``, one pair per evaluation."""

    def evaluate(self, data: object) -> dict[str, float]:
        self.seen.append(float(self.weight.detach()))
        auc, logloss = self.scores.pop(0)
        return {"auc": auc, "logloss": logloss}


def fit(scores: list[tuple[float, float]], tmp_path: Path | None = None, **config: object) -> tuple[Calibrated, object]:
    model = Calibrated(scores)  # type: ignore[arg-type]
    trainer = Trainer(model, TrainerConfig(lr=0.1, progress=False, checkpoints=False, **config), tmp_path)
    return model, trainer.fit([Step()] * 4, valid="valid")


def test_logloss_selects_the_lowest_and_stops_when_it_rises() -> None:
    model, result = fit([(0.70, 0.50), (0.72, 0.45), (0.75, 0.47), (0.76, 0.48), (0.77, 0.40)], metric="logloss", epochs=5, patience=2)
    assert len(result.evaluations) == 4  # two evaluations above 0.45, then stop
    assert result.best["logloss"] == 0.45 and result.best["epoch"] == 2
    assert float(model.weight.detach()) == pytest.approx(model.seen[1])  # the weights of epoch 2


@pytest.mark.parametrize(("guard", "kept_epoch"), [(None, 4), (0.0, 4), (0.05, 5)])
def test_the_logloss_guard_refuses_an_auc_gain_that_costs_logloss(guard: float | None, kept_epoch: int) -> None:
    # epoch 4 has the highest AUC but a logloss of 0.48 > 1.05 x 0.45 (the lowest so far): with the
    # guard it is no improvement, and epoch 5 (AUC above epoch 3's, logloss 0.44) is kept instead
    scores = [(0.70, 0.50), (0.72, 0.45), (0.74, 0.47), (0.76, 0.48), (0.75, 0.44)]
    model, result = fit(scores, metric="auc", logloss_guard=guard, epochs=5, patience=2)
    assert len(result.evaluations) == 5 and result.best["epoch"] == kept_epoch
    assert float(model.weight.detach()) == pytest.approx(model.seen[kept_epoch - 1])


def test_the_guard_bound_is_inclusive_and_counts_staleness() -> None:
    # lowest logloss 0.5, r = 0.5: 0.75 is allowed, 0.76 is not (and counts toward patience)
    _, result = fit([(0.6, 0.5), (0.7, 0.75), (0.8, 0.76), (0.9, 0.77), (0.95, 0.3)], logloss_guard=0.5, epochs=5, patience=2)
    assert len(result.evaluations) == 4 and result.best["epoch"] == 2


def test_reports_give_each_metric_peak_with_its_epoch_and_step(tmp_path: Path) -> None:
    _, result = fit([(0.70, 0.50), (0.72, 0.45), (0.76, 0.48), (0.74, 0.47)], tmp_path, logloss_guard=0.01, epochs=4, patience=3)
    assert result.peaks == {
        "auc": {"value": 0.76, "epoch": 3.0, "steps": 12.0},
        "logloss": {"value": 0.45, "epoch": 2.0, "steps": 8.0},
    }
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["peaks"] == result.peaks and report["best"]["epoch"] == 2  # 0.48 > 1.01 x 0.45: epoch 3 not kept
    assert report["config"]["metric"] == "auc" and report["config"]["logloss_guard"] == 0.01


@pytest.mark.parametrize(("config", "message"), [
    ({"metric": "logloss", "logloss_guard": 0.01}, "logloss_guard guards a metric where higher is better"),
    ({"logloss_guard": -0.1}, "logloss_guard must be a finite number >= 0"),
    ({"logloss_guard": float("inf")}, "logloss_guard must be a finite number >= 0"),
])  # fmt: skip
def test_bad_guards_are_named(config: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainerConfig(**config)  # type: ignore[arg-type]


def test_yaml_keys() -> None:
    assert from_mapping(TrainerConfig, {"metric": "logloss"}, "trainer").metric == "logloss"
    assert from_mapping(TrainerConfig, {"logloss_guard": 0.02}, "trainer").logloss_guard == 0.02
    assert from_mapping(TrainerConfig, {"logloss_guard": None}, "trainer").logloss_guard is None


def test_a_guard_needs_a_validation_logloss() -> None:
    trainer = Trainer(Scripted([0.1]), TrainerConfig(metric="ndcg@10", logloss_guard=0.01, progress=False))
    with pytest.raises(ValueError, match="logloss_guard needs a validation logloss"):
        trainer.fit([Step()], valid="valid")


def test_cli_train_summary_shows_both_peaks_and_the_selection(tmp_path: Path, cli_main) -> None:  # type: ignore[no-untyped-def]
    write_ctr(tmp_path / "raw", rows=3000, seed=0, progress=False)
    splits = split_dataset(tmp_path / "raw", tmp_path / "splits", by="time", fractions=(0.8, 0.1, 0.1))
    config = {
        "data": {name: str(path) for name, path in splits.items()},
        "model": {"name": "fm"},
        "trainer": {"epochs": 2, "patience": 2, "lr": 0.003, "logloss_guard": 0.01, "progress": False},
        "batching": {"batch_size": 256},
        "run_dir": str(tmp_path / "run"),
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    result = cli_main("train", "--config", str(tmp_path / "run.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]
    line = result.stdout.strip().splitlines()[-1]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for name, label in (("auc", "AUC"), ("logloss", "logloss")):
        peak = metrics["peaks"][name]
        assert f"best valid {label} {peak['value']:.4f} (epoch {peak['epoch']:.0f}, step {peak['steps']:.0f})" in line, line
    assert re.search(r"kept epoch [12], step \d+ \(by auc, logloss guard 0\.01\)", line), line
    assert metrics["best"]["epoch"] in (1, 2) and len(metrics["evaluations"]) == 2

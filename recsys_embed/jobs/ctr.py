"""The jobs behind the CLI: train from a run config, evaluate a saved model, the demo."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from recsys_embed.jobs.builders import build_model, build_tables, layout_for_model, validate_specs
from recsys_embed.errors import ConfigError, RunDirError
from recsys_embed.files import write_text
from recsys_embed.jobs.config import BatchingConfig, DataConfig, RunConfig, from_mapping
from recsys_embed.features import Schema
from recsys_embed.jobs.model_io import load_model, save_model
from recsys_embed.pipelines import Pipeline, split_dataset
from recsys_embed.pipelines.converted import converted
from recsys_embed.pipelines.named import SCHEMAS, named_schema
from recsys_embed.pipelines.synthetic.ctr import oracle_auc, write_ctr
from recsys_embed.jobs.ranking_model import RankingModel
from recsys_embed.jobs.run_dir import RunDir
from recsys_embed.tables import EvolutionConfig, TableOptimizer
from recsys_embed.jobs.trainer import Trainer, TrainerConfig, seed_everything

def resolve_schema(spec: Any) -> Schema:
    """A schema from a name of :data:`SCHEMAS` (``criteo``, or ``{name: criteo, min_count: 1}``),
    a path to a JSON/YAML/TOML file, or an inline mapping with ``features``."""
    if isinstance(spec, Schema):
        return spec
    if isinstance(spec, dict):
        return named_schema(spec) if "name" in spec else Schema.from_dict(spec)
    if isinstance(spec, str) and spec in SCHEMAS:
        return named_schema(spec)
    if isinstance(spec, str) and Path(spec).is_file():
        return Schema.load(spec)
    raise ValueError(f"schema {spec!r} is neither one of {sorted(SCHEMAS)} nor an existing schema file")


@dataclass
class TrainReport:
    """What ``train`` did: the kept model's ``valid`` evaluation (chosen by ``selection``,
    the trainer's metric and logloss guard), its ``test`` metrics, each validation metric's
    ``peaks`` (:attr:`~recsys_embed.jobs.trainer.FitResult.peaks`), throughput and steps."""

    run_dir: Path
    valid: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    samples_per_second: float = 0.0
    steps: int = 0
    peaks: dict[str, dict[str, float]] = field(default_factory=dict)
    selection: str = "auc"

    def summary(self) -> str:
        metrics = self.test or self.valid
        which = "test" if self.test else "valid"
        auc = metrics.get("auc", float("nan"))
        parts = [f"{which} AUC {auc:.4f}" if auc == auc else f"{which} AUC undefined (one class)"]
        if "oracle_auc" in metrics:
            parts[0] += f" (oracle {metrics['oracle_auc']:.4f})"
        if "gauc" in metrics:
            parts.append(f"GAUC {metrics['gauc']:.4f}")
        parts.append(f"logloss {metrics.get('logloss', float('nan')):.4f}")
        for name, label in (("auc", "AUC"), ("logloss", "logloss")):
            if name in self.peaks:
                peak = self.peaks[name]
                parts.append(f"best valid {label} {peak['value']:.4f} (epoch {peak['epoch']:.0f}, step {peak['steps']:.0f})")
        if self.peaks:  # validated: the kept evaluation was chosen among them
            parts.append(f"kept epoch {self.valid['epoch']:.0f}, step {self.valid['steps']:.0f} (by {self.selection})")
        parts.append(f"{self.samples_per_second / 1000:.1f}k samples/s")
        parts.append(f"saved to {self.run_dir}/")
        return "  ".join(parts)


def read_data(data: DataConfig, folder: Path) -> DataConfig:
    """``data`` itself, or with a ``reader``: each split read by it into ``folder/SPLIT.parquet``
    (:func:`~recsys_embed.pipelines.converted.converted`: once, reused while the sources are unchanged)."""
    if data.reader is None:
        return data
    splits = {split: getattr(data, split) for split in ("train", "valid", "test") if getattr(data, split)}
    return DataConfig(**{split: str(converted(data.reader, source, folder, split)) for split, source in splits.items()})


def selection(trainer: TrainerConfig) -> str:
    """How the kept model was chosen, in words: ``auc`` or ``auc, logloss guard 0.01``."""
    return f"{trainer.metric}, logloss guard {trainer.logloss_guard:g}" if trainer.logloss_guard else trainer.metric


def train(
    config: RunConfig, schema: Schema | None = None, with_oracle: bool = False, resume: bool = False, overwrite: bool = False
) -> TrainReport:
    """Fit the pipeline on the training data, train, evaluate, save artifact and reports.

    ``config.run_dir`` is locked for the run (see :mod:`recsys_embed.jobs.run_dir`); one
    holding an earlier run's checkpoint or outputs is refused unless ``resume`` (continue from
    its checkpoint, as if never stopped) or ``overwrite`` (start afresh). The model, metrics
    and curves appear together at the end."""
    schema = schema or resolve_schema(config.schema)
    validate_specs(config.layout, config.model)
    layout = layout_for_model(config.layout, config.model, config.trainer.mba_l2)
    with RunDir.open(config.run_dir, resume=resume, overwrite=overwrite) as run:
        config = replace(config, data=read_data(config.data, run.path / "data"))
        seed_everything(config.trainer.seed)  # tables and model weights are drawn from the run's seed
        pipeline = Pipeline(schema).fit(config.data.train)
        tables = build_tables(layout, schema, pipeline.num_embeddings, config.table_optimizer)
        model = build_model(config.model, tables.shapes(len(schema.dense_features)), schema)
        ranking = RankingModel(tables, model)
        trainer = Trainer(ranking, config.trainer, run.path, reports_dir=run.staging)
        b = config.batching
        train_stream = pipeline.batches(config.data.train, batch_size=b.batch_size, shuffle=b.shuffle, seed=config.trainer.seed, num_workers=b.num_workers)
        valid_stream = pipeline.batches(config.data.valid, batch_size=b.batch_size) if config.data.valid else None
        if tables.has_search_stage():
            if valid_stream is None:
                raise ConfigError(f"layout {layout['name']!r} needs data.valid: the dimension search scores candidates on it")
            if resume:
                raise RunDirError(f"layout {layout['name']!r} searches its dims between two trainings and cannot resume; use --overwrite")
            ranking, trainer, result = _search_and_retrain(ranking, trainer, config, train_stream, valid_stream, run.path)
        else:
            result = trainer.fit(train_stream, valid_stream, resume=resume)
        report = TrainReport(run.path, valid=result.best or (result.evaluations[-1] if result.evaluations else {}),
                             samples_per_second=result.samples_per_second, steps=result.steps, peaks=result.peaks,
                             selection=selection(config.trainer))
        if config.data.test:
            report.test = trainer.evaluate(pipeline.batches(config.data.test, batch_size=b.batch_size))
            if with_oracle:
                report.test["oracle_auc"] = oracle_auc(config.data.test)
        serving = ranking.tables.serving_layout()  # pruned: the compact export (kept rows, chosen dims)
        if serving is not ranking.tables:
            ranking = RankingModel(serving, ranking.model)
        save_model(run.staging / "model", pipeline, ranking, layout, config.model)
        metrics_path = run.staging / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        metrics["test"] = report.test
        write_text(metrics_path, json.dumps(metrics, indent=2))
        run.commit()
    return report


def _search_and_retrain(
    ranking: RankingModel, trainer: Trainer, config: RunConfig, train_stream: Any, valid_stream: Any, run_dir: Path
) -> tuple[RankingModel, Trainer, Any]:
    """A layout with a search stage (OptEmbed) trains in three stages: supernet training,
    the layout's search of its dims on validation AUC, retraining from the initial weights
    with the layout it returns (OptEmbed: row masks frozen, the chosen dims)."""
    initial_model = copy.deepcopy(ranking.model.state_dict())
    trainer.fit(train_stream, valid_stream)
    ranking.eval()
    search_config = from_mapping(EvolutionConfig, config.layout.get("search", {}), "layout.search")
    fresh, search = ranking.tables.search_stage(lambda: trainer.evaluate(valid_stream)["auc"], search_config)
    print(f"{ranking.tables.layout_name} search: dims {search.dims} validation AUC {search.score:.4f} after {search.evaluations} evaluations")
    ranking.model.load_state_dict(initial_model)
    retrained = RankingModel(fresh, ranking.model)
    retrainer = Trainer(retrained, config.trainer, run_dir / "retrain")
    return retrained, retrainer, retrainer.fit(train_stream, valid_stream)


def evaluate(model_path: str | Path, data: str | Path, batch_size: int = 4096) -> dict[str, float]:
    """AUC, logloss (and GAUC) of a saved model on a dataset."""
    loaded = load_model(model_path, task="ctr")
    trainer = Trainer(loaded.model, TrainerConfig(progress=False))
    return trainer.evaluate(loaded.pipeline.batches(data, batch_size=batch_size))


@dataclass
class DemoConfig:
    rows: int = 1_000_000
    data_dir: str = "data"
    run_dir: str = "runs/demo"
    model: str = "din"
    seed: int = 0
    batch_size: int = 2048


def demo(cfg: DemoConfig) -> TrainReport:
    """Generate the synthetic CTR data if missing, split by time, train one epoch, evaluate
    (replacing an earlier run in ``cfg.run_dir``)."""
    data = Path(cfg.data_dir) / f"synthetic-ctr-{cfg.rows}-seed{cfg.seed}"
    if not (data / "raw").exists():
        write_ctr(data / "raw", rows=cfg.rows, seed=cfg.seed)
    if not (data / "splits").exists():
        split_dataset(data / "raw", data / "splits", by="time", fractions=(0.8, 0.1, 0.1), seed=cfg.seed)
    splits = {name: str(data / "splits" / name) for name in ("train", "valid", "test")}
    config = RunConfig(
        data=DataConfig(**splits),
        schema="synthetic_ctr",
        model={"name": cfg.model},
        table_optimizer=TableOptimizer("rowwise_adagrad", lr=0.4),  # tuned in benchmarks/quality.py
        trainer=TrainerConfig(epochs=1, lr=3e-3, seed=cfg.seed),
        batching=BatchingConfig(batch_size=cfg.batch_size, shuffle=True),
        run_dir=cfg.run_dir,
    )
    return train(config, with_oracle=True, overwrite=True)

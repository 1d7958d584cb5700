"""Save and load a trained model: fitted pipeline + table layout + model, one artifact.

The artifact (``recsys_embed.artifacts``) holds tensors in safetensors, the pipeline's
vocabularies as arrays (integers in safetensors, strings in Arrow IPC) and everything else in
a JSON manifest: the schema and fitted pipeline state (so scoring uses exactly the training
vocabularies), the layout and model names and configs. Loading never unpickles.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys_embed.artifacts import load_arrays, load_artifact, save_artifact
from recsys_embed.jobs.builders import build_model
from recsys_embed.pipelines import Pipeline
from recsys_embed.jobs.ranking_model import RankingModel
from recsys_embed.tables.registry import layout_class


@dataclass
class LoadedModel:
    pipeline: Pipeline
    model: RankingModel
    manifest: dict[str, Any]


def save_model(path: str | Path, pipeline: Pipeline, model: RankingModel, layout: dict[str, Any], model_spec: dict[str, Any]) -> Path:
    """Write ``pipeline`` + ``model`` to the artifact directory ``path`` (atomically)."""
    table_tensors, table_config = model.tables.export_state()
    tensors = {f"tables.{k}": v for k, v in table_tensors.items()}
    tensors.update({f"model.{k}": v for k, v in model.model.state_dict().items()})
    arrays, pipeline_config = pipeline.export_state()
    manifest = {
        "pipeline": pipeline_config,
        "layout": dict(layout),
        "layout_state": table_config,
        "model": dict(model_spec),
    }
    save_artifact(path, tensors, manifest, arrays)
    return Path(path)


def load_model(path: str | Path) -> LoadedModel:
    """Rebuild the pipeline and the model saved by :func:`save_model` (eval mode)."""
    tensors, manifest = load_artifact(path)
    for key in ("pipeline", "layout", "layout_state", "model"):
        if key not in manifest:
            raise ValueError(f"artifact {path}: manifest has no {key!r}; it was not written by save_model")
    pipeline = Pipeline.from_state(load_arrays(path, manifest), manifest["pipeline"], where=f"artifact {path}")
    try:
        tables_class = layout_class(str(manifest["layout_state"].get("layout")))
    except ValueError as error:
        raise ValueError(f"artifact {path}: layout_state: {error}") from error
    table_tensors = {k[len("tables."):]: v for k, v in tensors.items() if k.startswith("tables.")}
    tables = tables_class.from_state(pipeline.schema, table_tensors, manifest["layout_state"])
    model = build_model(manifest["model"], tables.shapes(len(pipeline.schema.dense_features)), pipeline.schema)
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    ranking = RankingModel(tables, model)
    ranking.eval()
    return LoadedModel(pipeline, ranking, manifest)

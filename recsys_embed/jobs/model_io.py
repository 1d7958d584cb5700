"""Save and load a trained model: fitted pipeline + table layout + model, one artifact.

The artifact (``recsys_embed.artifacts``) holds tensors in safetensors, the pipeline's
vocabularies as arrays (integers in safetensors, strings in Arrow IPC) and everything else in
a JSON manifest: the task (``ctr``: a :class:`RankingModel`; ``sequential``: a
:class:`NextItemModel`), the schema and fitted pipeline state (so scoring uses exactly the
training vocabularies), the layout and model names and configs. Loading never unpickles.

A model config key whose default changes is listed in ``MANIFEST_DEFAULTS`` with its old
default: a manifest without the key was written before the change and loads with the old
value; :func:`save_model` always writes such keys, so later artifacts never depend on a default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from recsys_embed.artifacts import load_arrays, load_artifact, save_artifact
from recsys_embed.errors import ArtifactError
from recsys_embed.jobs.builders import MODELS, build_model, build_sequential_model, sequential_config
from recsys_embed.jobs.next_item_model import NextItemModel
from recsys_embed.jobs.ranking_model import RankingModel
from recsys_embed.pipelines import Pipeline
from recsys_embed.tables.registry import layout_class

# model name -> {config key: its default before the key existed or its default changed}
MANIFEST_DEFAULTS: dict[str, dict[str, Any]] = {
    "autoint": {"residual": "identity"},  # AutoInt's learned residual projection became the default
}


@dataclass
class LoadedModel:
    pipeline: Pipeline
    model: Any  # RankingModel (task "ctr") or NextItemModel (task "sequential")
    manifest: dict[str, Any]

    @property
    def task(self) -> str:
        return self.manifest.get("task", "ctr")


def save_model(
    path: str | Path,
    pipeline: Pipeline,
    model: RankingModel | NextItemModel,
    layout: dict[str, Any],
    model_spec: dict[str, Any],
    task: str = "ctr",
    task_settings: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``pipeline`` + ``model`` (its ``tables`` and ``model``) to the artifact directory
    ``path`` (atomically); ``task_settings`` go to the manifest's ``task_settings``."""
    table_tensors, table_config = model.tables.export_state()
    tensors = {f"tables.{k}": v for k, v in table_tensors.items()}
    tensors.update({f"model.{k}": v for k, v in model.model.state_dict().items()})
    arrays, pipeline_config = pipeline.export_state()
    manifest = {
        "task": task,
        "pipeline": pipeline_config,
        "layout": dict(layout),
        "layout_state": table_config,
        "model": _with_current_defaults(model_spec),
    }
    if task_settings:
        manifest["task_settings"] = dict(task_settings)
    save_artifact(path, tensors, manifest, arrays)
    return Path(path)


def _with_current_defaults(spec: Mapping[str, Any]) -> dict[str, Any]:
    """``spec`` with each ``MANIFEST_DEFAULTS`` key it lacks set to the config's current default."""
    keys = MANIFEST_DEFAULTS.get(str(spec.get("name")), {})
    if not keys:
        return dict(spec)
    defaults = {f.name: f.default for f in dataclasses.fields(MODELS[spec["name"]][1])}
    return {**spec, **{key: defaults[key] for key in keys if key not in spec}}


def _with_manifest_defaults(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A saved model spec with each ``MANIFEST_DEFAULTS`` key it lacks set to its old default."""
    return {**spec, **{k: v for k, v in MANIFEST_DEFAULTS.get(str(spec.get("name")), {}).items() if k not in spec}}


def _ranking_model(tables: nn.Module, pipeline: Pipeline, manifest: dict[str, Any]) -> RankingModel:
    model = build_model(manifest["model"], tables.shapes(len(pipeline.schema.dense_features)), pipeline.schema)
    return RankingModel(tables, model)


def _next_item_model(tables: nn.Module, pipeline: Pipeline, manifest: dict[str, Any]) -> NextItemModel:
    config = sequential_config(manifest["model"], "manifest model")
    feature = manifest["task_settings"]["feature"]
    rows = pipeline.num_embeddings[pipeline.schema[feature].table]  # type: ignore[index]
    return NextItemModel(tables, build_sequential_model(config, rows), pipeline.schema, feature)


TASK_MODELS: dict[str, Callable[[nn.Module, Pipeline, dict[str, Any]], Any]] = {
    "ctr": _ranking_model,
    "sequential": _next_item_model,
}


def load_model(path: str | Path, task: str | None = None) -> LoadedModel:
    """Rebuild the pipeline and the model saved by :func:`save_model` (eval mode); with
    ``task``, refuse an artifact of another task."""
    tensors, manifest = load_artifact(path)
    saved = manifest.get("task", "ctr")
    if task is not None and saved != task:
        raise ArtifactError(f"artifact {path}: task is {saved!r}, not a {task!r} model")
    task = saved
    if task == "sequential" and "items" in manifest and "pipeline" not in manifest:
        raise ArtifactError(
            f"artifact {path}: a sequential model of an earlier version (its own item vocabulary, no pipeline); "
            "retrain it with this version"
        )
    if task not in TASK_MODELS:
        raise ArtifactError(f"artifact {path}: unknown task {task!r}; expected one of {sorted(TASK_MODELS)}")
    for key in ("pipeline", "layout", "layout_state", "model"):
        if key not in manifest:
            raise ArtifactError(f"artifact {path}: manifest has no {key!r}; it was not written by save_model")
    manifest.setdefault("task_settings", {})
    if task == "ctr" and isinstance(manifest["model"], Mapping):
        manifest["model"] = _with_manifest_defaults(manifest["model"])  # a re-save keeps the old value
    pipeline = Pipeline.from_state(load_arrays(path, manifest), manifest["pipeline"], where=f"artifact {path}")
    try:
        tables_class = layout_class(str(manifest["layout_state"].get("layout")))
    except ValueError as error:
        raise ArtifactError(f"artifact {path}: layout_state: {error}") from error
    table_tensors = {k[len("tables."):]: v for k, v in tensors.items() if k.startswith("tables.")}
    try:
        tables = tables_class.from_state(pipeline.schema, table_tensors, manifest["layout_state"])
    except (KeyError, TypeError, RuntimeError, IndexError) as err:  # a layout's own ValueErrors already say what differs
        raise ArtifactError(f"artifact {path}: the tables do not fit layout_state and the schema: {_first_line(err)}") from None
    try:
        model = TASK_MODELS[task](tables, pipeline, manifest)
        model.model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    except (KeyError, TypeError, RuntimeError, IndexError) as err:
        raise ArtifactError(f"artifact {path}: the {task} model does not fit its manifest: {_first_line(err)}") from None
    model.eval()
    return LoadedModel(pipeline, model, manifest)


def _first_line(err: Exception) -> str:
    """torch's size-mismatch errors span lines; the CLI prints one."""
    return " ".join(str(err).split())

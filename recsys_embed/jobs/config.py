"""Run configuration for ``recsys-embed train --config run.yaml``, validated key by key.

Every mapping in the file becomes a dataclass; an unknown key, a key given twice, a missing
required key, a value of the wrong type and a number that is not finite (``.nan``, ``.inf``)
are a :class:`~recsys_embed.errors.ConfigError` (a ``ValueError``) naming the file and the
dotted key.

Example ``run.yaml``::

    data: {train: data/train, valid: data/valid, test: data/test}
    schema: synthetic_ctr            # criteo | avazu | movielens | libfm | history, {name: criteo, min_count: 1},
                                     # a path to a schema YAML/JSON, or an inline mapping with features
    layout: {name: per_feature}      # per_feature | multiplexed (+ its options)
    model: {name: din}               # mlp | din | autoint | fm | deepfm | dcn_v2 (+ its config keys)
    table_optimizer: {name: rowwise_adagrad, lr: 0.05}
    trainer: {epochs: 1, lr: 0.001}
    batching: {batch_size: 4096, shuffle: true}
    run_dir: runs/my-run
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from recsys_embed.errors import ConfigError
from recsys_embed.tables.base import TableOptimizer
from recsys_embed.jobs.trainer import TrainerConfig
from recsys_embed.yaml_strict import describe, load_yaml


@dataclass
class DataConfig:
    """Where the splits are (a file, a folder or a glob each); ``reader``: a named reader
    (``criteo``, ``{name: criteo, separator: ","}``; see ``pipelines.named.READERS``) that reads
    text formats the generic CSV/Parquet path cannot, converted once to Parquet in the run directory."""

    train: str
    valid: str | None = None
    test: str | None = None
    reader: Any = None


@dataclass
class BatchingConfig:
    batch_size: int = 4096
    shuffle: bool = True
    num_workers: int = 0


@dataclass
class RunConfig:
    data: DataConfig
    schema: Any = "synthetic_ctr"
    layout: dict[str, Any] = field(default_factory=lambda: {"name": "per_feature"})
    model: dict[str, Any] = field(default_factory=lambda: {"name": "mlp"})
    table_optimizer: TableOptimizer = field(default_factory=TableOptimizer)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    run_dir: str = "runs/train"


def _check_type(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            try:
                return _check_type(value, option, where)
            except ValueError:
                continue
        raise ConfigError(f"{where}: {value!r} does not fit {annotation}")
    if annotation is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {value!r}")
    if dataclasses.is_dataclass(annotation):
        return from_mapping(annotation, value, where)
    if origin in (dict,) or annotation is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return value
    if origin in (tuple, list) or annotation in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        return tuple(value) if origin is tuple or annotation is tuple else list(value)
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if annotation in (int, float, str, bool):
        if isinstance(value, annotation) and not (annotation is int and isinstance(value, bool)):
            return value
        raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r}")
    return value


def from_mapping(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a mapping, validating keys and value types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of {cls.__name__} keys, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(names)}")
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]  # type: ignore[misc]
    missing = [k for k in required if k not in data]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {missing}")
    values = {k: _check_type(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**values)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None


def read_yaml(path: str | Path) -> Any:
    """The parsed YAML file, or a ValueError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        return load_yaml(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {describe(err)}") from None


def load_run_config(path: str | Path) -> RunConfig:
    """Read and validate a run YAML; relative data paths are taken from the YAML's folder."""
    path = Path(path)
    config = from_mapping(RunConfig, read_yaml(path), str(path))
    base = path.parent
    for key in ("train", "valid", "test"):
        value = getattr(config.data, key)
        if value is not None and not Path(value).is_absolute():
            setattr(config.data, key, str(base / value))
    return config

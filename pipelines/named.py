"""Schemas and readers by name, as run configs write them: ``schema: criteo`` or
``schema: {name: criteo, min_count: 1}``, ``reader: criteo`` or ``reader: {name: criteo,
separator: ","}`` (the other keys are the function's arguments).

    >>> named_schema({"name": "libfm", "fields": 2}).source_columns
    ['field_0', 'field_1', 'label']
    >>> named_schema("critter")
    Traceback (most recent call last):
    ...
    recsys_embed.errors.ConfigError: schema 'critter' is not one of ['avazu', 'criteo', 'history', 'libfm', 'movielens', 'synthetic_ctr']
    >>> named_reader({"name": "criteo", "sep": ","}, "day_0.txt")
    Traceback (most recent call last):
    ...
    recsys_embed.errors.ConfigError: reader 'criteo': unknown option(s) ['sep']; expected some of ['has_label', 'validate', 'separator', 'header']
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import polars as pl

from recsys_embed.errors import ConfigError
from recsys_embed.features import Schema
from recsys_embed.pipelines.derived.histories import history_schema
from recsys_embed.pipelines.readers import (
    avazu_schema,
    criteo_schema,
    libfm_schema,
    movielens_ctr,
    movielens_schema,
    read_avazu,
    read_criteo,
    read_libfm,
)
from recsys_embed.pipelines.synthetic.ctr import ctr_schema

SCHEMAS: dict[str, Callable[..., Schema]] = {
    "avazu": avazu_schema,
    "criteo": criteo_schema,
    "history": history_schema,
    "libfm": libfm_schema,
    "movielens": movielens_schema,
    "synthetic_ctr": ctr_schema,
}
READERS: dict[str, Callable[..., pl.LazyFrame]] = {  # formats whose rows are CTR samples with a label
    "avazu": read_avazu,
    "criteo": read_criteo,
    "libfm": read_libfm,
    "movielens": movielens_ctr,
}


def named_schema(spec: str | Mapping[str, Any]) -> Schema:
    """The schema of ``spec``: a name of :data:`SCHEMAS`, or a mapping of ``name`` and that
    function's arguments. An unknown name or argument is a :class:`ConfigError` listing the known ones."""
    return _call("schema", SCHEMAS, spec)


def named_reader(spec: str | Mapping[str, Any], path: str | Path) -> pl.LazyFrame:
    """``path`` read by the reader of ``spec``: a name of :data:`READERS`, or a mapping of
    ``name`` and that reader's options; errors as :func:`named_schema`'s (a bad file: the
    reader's ``ValueError`` naming the file and line)."""
    return _call("reader", READERS, spec, path)


def _call(kind: str, functions: Mapping[str, Callable[..., Any]], spec: str | Mapping[str, Any], *args: Any) -> Any:
    options = dict(spec) if isinstance(spec, Mapping) else {"name": spec}
    name = options.pop("name", None)
    if name not in functions:
        raise ConfigError(f"{kind} {name!r} is not one of {sorted(functions)}")
    function = functions[name]
    known = list(inspect.signature(function).parameters)[len(args) :]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"{kind} {name!r}: unknown option(s) {unknown}; expected some of {known}")
    if args:  # a reader: its errors name the file and line
        return function(*args, **options)
    try:
        return function(**options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{kind} {name!r}: {err}") from None

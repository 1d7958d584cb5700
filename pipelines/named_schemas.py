"""Schemas by name, as run configs write them: ``schema: criteo`` or
``schema: {name: criteo, min_count: 1}`` (the other keys are the schema function's arguments).

    >>> named_schema({"name": "libfm", "fields": 2}).source_columns
    ['field_0', 'field_1', 'label']
    >>> named_schema("critter")
    Traceback (most recent call last):
    ...
    recsys_embed.errors.ConfigError: schema 'critter' is not one of ['avazu', 'criteo', 'history', 'libfm', 'movielens', 'synthetic_ctr']
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from recsys_embed.errors import ConfigError
from recsys_embed.features import Schema
from recsys_embed.pipelines.derived.histories import history_schema
from recsys_embed.pipelines.readers import avazu_schema, criteo_schema, libfm_schema, movielens_schema
from recsys_embed.pipelines.synthetic.ctr import ctr_schema

SCHEMAS: dict[str, Callable[..., Schema]] = {
    "avazu": avazu_schema,
    "criteo": criteo_schema,
    "history": history_schema,
    "libfm": libfm_schema,
    "movielens": movielens_schema,
    "synthetic_ctr": ctr_schema,
}


def named_schema(spec: str | Mapping[str, Any]) -> Schema:
    """The schema of ``spec``: a name of :data:`SCHEMAS`, or a mapping of ``name`` and that
    function's arguments. An unknown name or argument is a :class:`ConfigError` listing the known ones."""
    options = dict(spec) if isinstance(spec, Mapping) else {"name": spec}
    name = options.pop("name", None)
    if name not in SCHEMAS:
        raise ConfigError(f"schema {name!r} is not one of {sorted(SCHEMAS)}")
    function = SCHEMAS[name]
    known = list(inspect.signature(function).parameters)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"schema {name!r}: unknown option(s) {unknown}; expected some of {known}")
    try:
        return function(**options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"schema {name!r}: {err}") from None

"""Table layouts by name: the names run configs, artifacts and Matryoshka manifests use.

A layout class registers itself with ``@register_layout("name")``; :func:`layout_class`
finds it again (``layout_class(config["layout"]).from_state(schema, tensors, config)``).
Compression methods (the storage of one table group) have their own registry with
third-party entry points (:mod:`recsys_embed.compression.registry`); the layout that holds
them registers here as ``compressed``.

Example::

    >>> layout_class("per_feature").__name__
    'PerFeatureTables'
    >>> "multiplexed" in registered_layouts()
    True
    >>> layout_class("no_such_layout")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    recsys_embed.tables.registry.UnknownLayoutError: unknown table layout 'no_such_layout'; known: [...'per_feature', 'pruned'...]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from recsys_embed.tables.contract import TableLayout

_LAYOUTS: dict[str, type[TableLayout]] = {}
L = TypeVar("L", bound=type[TableLayout])


class UnknownLayoutError(ValueError):
    """A layout name that no registered class and no installed plugin provides."""


def register_layout(name: str) -> Callable[[L], L]:
    """Class decorator: register a :class:`TableLayout` subclass under ``name`` (sets ``layout_name``)."""

    def register(cls: L) -> L:
        add_class(_LAYOUTS, name, cls, TableLayout, "layout")
        cls.layout_name = name
        return cls

    return register


def add_class(registry: dict[str, Any], name: str, cls: Any, base: type, kind: str) -> None:
    """``registry[name] = cls`` for a ``base`` subclass (``TypeError`` otherwise); a name another
    class holds is a ``ValueError`` naming it (re-registering the same class is fine)."""
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise TypeError(f"register {kind} {name!r}: {cls!r} is not a {base.__name__} subclass")
    taken = registry.get(name)
    if taken is not None and taken.__qualname__ != cls.__qualname__:
        raise ValueError(f"{kind} name {name!r} is taken by {taken.__module__}.{taken.__qualname__}")
    registry[name] = cls


def layout_class(name: str) -> type[TableLayout]:
    """The layout class registered as ``name``; ``UnknownLayoutError`` (a ``ValueError``) names the known layouts."""
    if name not in _LAYOUTS:
        raise UnknownLayoutError(f"unknown table layout {name!r}; known: {registered_layouts()}")
    return _LAYOUTS[name]


def registered_layouts() -> list[str]:
    """The names registered so far, sorted."""
    return sorted(_LAYOUTS)

"""Table layouts by name: the names run configs, artifacts and Matryoshka manifests use.

A layout class registers itself with ``@register_layout("name")``; :func:`layout_class`
finds it again (``layout_class(config["layout"]).from_state(schema, tensors, config)``).
Names not registered at import are looked up once among the installed compression plugins
(entry-point group ``recsys_embed.compression``: :func:`load_plugin`; compression methods
register with :func:`recsys_embed.compression.register_compression`).

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
from importlib.metadata import EntryPoint, entry_points
from typing import TypeVar

from recsys_embed.tables.contract import TableLayout

ENTRY_POINT_GROUP = "recsys_embed.compression"
_LAYOUTS: dict[str, type[TableLayout]] = {}
L = TypeVar("L", bound=type[TableLayout])


class PluginError(ValueError):
    """An installed compression plugin that cannot be loaded or does not provide its name."""


class UnknownLayoutError(ValueError):
    """A layout name that no registered class and no installed plugin provides."""


def register_layout(name: str) -> Callable[[L], L]:
    """Class decorator: register a :class:`TableLayout` subclass under ``name`` (sets ``layout_name``)."""

    def register(cls: L) -> L:
        if not (isinstance(cls, type) and issubclass(cls, TableLayout)):
            raise TypeError(f"register_layout({name!r}): {cls!r} is not a TableLayout subclass")
        taken = _LAYOUTS.get(name)
        if taken is not None and taken.__qualname__ != cls.__qualname__:
            raise ValueError(f"layout name {name!r} is taken by {taken.__module__}.{taken.__qualname__}")
        cls.layout_name = name
        _LAYOUTS[name] = cls
        return cls

    return register


def layout_class(name: str) -> type[TableLayout]:
    """The layout class registered as ``name``; an installed compression plugin of that name is
    loaded on this first lookup. ``UnknownLayoutError`` (a ``ValueError``) names the known layouts."""
    if name not in _LAYOUTS:
        load_plugin(name)
    if name not in _LAYOUTS:
        raise UnknownLayoutError(f"unknown table layout {name!r}; known: {registered_layouts()}")
    return _LAYOUTS[name]


def registered_layouts() -> list[str]:
    """The names registered so far, sorted (installed plugins not yet looked up are not among them)."""
    return sorted(_LAYOUTS)


def load_plugin(name: str) -> bool:
    """Import the installed plugin(s) named ``name`` (entry-point group ``recsys_embed.compression``)
    and register what they provide; ``False`` if none is installed. Called by ``layout_class``."""
    found = list(entry_points(group=ENTRY_POINT_GROUP, name=name))
    if len(found) > 1:
        raise PluginError(f"compression method {name!r} is provided by several installed plugins: {[_origin(ep) for ep in found]}")
    if not found:
        return False
    ep = found[0]
    try:
        loaded = ep.load()
    except Exception as error:  # any import-time failure of third-party code
        raise PluginError(f"compression plugin {name!r} ({_origin(ep)}) failed to load: {type(error).__name__}: {error}") from error
    if name not in registered_layouts():
        if not (isinstance(loaded, type) and issubclass(loaded, TableLayout)):
            raise PluginError(
                f"compression plugin {name!r} ({_origin(ep)}) names {loaded!r}, which is neither a TableLayout "
                f"subclass nor a module that registers {name!r} with register_compression"
            )
        register_layout(name)(loaded)
    return True


def _origin(ep: EntryPoint) -> str:
    package = f" of package {ep.dist.name} {ep.dist.version}" if ep.dist is not None else ""
    return f"entry point {ep.name} = {ep.value}{package}"

"""Compression methods by name: built-in ones and third-party plugins, in the layout registry.

A compression method is a table layout (:class:`~recsys_embed.tables.contract.TableLayout`)
registered with ``@register_compression("name")``: it lands in the same registry as the
layouts (:func:`recsys_embed.tables.registry.layout_class` finds it, so artifacts and
Matryoshka load it by name) and is listed by :func:`compression_methods`.

A third party ships one without touching this repo, through the entry-point group
``recsys_embed.compression`` in its package metadata::

    [options.entry_points]                       # setup.cfg of package "my-codebook"
    recsys_embed.compression =
        codebook = my_codebook:CodebookTables    # a TableLayout subclass, or a module that registers "codebook"

Installed plugins are imported lazily, on the first lookup of a name no built-in has
(:func:`load_plugin`); a plugin that fails to import or does not provide the name is a
:class:`PluginError` naming the entry point and its package.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import TypeVar

from recsys_embed.tables.contract import TableLayout
from recsys_embed.tables.registry import register_layout, registered_layouts

ENTRY_POINT_GROUP = "recsys_embed.compression"
_METHODS: set[str] = set()
L = TypeVar("L", bound=type[TableLayout])


class PluginError(ValueError):
    """An installed compression plugin that cannot be loaded or does not provide its name."""


def register_compression(name: str) -> Callable[[L], L]:
    """Class decorator: register a compression method (a :class:`TableLayout` subclass) as layout ``name``."""

    def register(cls: L) -> L:
        register_layout(name)(cls)
        _METHODS.add(name)
        return cls

    return register


def compression_methods() -> list[str]:
    """Names of the registered compression methods and of the installed plugins (not imported), sorted."""
    return sorted(_METHODS | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


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
        register_compression(name)(loaded)
    _METHODS.add(name)
    return True


def _origin(ep: EntryPoint) -> str:
    package = f" of package {ep.dist.name} {ep.dist.version}" if ep.dist is not None else ""
    return f"entry point {ep.name} = {ep.value}{package}"

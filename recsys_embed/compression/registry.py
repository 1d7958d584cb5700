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
(:func:`recsys_embed.tables.registry.load_plugin`); a plugin that fails to import or does not
provide the name is a :class:`~recsys_embed.tables.registry.PluginError` naming the entry
point and its package.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TypeVar

from recsys_embed.tables.contract import TableLayout
from recsys_embed.tables.registry import ENTRY_POINT_GROUP, register_layout

_METHODS: set[str] = set()
L = TypeVar("L", bound=type[TableLayout])


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

"""Compression methods by name: built-in ones and third-party plugins.

A method is a :class:`~recsys_embed.compression.method.CompressionMethod` subclass registered with
``@register_compression("name")``; :func:`method_class` finds it again (run configs, artifacts).
A third party ships one without touching this repo, through the entry-point group
``recsys_embed.compression`` of its package metadata::

    [options.entry_points]                       # setup.cfg of package "my-codebook"
    recsys_embed.compression =
        codebook = my_codebook:Codebook          # a CompressionMethod subclass, or a module that registers "codebook"

Installed plugins are imported lazily, on the first lookup of a name no built-in has
(:func:`load_plugin`); a plugin that fails to import or does not provide the name is a
:class:`PluginError` naming the entry point and its package. :func:`describe_methods` gives
one line per method, built-in and installed, for ``recsys-embed compression``.

Example::

    >>> method_class("qr").__name__
    'QuotientRemainder'
    >>> method_class("no_such_method")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    recsys_embed.compression.registry.UnknownMethodError: unknown compression method 'no_such_method'; installed: [...'hashing'...]
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points, packages_distributions
from typing import TypeVar

from recsys_embed.compression.method import CompressionMethod
from recsys_embed.tables.registry import add_class

ENTRY_POINT_GROUP = "recsys_embed.compression"
_METHODS: dict[str, type[CompressionMethod]] = {}
M = TypeVar("M", bound=type[CompressionMethod])


class PluginError(ValueError):
    """An installed compression plugin that cannot be loaded or does not provide its name."""


class UnknownMethodError(ValueError):
    """A method name that no registered class and no installed plugin provides."""


def register_compression(name: str) -> Callable[[M], M]:
    """Class decorator: register a :class:`CompressionMethod` subclass under ``name`` (sets ``method_name``)."""

    def register(cls: M) -> M:
        add_class(_METHODS, name, cls, CompressionMethod, "compression method")
        cls.method_name = name
        return cls

    return register


def method_class(name: str, package: str | None = None) -> type[CompressionMethod]:
    """The method registered as ``name``, loading an installed plugin of that name on first use.
    ``UnknownMethodError`` names the installed methods, and ``package`` (the distribution an
    artifact recorded for the method) when given."""
    if name not in _METHODS:
        load_plugin(name)
    if name not in _METHODS:
        hint = f"; it was saved with package {package!r} (pip install {package})" if package else ""
        raise UnknownMethodError(f"unknown compression method {name!r}{hint}; installed: {compression_methods()}")
    return _METHODS[name]


def compression_methods() -> list[str]:
    """Names of the registered methods and of the installed plugins (not imported), sorted."""
    return sorted(set(_METHODS) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def describe_methods() -> list[tuple[str, str]]:
    """``(name, description)`` of every method, importing installed plugins (a plugin that fails
    to load is listed with its error instead of a description)."""
    rows = []
    for name in compression_methods():
        try:
            rows.append((name, method_class(name).description or "(no description)"))
        except PluginError as error:
            rows.append((name, f"(failed to load: {error})"))
    return rows


def provider(cls: type[CompressionMethod]) -> str | None:
    """The installed distribution that provides ``cls`` (``None`` for this package's own methods
    or code not installed as a distribution): what an artifact records to name a missing plugin."""
    top = cls.__module__.split(".")[0]
    if top == "recsys_embed":
        return None
    names = packages_distributions().get(top)
    return names[0] if names else None


def load_plugin(name: str) -> bool:
    """Import the installed plugin named ``name`` and register what it provides; ``False`` if none is installed."""
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
    if name not in _METHODS:
        if not (isinstance(loaded, type) and issubclass(loaded, CompressionMethod)):
            raise PluginError(
                f"compression plugin {name!r} ({_origin(ep)}) names {loaded!r}, which is neither a CompressionMethod "
                f"subclass nor a module that registers {name!r} with register_compression"
            )
        register_compression(name)(loaded)
    return True


def plugin_origin(name: str) -> str:
    """Where method ``name`` comes from, for error messages: its entry point and package, or its module."""
    found = list(entry_points(group=ENTRY_POINT_GROUP, name=name))
    return _origin(found[0]) if found else f"module {_METHODS[name].__module__}" if name in _METHODS else name


def _origin(ep: EntryPoint) -> str:
    package = f" of package {ep.dist.name} {ep.dist.version}" if ep.dist is not None else ""
    return f"entry point {ep.name} = {ep.value}{package}"

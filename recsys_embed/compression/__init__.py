"""Compression methods: the storage of a table group behind the table-layout contract,
registered by name in the layout registry; third parties plug in through the entry-point
group ``recsys_embed.compression`` (:mod:`recsys_embed.compression.registry`)."""

from recsys_embed.compression.registry import compression_methods, register_compression
from recsys_embed.tables.registry import ENTRY_POINT_GROUP, PluginError, load_plugin

__all__ = ["ENTRY_POINT_GROUP", "PluginError", "compression_methods", "load_plugin", "register_compression"]

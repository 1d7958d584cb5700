"""Compression methods: how one table group's table is stored (:mod:`.method`), registered by
name (:mod:`.registry`, with third-party entry points in the group ``recsys_embed.compression``),
and held per table group by :class:`~recsys_embed.compression.layout.CompressedTables`.

Built in: ``exact`` (no compression), ``hashing`` (hashing trick), ``qr`` (quotient-remainder),
``multiplexed`` (groups sharing one hashed pool).
"""

from recsys_embed.compression.exact import ExactTable
from recsys_embed.compression.hashing import HashingTrick
from recsys_embed.compression.layout import CompressedTables
from recsys_embed.compression.multiplexed import Multiplexed
from recsys_embed.compression.method import CompressionMethod, MethodConfigError, budget_parameters
from recsys_embed.compression.qr import QuotientRemainder
from recsys_embed.compression.registry import (
    ENTRY_POINT_GROUP,
    PluginError,
    UnknownMethodError,
    compression_methods,
    describe_methods,
    method_class,
    register_compression,
)

__all__ = [
    "ENTRY_POINT_GROUP", "CompressedTables", "CompressionMethod", "ExactTable", "HashingTrick", "MethodConfigError", "Multiplexed",
    "PluginError", "QuotientRemainder", "UnknownMethodError", "budget_parameters", "compression_methods",
    "describe_methods", "method_class", "register_compression",
]

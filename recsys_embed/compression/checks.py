"""Checks of compression configs and of the methods they name, before and while a
:class:`~recsys_embed.compression.layout.CompressedTables` is built: a config's shape and method
names, its table groups, and a probe of each method (a third-party method that fails or gives
the wrong shape is a :class:`~recsys_embed.compression.registry.PluginError` naming the plugin)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from recsys_embed.compression.method import CompressionMethod
from recsys_embed.compression.registry import PluginError, compression_methods, method_class, plugin_origin


def check_compression(compression: Any, where: str) -> None:
    """A ``compression`` config's shape and method names (before any data is read): a mapping of
    table group -> ``{method: name, ...}`` whose names are installed (``UnknownMethodError`` lists them)."""
    if not isinstance(compression, Mapping):
        raise ValueError(f"{where}: expected a mapping of table group -> {{method: ..., ...}}, got {compression!r}")
    for group, spec in compression.items():
        if not isinstance(spec, Mapping) or not isinstance(spec.get("method"), str):
            raise ValueError(f"{where}.{group}: expected a mapping with 'method' (one of {compression_methods()}), got {spec!r}")
        method_class(spec["method"])


def check_groups(named: Mapping[str, Any], groups: list[str], where: str) -> None:
    unknown = [g for g in named if g not in groups]
    if unknown:
        raise ValueError(f"{where}: no table group(s) {unknown}; the schema's table groups are {groups}")


def build_method(name: str, where: str, build: Any) -> CompressionMethod:
    """``build(method_class(name))``; an exception other than our ``ValueError`` from a third-party
    method is a :class:`PluginError` naming the plugin, not a traceback deep in the layout."""
    cls = method_class(name)
    try:
        return build(cls)
    except ValueError as error:
        raise type(error)(f"{where}: {error}") from error
    except Exception as error:  # third-party code: name it
        raise PluginError(f"{where}: compression method {name!r} ({plugin_origin(name)}) failed: {type(error).__name__}: {error}") from error


def check_method(group: str, method: CompressionMethod, num_ids: int, dim: int) -> None:
    """Probe a method with two ids: its outputs must be ``[2, dim]`` (a :class:`PluginError` naming the method otherwise)."""
    name = method.method_name

    def fail(what: str) -> PluginError:
        return PluginError(f"table group {group!r}: compression method {name!r} ({plugin_origin(name)}) {what}")

    if (method.num_ids, method.dim) != (num_ids, dim):
        raise fail(f"was built for {method.num_ids} ids of dim {method.dim}, the group has {num_ids} ids of dim {dim}")
    ids = torch.tensor([0, num_ids - 1])
    try:
        with torch.no_grad():
            tables, reads = method.kernel_tables(), method.kernel_reads()
            if tables:
                rows = method.kernel_rows(ids)
                if tuple(rows.shape) != (len(reads), 2) or rows.dtype != torch.int64:
                    raise fail(f"kernel_rows gave {rows.dtype} {tuple(rows.shape)}, expected int64 {(len(reads), 2)}")
                bad = [r for r, j in enumerate(reads) if bool(((rows[r] < -1) | (rows[r] >= tables[j][0])).any())]
                if bad:
                    raise fail(f"kernel_rows gave rows outside the kernel tables for read(s) {bad} (sizes {tables})")
                out = method.combine([torch.zeros(2, tables[j][1]) for j in reads], ids, [(method, 1)])
            else:
                out = method.lookup(ids)
    except PluginError:
        raise
    except Exception as error:
        raise fail(f"failed on a probe of 2 ids: {type(error).__name__}: {error}") from error
    if tuple(out.shape) != (2, dim):
        raise fail(f"gave vectors of shape {tuple(out.shape)} for 2 ids, expected (2, {dim})")

"""Feature multiplexing as a compression method (Coleman et al., "Unified Embedding: Battle-tested
feature representations for web-scale ML systems", NeurIPS 2023): table groups that name the same
``shared`` pool read ONE table ``W`` ``[M, d_c]``, each id through ``k`` hashed probes,

    row_j(v) = hash(v; seed(salt, group, j)) mod M,   vector(v) = [W[row_0(v)], ..., W[row_{k-1}(v)]],

so ``D = k d_c``. Seeds are per table group, so the same id value of two groups reads different
rows; every id of every sharing group competes for the ``M`` rows, which is where the memory goes
furthest (frequent ids of one group take rows the tail of another does not need). Without
``shared`` the group has a pool of its own (the hashing trick with ``k`` concatenated probes).

This is the ``multiplexed`` layout (:class:`~recsys_embed.tables.MultiplexedTables`) as one
method over a set of groups inside the compressed layout, next to other groups' methods. A
shared pool's size is given as ``rows`` (every sharing group the same); ``budget`` sizes a pool
of one group. Collision rate: the fraction of the group's ids whose every probe row is shared
with another of its ids, ``rate(n, M)^k`` (other groups of the pool not counted).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from recsys_embed.compression.hashing import budget_rows
from recsys_embed.compression.kernels import hash_buckets
from recsys_embed.compression.method import CompressionMethod, MethodConfigError, check_options, option
from recsys_embed.compression.registry import register_compression
from recsys_embed.hashing import seed_of
from recsys_embed.tables.accounting import expected_collision_rate


@register_compression("multiplexed")
class Multiplexed(CompressionMethod):
    """``k`` hashed probes into a ``[M, D / k]`` pool, concatenated. Options: ``rows`` (or a budget),
    ``probes`` (k; default 2 where the dim splits into two chunks of a multiple of 4, else 1: the
    multiplexed layout's default, see :class:`~recsys_embed.tables.MultiplexedConfig`), ``shared`` (a pool name other groups may name too), ``salt``.

    >>> from recsys_embed.compression import CompressedTables
    >>> from recsys_embed.features import FeatureSpec, Schema
    >>> schema = Schema([FeatureSpec("user_id", embedding_dim=8), FeatureSpec("item_id", embedding_dim=8)])
    >>> pool = {"method": "multiplexed", "rows": 100, "probes": 2, "shared": "pool"}
    >>> tables = CompressedTables.from_options(schema, {"user_id": 1000, "item_id": 5000}, {"user_id": pool, "item_id": pool})
    >>> tables.num_parameters(), tables.group_parameters("item_id")   # one [100, 4] pool, counted for user_id
    (400, 0)
    """

    description = "feature multiplexing: groups share one hashed pool, k probes per id (Coleman et al. 2023)"

    def __init__(self, num_ids: int, dim: int, rows: int, probes: int = 1, shared: str | None = None, salt: str = "multiplexed") -> None:
        super().__init__(num_ids, dim)
        if probes < 1 or dim % probes or (dim // probes) % 4:
            raise MethodConfigError(f"multiplexed: probes must divide dim {dim} into chunks of a multiple of 4, got probes={probes}")
        self.rows, self.probes, self.shared, self.salt = rows, probes, shared, salt
        self.chunk = dim // probes

    @classmethod
    def from_options(cls, num_ids: int, dim: int, options: Mapping[str, Any], budget: int | None) -> Multiplexed:
        check_options(options, ["rows", "probes", "shared", "salt"], "multiplexed")
        probes = option(options, "probes", 2 if dim % 8 == 0 else 1, int, "multiplexed")
        shared = options.get("shared")
        if shared is not None and not isinstance(shared, str):
            raise MethodConfigError(f"multiplexed: option 'shared' must be a pool name (str), got {shared!r}")
        if shared is not None and budget is not None:
            raise MethodConfigError("multiplexed: a shared pool is sized by 'rows' (the same for every group), not by a group's budget")
        rows = budget_rows(budget, dim // max(probes, 1), options, "multiplexed")
        return cls(num_ids, dim, rows, probes, shared, option(options, "salt", "multiplexed", str, "multiplexed"))

    def state_config(self) -> dict[str, Any]:
        return {"rows": self.rows, "probes": self.probes, "shared": self.shared, "salt": self.salt}

    def kernel_tables(self) -> list[tuple[int, int]]:
        return [(self.rows, self.chunk)]

    def kernel_reads(self) -> list[int]:
        return [0] * self.probes

    def share_key(self) -> str | None:
        return None if self.shared is None else f"multiplexed/{self.shared}"

    def kernel_rows(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.stack([hash_buckets(ids, seed_of(f"{self.salt}/{self.group}/{j}"), self.rows) for j in range(self.probes)])

    def combine(self, parts: Sequence[torch.Tensor], ids: torch.Tensor, runs: Sequence[tuple[CompressionMethod, int]]) -> torch.Tensor:
        return parts[0] if len(parts) == 1 else torch.cat(list(parts), dim=-1)

    def combine_key(self) -> str:
        return "multiplexed"  # the k probes concatenated

    def collision_rate(self) -> float:
        return expected_collision_rate(self.num_ids, self.rows) ** self.probes

    def details(self) -> str:
        pool = f"pool {self.shared!r}" if self.shared else "own pool"
        return f"{pool}: {self.rows:,} rows x {self.chunk}, {self.probes} probe(s)"

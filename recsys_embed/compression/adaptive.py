"""Frequency-adaptive hybrid: the most frequent ids keep their own row, the long tail is hashed,

    vector(i) = W[i]                    if i < F,
                W[F + h(i) mod H]       otherwise,            W: [F + H, D],

one kernel table, ``h`` a stable salted hash (:func:`recsys_embed.hashing.bucket_torch`). The
frequency-based split is the one of Zhang et al. (RecSys 2020, "Model size reduction using
frequency based double hashing for recommender systems", which hashes the tail twice: method
``double_hashing``); the VLDB 2024 survey of Zhang et al. ("Experimental Analysis of Large-scale
Learnable Vector Storage Compression") lists such frequency-aware hybrids next to the plain
hashing trick.

Which ids are frequent: a fitted vocabulary numbers its values ``2, 3, ...`` by descending count
(``pipelines/fit.py``; id 0 is missing, id 1 out-of-vocabulary, both usually frequent too), so
the ``F`` most frequent ids are the ids ``< F`` and no count needs storing. Features with
``ids: hashing`` carry no such order: for them ``F`` arbitrary ids keep a row and the method is
the hashing trick with ``F`` rows moved out of the shared ones.

Frequent ids never collide; of the ``n - F`` tail ids in ``H`` rows, the expected fraction that
shares its row is ``1 - (1 - 1/H)^(n-F-1)``, so the collision rate over all ids is
``(n - F) / n`` times that.

Options: ``frequent`` (``F``) or ``frequent_fraction`` (``F = round(fraction * n)``), and ``rows``
(``H``) or a budget, which fixes ``F + H = budget // D``; with a budget and neither frequent
option, half of those rows are exact (``F = min(T // 2, n - 1)``). ``0 <= F < n``, ``H >= 1``.

Example::

    >>> method = AdaptiveHashing.from_options(1000, 16, {"frequent": 50}, budget=1600)
    >>> method.kernel_tables(), method.kernel_rows(torch.tensor([0, 49, 50, 999])).squeeze(0).ge(50).tolist()
    ([(100, 16)], [False, False, True, True])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from recsys_embed.compression.kernels import hash_buckets
from recsys_embed.compression.method import CompressionMethod, MethodConfigError, check_options, check_sizing, option
from recsys_embed.compression.registry import register_compression
from recsys_embed.hashing import seed_of
from recsys_embed.tables.accounting import expected_collision_rate


def frequent_option(options: Mapping[str, Any], num_ids: int, where: str) -> int | None:
    """``F``, how many of the most frequent ids (the ids ``< F``) get more storage, from the option
    ``frequent`` or ``frequent_fraction`` (``F = round(fraction * n)``); ``None`` if neither is given.

    >>> frequent_option({"frequent_fraction": 0.1}, 1000, "adaptive"), frequent_option({}, 1000, "adaptive")
    (100, None)
    """
    if "frequent" in options and "frequent_fraction" in options:
        raise MethodConfigError(f"{where}: give 'frequent' or 'frequent_fraction', not both, got {dict(options)}")
    if "frequent" in options:
        return option(options, "frequent", 0, int, where)
    if "frequent_fraction" in options:
        fraction = option(options, "frequent_fraction", 0.0, float, where)
        if not 0 <= fraction < 1:
            raise MethodConfigError(f"{where}: frequent_fraction must lie in [0, 1), got {fraction}")
        return round(fraction * num_ids)
    return None


@register_compression("adaptive")
class AdaptiveHashing(CompressionMethod):
    """``[F + H, D]`` rows: ids below ``F`` read their own row, the rest a hashed one of the last ``H``.
    Options: ``frequent`` or ``frequent_fraction``, ``rows`` (``H``; or a budget), ``salt``."""

    description = "frequency-adaptive hybrid: the F most frequent ids exact, the long tail hashed (Zhang et al. 2020)"

    def __init__(self, num_ids: int, dim: int, frequent: int, rows: int, salt: str = "adaptive") -> None:
        super().__init__(num_ids, dim)
        if not 0 <= frequent < num_ids:
            raise MethodConfigError(f"adaptive: frequent must lie in [0, {num_ids - 1}] (fewer than the group's {num_ids} ids), got {frequent}")
        if rows < 1:
            raise MethodConfigError(f"adaptive: needs at least 1 hashed row for the {num_ids - frequent} tail ids, got rows={rows}")
        self.frequent, self.rows, self.salt, self.seed = frequent, rows, salt, seed_of(salt)

    @classmethod
    def from_options(cls, num_ids: int, dim: int, options: Mapping[str, Any], budget: int | None) -> AdaptiveHashing:
        where = "adaptive"
        check_options(options, ["frequent", "frequent_fraction", "rows", "salt"], where)
        salt = option(options, "salt", where, str, where)
        frequent = frequent_option(options, num_ids, where)
        check_sizing(options, "rows", budget, where)
        if budget is None:
            if frequent is None:
                raise MethodConfigError(f"{where}: with 'rows', give 'frequent' or 'frequent_fraction' too")
            return cls(num_ids, dim, frequent, option(options, "rows", 0, int, where), salt)
        total = budget // dim
        if frequent is None:
            frequent = min(total // 2, num_ids - 1)
        if total < frequent + 1:
            raise MethodConfigError(
                f"{where}: {frequent} exact rows plus at least 1 hashed row need {(frequent + 1) * dim} weights "
                f"({(frequent + 1) * dim * 4} bytes), the budget allows {total} rows of dim {dim}"
            )
        return cls(num_ids, dim, frequent, total - frequent, salt)

    def state_config(self) -> dict[str, Any]:
        return {"frequent": self.frequent, "rows": self.rows, "salt": self.salt}

    def kernel_tables(self) -> list[tuple[int, int]]:
        return [(self.frequent + self.rows, self.dim)]

    def kernel_rows(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.where(ids < self.frequent, ids, self.frequent + hash_buckets(ids, self.seed, self.rows))[None]

    def combine(self, parts: Sequence[torch.Tensor], ids: torch.Tensor, runs: Sequence[tuple[CompressionMethod, int]]) -> torch.Tensor:
        return parts[0]

    def pools_reads(self) -> bool:
        return True  # one read: the kernel's bag of one row is the vector

    def collision_rate(self) -> float:
        tail = self.num_ids - self.frequent
        return tail / self.num_ids * expected_collision_rate(tail, self.rows)

    def details(self) -> str:
        return f"{self.frequent:,} exact rows (ids < {self.frequent:,}), {self.rows:,} hashed rows"

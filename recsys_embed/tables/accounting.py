"""Table accounting: what a layout stores per feature, and how often hashed values collide.

Collision rate of ``n`` distinct values hashed uniformly into ``m`` rows: the expected
fraction of values that share their row with at least one other value,

    rate(n, m) = 1 - (1 - 1/m) ** (n - 1),

since each of the other ``n - 1`` values misses a given row with probability ``1 - 1/m``.
For a stream of ids drawn uniformly from the ``n`` values it is also the expected fraction
of lookups that read a shared row.

Example::

    >>> round(expected_collision_rate(1000, 1000), 3)   # as many rows as values
    0.632
    >>> expected_collision_rate(1, 10)
    0.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def expected_collision_rate(num_values: int, rows: int) -> float:
    """Expected fraction of ``num_values`` distinct values hashed into ``rows`` rows that
    share their row with another value."""
    if rows < 1:
        raise ValueError(f"expected_collision_rate: rows must be >= 1, got {rows}")
    if num_values < 0:
        raise ValueError(f"expected_collision_rate: num_values must be >= 0, got {num_values}")
    if num_values <= 1:
        return 0.0
    # log1p keeps the result accurate for millions of rows
    return -math.expm1((num_values - 1) * math.log1p(-1.0 / rows)) if rows > 1 else 1.0


@dataclass
class FeatureAccount:
    """One line of a layout's ``summary()``.

    ``bytes`` is the storage of the feature's table (weights + optimizer state), ``None`` on
    the second and later features of a shared table (counted once); ``collision_rate`` is
    ``None`` where the ids are not hashed or the number of values is unknown.
    """

    feature: str
    table: str
    rows: int
    dim: int
    layout: str
    bytes: int | None
    collision_rate: float | None


def format_summary(accounts: Sequence[FeatureAccount], num_parameters: int, memory_bytes: int) -> str:
    """A readable table: one line per feature, then the totals."""
    head = f"{'feature':<20} {'table':<20} {'rows':>11} {'dim':>5} {'layout':<12} {'bytes':>13} {'collisions':>10}"
    lines = [head, "-" * len(head)]
    for a in accounts:
        size = f"{a.bytes:,}" if a.bytes is not None else "(shared)"
        rate = f"{a.collision_rate:.4f}" if a.collision_rate is not None else "-"
        lines.append(f"{a.feature:<20} {a.table:<20} {a.rows:>11,} {a.dim:>5} {a.layout:<12} {size:>13} {rate:>10}")
    lines.append(f"total parameters {num_parameters:,}  memory {memory_bytes:,} bytes (weights + optimizer state)")
    return "\n".join(lines)

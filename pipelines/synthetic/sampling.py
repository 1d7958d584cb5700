"""Vectorized Zipf-like sampling shared by the synthetic data generators.

Example::

    >>> import numpy as np
    >>> ranks = power_law_ranks(np.random.default_rng(0), n=1000, exponent=1.1, size=100_000)
    >>> bool(ranks.min() >= 0 and ranks.max() < 1000), bool((ranks == 0).mean() > (ranks == 9).mean())
    (True, True)
"""

from __future__ import annotations

import numpy as np


def power_law_ranks(
    rng: np.random.Generator,
    n: int | np.ndarray,
    exponent: float,
    size: int | None = None,
    offset: float = 1.0,
) -> np.ndarray:
    """Ranks in ``[0, n)`` with ``P(rank = r)`` roughly proportional to ``(r + offset) ** -exponent``.

    Inverse-CDF sampling of the continuous power law on ``[offset, n + offset)``, floored; ``n``
    may be an array (one range per draw, e.g. the size of each draw's category). Returns int64
    of shape ``size`` (or of ``n``'s shape).
    """
    n = np.asarray(n, dtype=np.float64)
    u = rng.random(size if size is not None else n.shape)
    lo, hi = offset, n + offset
    if abs(exponent - 1.0) < 1e-9:
        x = lo * np.exp(u * np.log(hi / lo))
    else:
        e = 1.0 - exponent
        x = (lo**e + u * (hi**e - lo**e)) ** (1.0 / e)
    return np.minimum((x - offset).astype(np.int64), np.asarray(n, dtype=np.int64) - 1)

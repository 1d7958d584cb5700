"""Top-k retrieval over binary codes (Hamming distance, faiss's ``IndexBinaryFlat``) and the exact
float reference (inner product), with ``recall_at_k`` between the two.

faiss is an optional dependency: ``pip install recsys-embed[retrieval]`` (faiss-cpu). The codes are
``np.packbits`` rows ``[n, bytes]`` uint8 (:mod:`recsys_embed.compression.binary`); faiss compares
them byte by byte with popcount, so the bit order inside a byte does not change a distance.

Example (needs faiss)::

    >>> import numpy as np
    >>> items = np.packbits(np.eye(16, dtype=bool)[:4], axis=1)    # 4 items of 16 bits
    >>> index = BinaryIndex(items)
    >>> distances, ids = index.search(items[[2]], k=2)
    >>> int(ids[0, 0]), int(distances[0, 0]), len(index)
    (2, 0, 4)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

INSTALL_HINT = "pip install recsys-embed[retrieval]"


def import_faiss() -> Any:
    """The ``faiss`` module, or an ``ImportError`` saying how to install it."""
    try:
        import faiss
    except ImportError as err:
        raise ImportError(f"binary retrieval needs faiss (faiss-cpu): {INSTALL_HINT}") from err
    return faiss


class BinaryIndex:
    """Exhaustive Hamming search over item codes ``[n, bytes]`` uint8 (faiss ``IndexBinaryFlat``:
    ``bytes * 8`` bits, a multiple of 8). ``search(query_codes [Q, bytes], k)`` gives Hamming
    distances ``[Q, k]`` int32 and item rows ``[Q, k]`` int64, nearest first."""

    def __init__(self, codes: np.ndarray) -> None:
        codes = np.ascontiguousarray(codes)
        if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] < 1:
            raise ValueError(f"binary index: codes must be uint8 [n, bytes], got {codes.dtype} {codes.shape}")
        faiss = import_faiss()
        self.index = faiss.IndexBinaryFlat(codes.shape[1] * 8)
        self.index.add(codes)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def code_bytes(self) -> int:
        return int(self.index.code_size)

    def search(self, query_codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        query_codes = np.ascontiguousarray(query_codes)
        if query_codes.dtype != np.uint8 or query_codes.ndim != 2 or query_codes.shape[1] != self.code_bytes:
            raise ValueError(f"binary index: queries must be uint8 [Q, {self.code_bytes}], got {query_codes.dtype} {query_codes.shape}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        return self.index.search(query_codes, min(k, len(self)))


def exact_top_k(queries: torch.Tensor, items: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """Rows ``[Q, k]`` of the ``k`` items ``[n, d]`` of largest inner product with each query ``[Q, d]``
    (the float reference), ``chunk`` queries at a time."""
    k = min(k, items.shape[0])
    with torch.no_grad():
        return torch.cat([(q @ items.T).topk(k, dim=1).indices for q in queries.split(chunk)]) if len(queries) else torch.zeros(0, k, dtype=torch.long)


def rerank(queries: torch.Tensor, candidates: np.ndarray, vectors: torch.Tensor, k: int, chunk: int = 1024) -> np.ndarray:
    """The ``k`` of each query's ``candidates`` ``[Q, c]`` (item rows, e.g. Hamming top ``c``) of largest
    inner product with the query ``[Q, d]`` among ``vectors`` ``[n, d]`` (e.g. decoded codes)."""
    rows = torch.from_numpy(np.asarray(candidates, np.int64))
    k, best = min(k, rows.shape[1]), []
    with torch.no_grad():
        for q, r in zip(queries.float().split(chunk), rows.split(chunk)):
            scores = torch.einsum("qd,qcd->qc", q, vectors.float()[r])
            best.append(r.gather(1, scores.topk(k, dim=1).indices))
    return torch.cat(best).numpy() if best else np.zeros((0, k), np.int64)


def recall_at_k(found: np.ndarray | torch.Tensor, exact: np.ndarray | torch.Tensor) -> float:
    """Mean over queries of ``|found_q & exact_q| / |exact_q|``: rows ``[Q, k']`` retrieved against the
    exact top ``[Q, k]``."""
    found, exact = np.asarray(found), np.asarray(exact)
    if found.shape[0] != exact.shape[0]:
        raise ValueError(f"recall_at_k: {found.shape[0]} queries found, {exact.shape[0]} exact")
    if not exact.size:
        return 0.0
    hits = [len(np.intersect1d(f, e)) / len(e) for f, e in zip(found, exact)]
    return float(np.mean(hits))

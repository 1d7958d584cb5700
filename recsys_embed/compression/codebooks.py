"""Product codebooks shared by the vector-quantization methods (``dpq``, ``lr2vq``): ``S`` codebooks
``C [S, K, w]`` of ``K <= 256`` codewords (uint8 codes), a vector ``x [S w]`` coded by the nearest
codeword of each of its ``S`` sub-vectors and decoded by concatenating those codewords.

Example::

    >>> books = torch.tensor([[[0.0, 0.0], [1.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]])  # S = 2, K = 2, w = 2
    >>> codes = nearest_codewords(torch.tensor([[0.9, 0.8, 0.9, 0.1]]), books)
    >>> codes.tolist(), gather_codewords(books, codes).tolist()
    ([[1, 1]], [[1.0, 1.0, 1.0, 0.0]])
"""

from __future__ import annotations

import torch

MAX_CODEWORDS = 256  # codes are uint8
CHUNK = 1 << 22  # floats of distances computed at once
TIE = 1e-5  # relative gap below which two codewords' GEMM distances are compared element-wise


def nearest_codewords(x: torch.Tensor, books: torch.Tensor, excluded: torch.Tensor | None = None) -> torch.Tensor:
    """``[N, S]`` int64: the nearest codeword of each sub-vector of ``x`` ``[N, S w]`` in ``books``
    ``[S, K, w]``, first index on ties, never a codeword ``excluded`` ``[N, K]`` marks. The same codes
    whatever the batch: distances ``||c||^2 - 2 x.c`` by a batched GEMM, and the sub-vectors whose two
    best lie within ``TIE`` of their scale (where the GEMM's rounding could order them by batch)
    settled by element-wise squared differences."""
    books = books.detach()
    subspaces, codewords, width = books.shape
    x = x.detach().reshape(-1, subspaces, width)
    if codewords == 1:
        return torch.zeros(x.shape[:2], dtype=torch.int64, device=x.device)
    norms = books.pow(2).sum(-1)  # [S, K]
    top = norms.max(-1).values[:, None]  # [S, 1]
    step = max(1, CHUNK // (subspaces * codewords))
    codes = []
    for at in range(0, x.shape[0], step):
        sub = x[at : at + step].transpose(0, 1)  # [S, n, w]
        distances = torch.baddbmm(norms[:, None, :], sub, books.transpose(1, 2), alpha=-2)  # [S, n, K]
        banned = None if excluded is None else excluded[at : at + step]  # [n, K]
        if banned is not None:
            distances.masked_fill_(banned, torch.inf)
        best = distances.topk(2, -1, largest=False)
        code = best.indices[..., 0]
        close = (best.values[..., 1] - best.values[..., 0]) <= TIE * (sub.pow(2).sum(-1) + top)  # [S, n]
        j, i = close.nonzero(as_tuple=True)
        exact = (sub[j, i][:, None, :] - books[j]).pow(2).sum(-1)  # [A, K]
        if banned is not None:
            exact.masked_fill_(banned[i], torch.inf)
        code[j, i] = exact.argmin(-1)
        codes.append(code.T)
    return torch.cat(codes) if codes else torch.zeros(0, subspaces, dtype=torch.int64, device=x.device)


def gather_codewords(books: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """``[N, S w]``: the codewords of codes ``[N, S]`` in ``books`` ``[S, K, w]``, concatenated."""
    subspaces, codewords, width = books.shape
    flat = codes.long() + torch.arange(subspaces, device=codes.device) * codewords
    return books.reshape(-1, width).index_select(0, flat.reshape(-1)).view(-1, subspaces * width)

"""BERT4Rec (Sun et al. 2019, "BERT4Rec: Sequential Recommendation with Bidirectional Encoder
Representations from Transformer").

A bidirectional transformer encoder (post-norm, GELU, as BERT) over the sum of item and
learned position embeddings (layer-normed, as BERT), trained by Cloze: random items of each
sequence are replaced by a learned mask vector and predicted from both sides. The output layer
is tied to the item table: ``logits = GELU(h W_p + b_p) E^T + b`` with ``E [V, D]`` every row of
the item table. To recommend, the mask vector is appended after the history (the oldest item
dropped when the history is full) and its prediction scores every item. For retrieval (maximum
inner product search) the bias joins the inner product by the standard augmentation:
``score(e_i) = t . e_i + b_i = [t, 1] . [e_i, b_i]`` with ``t = GELU(h W_p + b_p)``, ``h`` the
state at the appended mask (:meth:`BERT4Rec.query`, :meth:`BERT4Rec.retrieval_items`, D + 1 wide).

The model owns no item table: it takes the item embeddings ``[B, L, D]`` and mask ``[B, L]``
of a table layout's sequence feature (left-aligned, oldest first) and, for the output layer,
the layout's ``table_vectors(group)`` ``[V, D]``. Ids follow the pipeline (0 pads, 1
out-of-vocabulary, 2.. items; see ``next_item_ranking``).

Shape notation: B batch, L sequence length (<= max_len), D model dim, V table rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from recsys_embed.models.next_item_ranking import FIRST_ITEM_ID


@dataclass
class BERT4RecConfig:
    """BERT4Rec hyper-parameters: sequences of at most ``max_len`` items, a ``dim``-wide
    encoder (the item table's dim) of ``num_layers`` layers with ``num_heads`` heads and a
    ``4 * dim`` feed-forward, ``dropout`` everywhere (as BERT); Cloze masks each item of a
    training sequence with probability ``mask_prob``, except in a fraction ``last_item_prob`` of
    the sequences, which mask their last item only (the task of recommending, as the BERT4Rec
    paper's training data adds)."""

    max_len: int = 50
    dim: int = 64
    num_layers: int = 2
    num_heads: int = 2
    dropout: float = 0.1
    mask_prob: float = 0.2
    last_item_prob: float = 0.0

    def __post_init__(self) -> None:
        if self.max_len < 2:
            raise ValueError(f"BERT4Rec needs max_len >= 2, got {self.max_len}")
        if not 0.0 < self.mask_prob < 1.0:
            raise ValueError(f"BERT4Rec mask_prob must lie in (0, 1), got {self.mask_prob}")
        if not 0.0 <= self.last_item_prob <= 1.0:
            raise ValueError(f"BERT4Rec last_item_prob must lie in [0, 1], got {self.last_item_prob}")
        if self.dim % self.num_heads:
            raise ValueError(f"BERT4Rec dim {self.dim} must be divisible by num_heads {self.num_heads}")

    @property
    def sequence_len(self) -> int:
        """Ids one training row keeps: ``max_len`` (Cloze predicts inside the sequence)."""
        return self.max_len


def cloze_mask(real: torch.Tensor, mask_prob: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Cloze task: each real position (``real [B, L]`` True) is masked with probability
    ``mask_prob``; returns the masked positions ``[B, L]`` bool (never padding).

    Example::

        >>> cloze_mask(torch.tensor([[True, True, True, False]]), 0.5, torch.Generator().manual_seed(1)).tolist()
        [[False, True, True, False]]
    """
    if not 0.0 < mask_prob < 1.0:
        raise ValueError(f"mask_prob must lie in (0, 1), got {mask_prob}")
    device = real.device if generator is None else generator.device
    return (torch.rand(real.shape, generator=generator, device=device).to(real.device) < mask_prob) & real


class BERT4Rec(nn.Module):
    """``forward(items [B, L, D], mask [B, L], masked [B, L]) -> hidden [B, L, D]``;
    ``logits(hidden [..., D], item_vectors [V, D]) -> [..., V]``; ``rows`` is V (the output bias);
    ``training_loss``, ``score_next``, ``query`` and ``retrieval_items`` as every sequential model
    (see ``next_item_ranking``).

    Example::

        >>> from recsys_embed.models import rank_of
        >>> model = BERT4Rec(BERT4RecConfig(max_len=6, dim=8, num_layers=1), rows=22).eval()
        >>> table = torch.randn(22, 8)
        >>> history = torch.tensor([[3, 4, 5, 0, 0, 0], [7, 8, 9, 10, 11, 12]])
        >>> scores = model.score_next(table[history], history != 0, table)
        >>> scores.shape, rank_of(scores, torch.tensor([6, 13]), exclude=history).shape
        (torch.Size([2, 22]), torch.Size([2]))
        >>> queries, rows = model.query(table[history], history != 0), model.retrieval_items(table)  # [2, 9], [22, 9]
        >>> torch.allclose(queries @ rows[2:].T, scores[:, 2:], atol=1e-5)
        True
        >>> masked = cloze_mask(history != 0, 0.3, torch.Generator().manual_seed(0))
        >>> model.cloze_loss(table[history], history != 0, masked, history, table).shape
        torch.Size([])
    """

    def __init__(self, config: BERT4RecConfig, rows: int) -> None:
        super().__init__()
        if rows <= FIRST_ITEM_ID:
            raise ValueError(f"BERT4Rec needs an item table of more than {FIRST_ITEM_ID} rows, got {rows}")
        self.config = config
        self.rows = rows
        d = config.dim
        self.mask_vector = nn.Parameter(torch.empty(d))
        self.positions = nn.Embedding(config.max_len, d)
        self.embedding_norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(
            d, config.num_heads, 4 * d, config.dropout, activation="gelu", batch_first=True, norm_first=False
        )
        self.encoder = nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)
        self.transform = nn.Sequential(nn.Linear(d, d), nn.GELU())  # W_p, b_p
        self.output_bias = nn.Parameter(torch.zeros(rows))
        nn.init.trunc_normal_(self.positions.weight, std=0.02, a=-0.04, b=0.04)
        nn.init.trunc_normal_(self.mask_vector, std=0.02, a=-0.04, b=0.04)

    def forward(self, items: torch.Tensor, mask: torch.Tensor, masked: torch.Tensor | None = None) -> torch.Tensor:
        if items.dim() != 3 or items.shape[1] > self.config.max_len or items.shape[2] != self.config.dim:
            raise ValueError(
                f"items must be [B, L, D] with L <= max_len={self.config.max_len} and D={self.config.dim}, got {tuple(items.shape)}"
            )
        if masked is not None:
            items = torch.where(masked[..., None], self.mask_vector.to(items.dtype), items)
        x = self.dropout(self.embedding_norm(items + self.positions.weight[: items.shape[1]]))
        padding = ~mask
        padding[:, 0] &= ~padding.all(1)  # an all-padding row attends to its first slot (no NaN)
        return self.encoder(x, src_key_padding_mask=padding)

    def logits(self, hidden: torch.Tensor, item_vectors: torch.Tensor) -> torch.Tensor:
        """Scores of every id from hidden states: ``[..., D] -> [..., V]`` (output layer tied to the item table)."""
        self._check_table(item_vectors)
        return F.linear(self.transform(hidden), item_vectors, self.output_bias)

    def cloze_loss(
        self, items: torch.Tensor, mask: torch.Tensor, masked: torch.Tensor, ids: torch.Tensor, item_vectors: torch.Tensor
    ) -> torch.Tensor:
        """Mean cross-entropy over the ``masked`` positions (:func:`cloze_mask`) of predicting
        their ids ``[B, L]`` among all ``V`` rows."""
        hidden = self(items, mask, masked)
        if not bool(masked.any()):
            return hidden.sum() * 0.0 + item_vectors.sum() * 0.0
        return F.cross_entropy(self.logits(hidden[masked], item_vectors), ids[masked])

    def training_loss(
        self, items: torch.Tensor, mask: torch.Tensor, ids: torch.Tensor, item_vectors: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`cloze_loss` with each real position masked with probability ``mask_prob``, or,
        in a fraction ``last_item_prob`` of the rows, the last real position alone (drawn from
        torch's global generator, which the Trainer's checkpoints restore)."""
        masked = cloze_mask(mask, self.config.mask_prob)
        if self.config.last_item_prob:
            rows = torch.arange(mask.shape[0], device=mask.device)
            last = torch.zeros_like(mask)
            last[rows, (mask.sum(1) - 1).clamp(min=0)] = True
            chosen = torch.rand(mask.shape[0], device=mask.device) < self.config.last_item_prob
            masked = torch.where(chosen[:, None], last & mask, masked)
        return self.cloze_loss(items, mask, masked, ids, item_vectors)

    def score_next(self, items: torch.Tensor, mask: torch.Tensor, item_vectors: torch.Tensor) -> torch.Tensor:
        """Scores of the next item after each history ``[B, L, D]`` (mask ``[B, L]``),
        ``[B, V]``; the padding and out-of-vocabulary ids score ``-inf``. Rank them with
        :func:`recsys_embed.models.rank_of`."""
        scores = self.logits(self.next_state(items, mask), item_vectors)
        scores[:, :FIRST_ITEM_ID] = float("-inf")
        return scores

    def next_state(self, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The hidden state ``h [B, D]`` at the mask appended after each history ``[B, L, D]``
        (mask ``[B, L]``, :func:`append_mask`): what predicts the next item."""
        inputs, real, position = append_mask(items, mask, self.config.max_len)
        masked = torch.zeros_like(real)
        rows = torch.arange(inputs.shape[0], device=inputs.device)
        masked[rows, position] = True
        return self(inputs, real, masked)[rows, position]

    def query(self, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Retrieval queries ``[t, 1]`` ``[B, D + 1]``, ``t = GELU(h W_p + b_p)`` of the state ``h`` at
        the appended mask (:meth:`next_state`): their inner products with :meth:`retrieval_items`
        are the next-item scores ``t . e_i + b_i``."""
        t = self.transform(self.next_state(items, mask))
        return torch.cat([t, t.new_ones(t.shape[0], 1)], dim=1)

    def retrieval_items(self, item_vectors: torch.Tensor) -> torch.Tensor:
        """The rows ``[e_i, b_i]`` ``[V, D + 1]`` :meth:`query` is searched against: each item's
        vector ``item_vectors [V, D]`` and its output bias."""
        self._check_table(item_vectors)
        return torch.cat([item_vectors, self.output_bias[:, None].to(item_vectors.dtype)], dim=1)

    def _check_table(self, item_vectors: torch.Tensor) -> None:
        if item_vectors.shape != (self.rows, self.config.dim):
            raise ValueError(f"item_vectors must be [{self.rows}, {self.config.dim}], got {tuple(item_vectors.shape)}")


def append_mask(items: torch.Tensor, mask: torch.Tensor, max_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Make room for the mask position right after each left-aligned history ``[B, L, ...]``
    (mask ``[B, L]``); a row that would exceed ``max_len`` drops its oldest item. Returns the
    inputs ``[B, min(L + 1, max_len), ...]`` (zeros at the new position), their mask (True up
    to and including the new position) and the new position of each row ``[B]``.

    Example::

        >>> items = torch.tensor([[3, 4, 0], [5, 6, 7]])
        >>> append_mask(items, items != 0, max_len=3)
        (tensor([[3, 4, 0],
                [6, 7, 0]]), tensor([[True, True, True],
                [True, True, True]]), tensor([2, 2]))
    """
    batch, length = mask.shape
    if length > max_len:
        raise ValueError(f"history has length {length} > max_len={max_len}; keep the most recent max_len items")
    lengths = mask.sum(1)
    left_aligned = torch.arange(length, device=mask.device)[None, :] < lengths[:, None]
    if not torch.equal(left_aligned, mask):
        row = int(torch.nonzero((left_aligned != mask).any(1))[0])
        raise ValueError(f"history row {row} is not left-aligned: items first, padding after them")
    rows = torch.arange(batch, device=mask.device)
    inputs = torch.cat([items, items.new_zeros((batch, 1, *items.shape[2:]))], dim=1)
    real = torch.cat([mask, mask.new_zeros(batch, 1)], dim=1)
    real[rows, lengths] = True
    if length + 1 <= max_len:
        return inputs, real, lengths
    full = lengths == length
    shift = full.view(-1, *([1] * (inputs.dim() - 1)))
    return (
        torch.where(shift, inputs[:, 1:], inputs[:, :length]),
        torch.where(full[:, None], real[:, 1:], real[:, :length]),
        lengths - full.to(lengths.dtype),
    )

"""SASRec (Kang & McAuley 2018, "Self-Attentive Sequential Recommendation") trained with
full-softmax cross-entropy (Klenitskiy & Vasilev 2023, "Turning Dross Into Gold Loss: is
BERT4Rec really better than SASRec?").

A causal transformer (pre-norm blocks, as SASRec) over the sum of item and learned position
embeddings: position ``i`` sees items ``0..i`` only, and its output predicts item ``i + 1``. Every
position of a training sequence is a training example, so a sequence of ``n`` items gives
``n - 1`` next-item predictions per step (BERT4Rec's Cloze gives about ``mask_prob * n``).
The output layer is tied to the item table: ``logits_i = h_i E^T`` with ``E [V, D]`` every row
of the item table, and the loss at position ``i`` is

    -log softmax(h_i E^T)[y_i],   y_i the item at position i + 1          (full cross-entropy)

or, with ``negatives = N > 0`` (for catalogs too large for ``[B L, V]`` logits), the same over
``{y_i} ∪ {n_1..n_N}``, N items drawn uniformly per step and shared by every position (an
accidental hit of ``y_i`` is masked out): sampled softmax, as gSASRec trains with many
negatives. To recommend, the output at the last item of the history scores every item.

Sequences are left-aligned (oldest first, padding after); the causal mask already keeps every
real position away from the padding after it, so no key-padding mask is needed. The model owns
no item table: it takes the item embeddings ``[B, L, D]`` and mask ``[B, L]`` of a table
layout's sequence feature, and the layout's ``table_vectors(group)`` ``[V, D]``. Ids follow the
pipeline (0 pads, 1 out-of-vocabulary, 2.. items; see ``next_item_ranking``).

Shape notation: B batch, L sequence length (<= max_len + 1 in training), D model dim, V table
rows, N sampled negatives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from recsys_embed.models.next_item_ranking import FIRST_ITEM_ID


@dataclass
class SASRecConfig:
    """SASRec hyper-parameters: histories of at most ``max_len`` items (a training row holds
    ``max_len + 1``: inputs and the items that follow them), a ``dim``-wide encoder (the item
    table's dim) of ``num_layers`` pre-norm blocks with ``num_heads`` heads, a ``dim``-wide ReLU
    feed-forward (as SASRec) and ``dropout``; ``negatives`` 0 trains with full cross-entropy over
    every item, N > 0 with sampled softmax over N uniform negatives per step."""

    max_len: int = 50
    dim: int = 64
    num_layers: int = 2
    num_heads: int = 1
    dropout: float = 0.5
    negatives: int = 0

    def __post_init__(self) -> None:
        if self.max_len < 1:
            raise ValueError(f"SASRec needs max_len >= 1, got {self.max_len}")
        if self.dim % self.num_heads:
            raise ValueError(f"SASRec dim {self.dim} must be divisible by num_heads {self.num_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"SASRec dropout must lie in [0, 1), got {self.dropout}")
        if self.negatives < 0:
            raise ValueError(f"SASRec negatives must be >= 0 (0: full cross-entropy), got {self.negatives}")

    @property
    def sequence_len(self) -> int:
        """Ids one training row keeps: ``max_len`` inputs and the item after the last of them."""
        return self.max_len + 1


class SASRec(nn.Module):
    """``forward(items [B, L, D], mask [B, L]) -> hidden [B, L, D]`` (position i from items 0..i);
    ``training_loss`` and ``score_next`` as every sequential model (see ``next_item_ranking``).

    Example::

        >>> from recsys_embed.models import rank_of
        >>> model = SASRec(SASRecConfig(max_len=5, dim=8), rows=22).eval()
        >>> table = torch.randn(22, 8)
        >>> history = torch.tensor([[3, 4, 5, 0, 0], [7, 8, 9, 10, 11]])
        >>> scores = model.score_next(table[history], history != 0, table)
        >>> scores.shape, rank_of(scores, torch.tensor([6, 13]), exclude=history).shape
        (torch.Size([2, 22]), torch.Size([2]))
        >>> rows = torch.tensor([[3, 4, 5, 6, 0, 0], [7, 8, 9, 10, 11, 12]])  # max_len + 1 ids
        >>> model.train().training_loss(table[rows], rows != 0, rows, table).shape
        torch.Size([])
    """

    def __init__(self, config: SASRecConfig, rows: int) -> None:
        super().__init__()
        if rows <= FIRST_ITEM_ID:
            raise ValueError(f"SASRec needs an item table of more than {FIRST_ITEM_ID} rows, got {rows}")
        self.config = config
        self.rows = rows
        d = config.dim
        self.positions = nn.Embedding(config.max_len, d)
        self.dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(
            d, config.num_heads, d, config.dropout, activation="relu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(d)
        nn.init.trunc_normal_(self.positions.weight, std=0.02, a=-0.04, b=0.04)

    def forward(self, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if items.dim() != 3 or items.shape[1] > self.config.max_len or items.shape[2] != self.config.dim:
            raise ValueError(
                f"items must be [B, L, D] with L <= max_len={self.config.max_len} and D={self.config.dim}, got {tuple(items.shape)}"
            )
        length = items.shape[1]
        x = items * self.config.dim**0.5 + self.positions.weight[:length]
        x = self.dropout(x) * mask[..., None].to(x.dtype)
        causal = nn.Transformer.generate_square_subsequent_mask(length, device=x.device, dtype=x.dtype)
        return self.final_norm(self.encoder(x, mask=causal, is_causal=True))

    def training_loss(
        self, items: torch.Tensor, mask: torch.Tensor, ids: torch.Tensor, item_vectors: torch.Tensor
    ) -> torch.Tensor:
        """Mean cross-entropy of predicting each next item: inputs ``items[:, :-1]``, targets
        ``ids[:, 1:]`` ``[B, L]`` where ``mask[:, 1:]`` (``L + 1 <= max_len + 1`` ids a row)."""
        self._check_table(item_vectors)
        targets, real = ids[:, 1:], mask[:, 1:]
        hidden = self(items[:, :-1], mask[:, :-1])[real]  # [P, D], P predicted positions
        targets = targets[real]
        if not hidden.shape[0]:
            return hidden.sum() * 0.0 + item_vectors.sum() * 0.0
        if not self.config.negatives:
            logits = hidden @ item_vectors.T
            logits[:, :FIRST_ITEM_ID] = float("-inf")
            return F.cross_entropy(logits, targets)
        negatives = torch.randint(FIRST_ITEM_ID, self.rows, (self.config.negatives,), device=hidden.device)
        positive = (hidden * item_vectors[targets]).sum(1, keepdim=True)  # [P, 1]
        sampled = hidden @ item_vectors[negatives].T  # [P, N]
        sampled = sampled.masked_fill(negatives[None, :] == targets[:, None], float("-inf"))
        logits = torch.cat([positive, sampled], dim=1)
        return F.cross_entropy(logits, logits.new_zeros(logits.shape[0], dtype=torch.long))

    def score_next(self, items: torch.Tensor, mask: torch.Tensor, item_vectors: torch.Tensor) -> torch.Tensor:
        """Scores of the next item after each history ``[B, L, D]`` (left-aligned, mask
        ``[B, L]``, ``L <= max_len``), ``[B, V]``; the padding and out-of-vocabulary ids score
        ``-inf``. An empty history scores from the position-0 state of no item."""
        scores = self.query(items, mask) @ self.retrieval_items(item_vectors).T
        scores[:, :FIRST_ITEM_ID] = float("-inf")
        return scores

    def query(self, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The state ``h [B, D]`` at each history's last real position (``items [B, L, D]``, ``mask [B, L]``):
        the next item's score is ``h . e``, its inner product with the item's vector (a query for retrieval)."""
        last = (mask.sum(1) - 1).clamp(min=0)
        return self(items, mask)[torch.arange(items.shape[0], device=items.device), last]

    def retrieval_items(self, item_vectors: torch.Tensor) -> torch.Tensor:
        """The rows ``[V, D]`` :meth:`query` is searched against: the item table itself (D' = D)."""
        self._check_table(item_vectors)
        return item_vectors

    def _check_table(self, item_vectors: torch.Tensor) -> None:
        if item_vectors.shape != (self.rows, self.config.dim):
            raise ValueError(f"item_vectors must be [{self.rows}, {self.config.dim}], got {tuple(item_vectors.shape)}")

"""BERT4Rec (Sun et al. 2019, "BERT4Rec: Sequential Recommendation with Bidirectional Encoder
Representations from Transformer").

A bidirectional transformer encoder (post-norm, GELU, as BERT) over the sum of item and
learned position embeddings (layer-normed, as BERT), trained by Cloze: random items of each sequence are replaced by a mask token and
predicted from both sides. The output layer shares the item embedding table:
``logits = GELU(h W_p + b_p) E^T + b``. To recommend, a mask token is appended after the
history (the oldest item dropped when the history is full) and its prediction scores every item.

Inputs are item id tensors ``[B, L]``, left-aligned (oldest first) and zero padded, as the
pipeline's sequence features are. Because its output layer needs the item table itself, the
model owns that table (``nn.Embedding(num_items + 2, D)``; 0 pads, ``num_items + 1`` is the
mask token): a lookup by row, not a vocabulary lookup; the ids come from the pipeline.

Shape notation: B batch, L sequence length (<= max_len), D model dim, V = num_items + 2.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.nn import functional as F

from recsys_embed.models.next_item_ranking import PAD_ID, check_items


@dataclass
class BERT4RecConfig:
    """BERT4Rec hyper-parameters: ``num_items`` items (ids ``1..num_items``), sequences of at
    most ``max_len`` items, a ``dim``-wide encoder of ``num_layers`` layers with ``num_heads``
    heads and a ``4 * dim`` feed-forward, ``dropout`` everywhere (as BERT).

    ``num_items=None`` leaves the item count to whoever knows the data (the sequential job
    counts it, then builds the model from :meth:`with_items`); the model needs it set.
    """

    num_items: int | None = None
    max_len: int = 50
    dim: int = 64
    num_layers: int = 2
    num_heads: int = 2
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if (self.num_items is not None and self.num_items < 1) or self.max_len < 2:
            raise ValueError(f"BERT4Rec needs num_items >= 1 and max_len >= 2, got {self.num_items}, {self.max_len}")
        if self.dim % self.num_heads:
            raise ValueError(f"BERT4Rec dim {self.dim} must be divisible by num_heads {self.num_heads}")

    def with_items(self, num_items: int) -> BERT4RecConfig:
        """This config for ``num_items`` items."""
        return replace(self, num_items=num_items)

    def _known_items(self) -> int:
        if self.num_items is None:
            raise ValueError("BERT4RecConfig.num_items is not set; build the model from config.with_items(num_items)")
        return self.num_items

    @property
    def mask_id(self) -> int:
        return self._known_items() + 1

    @property
    def vocab_size(self) -> int:
        return self._known_items() + 2


def cloze_mask(
    items: torch.Tensor, mask_prob: float, mask_id: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cloze task: each real (non-padding) item is masked with probability ``mask_prob``.

    Returns ``(inputs, targets)``, both ``[B, L]``: ``inputs`` with the chosen items replaced
    by ``mask_id``; ``targets`` holding the original item at those positions and 0 elsewhere.

    Example::

        >>> inputs, targets = cloze_mask(torch.tensor([[3, 4, 5, 0]]), 0.5, mask_id=9,
        ...                              generator=torch.Generator().manual_seed(1))
        >>> inputs.tolist(), targets.tolist()
        ([[3, 9, 9, 0]], [[0, 4, 5, 0]])
    """
    if not 0.0 < mask_prob < 1.0:
        raise ValueError(f"mask_prob must lie in (0, 1), got {mask_prob}")
    real = items != PAD_ID
    device = items.device if generator is None else generator.device
    chosen = (torch.rand(items.shape, generator=generator, device=device).to(items.device) < mask_prob) & real
    return items.masked_fill(chosen, mask_id), torch.where(chosen, items, torch.zeros_like(items))


class BERT4Rec(nn.Module):
    """``forward(items [B, L]) -> hidden [B, L, D]``; ``logits(hidden [..., D]) -> [..., V]``.

    Example::

        >>> from recsys_embed.models import rank_of
        >>> model = BERT4Rec(BERT4RecConfig(num_items=20, max_len=6, dim=8, num_layers=1)).eval()
        >>> history = torch.tensor([[3, 4, 5, 0, 0, 0], [7, 8, 9, 10, 11, 12]])
        >>> scores = model.score_next(history)
        >>> scores.shape, rank_of(scores, torch.tensor([6, 13]), exclude=history).shape
        (torch.Size([2, 22]), torch.Size([2]))
        >>> inputs, targets = cloze_mask(history, 0.3, model.config.mask_id, torch.Generator().manual_seed(0))
        >>> model.cloze_loss(inputs, targets).shape
        torch.Size([])
    """

    def __init__(self, config: BERT4RecConfig) -> None:
        super().__init__()
        self.config = config
        d = config.dim
        self.items = nn.Embedding(config.vocab_size, d, padding_idx=PAD_ID)
        self.positions = nn.Embedding(config.max_len, d)
        self.embedding_norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(
            d, config.num_heads, 4 * d, config.dropout, activation="gelu", batch_first=True, norm_first=False
        )
        self.encoder = nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)
        self.transform = nn.Sequential(nn.Linear(d, d), nn.GELU())  # W_p, b_p
        self.output_bias = nn.Parameter(torch.zeros(config.vocab_size))
        for table in (self.items, self.positions):
            nn.init.trunc_normal_(table.weight, std=0.02, a=-0.04, b=0.04)
        with torch.no_grad():
            self.items.weight[PAD_ID].zero_()

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        if items.dim() != 2 or items.shape[1] > self.config.max_len:
            raise ValueError(f"items must be [B, L] with L <= max_len={self.config.max_len}, got {tuple(items.shape)}")
        check_items(items, self.config.num_items, "BERT4Rec input", allow_mask=True)
        positions = torch.arange(items.shape[1], device=items.device)
        x = self.dropout(self.embedding_norm(self.items(items) + self.positions(positions)))
        padding = items == PAD_ID
        padding[:, 0] &= ~padding.all(1)  # an all-padding row attends to its first slot (no NaN)
        return self.encoder(x, src_key_padding_mask=padding)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of every id from hidden states: ``[..., D] -> [..., V]`` (output layer tied to the item table)."""
        return F.linear(self.transform(hidden), self.items.weight, self.output_bias)

    def cloze_loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over the masked positions (``targets != 0``) of :func:`cloze_mask`'s output."""
        hidden = self(inputs)
        masked = targets != PAD_ID
        if not bool(masked.any()):
            return hidden.sum() * 0.0
        return F.cross_entropy(self.logits(hidden[masked]), targets[masked])

    def score_next(self, history: torch.Tensor) -> torch.Tensor:
        """Scores of the next item after each history, ``[B, L] -> [B, V]``; the padding and
        mask ids score ``-inf``. Rank them with :func:`recsys_embed.models.rank_of`."""
        check_items(history, self.config.num_items, "history")
        inputs, position = append_mask(history, self.config.mask_id, self.config.max_len)
        hidden = self(inputs)[torch.arange(inputs.shape[0], device=inputs.device), position]
        scores = self.logits(hidden)
        scores[:, [PAD_ID, self.config.mask_id]] = float("-inf")
        return scores


def append_mask(history: torch.Tensor, mask_id: int, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Put the mask token right after each left-aligned history ``[B, L]``; a row that would
    exceed ``max_len`` drops its oldest item. Returns the inputs ``[B, min(L + 1, max_len)]``
    and the mask's position in each row ``[B]``.

    Example::

        >>> append_mask(torch.tensor([[3, 4, 0], [5, 6, 7]]), mask_id=9, max_len=3)
        (tensor([[3, 4, 9],
                [6, 7, 9]]), tensor([2, 2]))
    """
    batch, length = history.shape
    if length > max_len:
        raise ValueError(f"history has length {length} > max_len={max_len}; keep the most recent max_len items")
    lengths = (history != PAD_ID).sum(1)
    left_aligned = torch.arange(length, device=history.device)[None, :] < lengths[:, None]
    if not torch.equal(left_aligned, history != PAD_ID):
        row = int(torch.nonzero((left_aligned != (history != PAD_ID)).any(1))[0])
        raise ValueError(f"history row {row} is not left-aligned: item ids first, padding 0 after them")
    rows = torch.arange(batch, device=history.device)
    inputs = torch.cat([history, history.new_zeros(batch, 1)], dim=1)
    inputs[rows, lengths] = mask_id
    if length + 1 <= max_len:
        return inputs, lengths
    full = lengths == length
    return torch.where(full[:, None], inputs[:, 1:], inputs[:, :length]), lengths - full.to(lengths.dtype)

"""Models: embeddings and dense tensors in, logits or item scores out.

CTR models (``forward(embeddings, dense) -> logits [B]``, built from a table layout's
``EmbeddingShapes``): :class:`DIN`, :class:`AutoInt` (AutoInt+ with ``dnn``), :class:`FM`,
:class:`DeepFM`, :class:`DCNv2`, :class:`MLP`.
Next-item models over a table group's item ids (``score_next(...) -> [B, V]``, V table rows):
:class:`BERT4Rec` and :class:`SASRec` (item embeddings ``[B, L, D]`` + mask and the item table
``[V, D]`` in; both :class:`SequentialModel`), :class:`Popularity`, ranked by :func:`rank_of`.
"""

from recsys_embed.models.autoint import AutoInt, AutoIntConfig
from recsys_embed.models.bert4rec import BERT4Rec, BERT4RecConfig, append_mask, cloze_mask
from recsys_embed.models.dcn import DCNv2, DCNv2Config
from recsys_embed.models.din import DIN, DINConfig
from recsys_embed.models.fm import FM, DeepFM, DeepFMConfig, FMConfig
from recsys_embed.models.mlp import MLP, MLPConfig
from recsys_embed.models.popularity import Popularity
from recsys_embed.models.next_item_ranking import SequentialModel, rank_of, sample_negatives
from recsys_embed.models.regularization import mini_batch_aware_l2
from recsys_embed.models.sasrec import SASRec, SASRecConfig

__all__ = [
    "DIN",
    "FM",
    "MLP",
    "AutoInt",
    "AutoIntConfig",
    "BERT4Rec",
    "BERT4RecConfig",
    "DCNv2",
    "DCNv2Config",
    "DINConfig",
    "DeepFM",
    "DeepFMConfig",
    "FMConfig",
    "MLPConfig",
    "Popularity",
    "SASRec",
    "SASRecConfig",
    "SequentialModel",
    "append_mask",
    "cloze_mask",
    "mini_batch_aware_l2",
    "rank_of",
    "sample_negatives",
]

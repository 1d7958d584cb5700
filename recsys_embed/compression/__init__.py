"""Compression methods: how one table group's table is stored (:mod:`.method`), registered by
name (:mod:`.registry`, with third-party entry points in the group ``recsys_embed.compression``),
and held per table group by :class:`~recsys_embed.compression.layout.CompressedTables`.

Built in: ``exact`` (no compression), ``hashing`` (hashing trick), ``double_hashing`` (two hashes),
``qr`` (quotient-remainder), ``adaptive`` (frequent ids exact, the tail hashed), ``mixed_dims``
(mixed dimension embeddings), ``multiplexed`` (groups sharing one hashed pool), ``robe`` (ROBE-Z
shared array), ``tt_rec`` (tensor-train cores), ``dhe`` (deep hash embedding),
``dpq`` (learned product-quantization codes, MGQE tiers), ``lpt`` (int8/int16 rows during
training, LPT / ALPT), ``lr2vq`` (low-rank codes, product-quantized to uint8).
Post-training: :func:`~recsys_embed.compression.quantized.quantize` serves a trained layout's rows
in fp16 / int8 / int4 / int2 (the ``quantized`` layout); :func:`~recsys_embed.compression.binary.binarize`
turns a trained table into recurrent binary codes (BEBR) for Hamming retrieval (:mod:`.retrieval`, faiss optional).
"""

from recsys_embed.compression.adaptive import AdaptiveHashing
from recsys_embed.compression.binary import BinaryCodes, RecurrentBinarizer, binarize, binarize_table
from recsys_embed.compression.dhe import DeepHashEmbedding
from recsys_embed.compression.double_hashing import DoubleHashing
from recsys_embed.compression.dpq import ProductQuantized
from recsys_embed.compression.exact import ExactTable
from recsys_embed.compression.hashing import HashingTrick
from recsys_embed.compression.layout import CompressedTables
from recsys_embed.compression.lpt import LowPrecision
from recsys_embed.compression.lr2vq import LowRankVQ
from recsys_embed.compression.method import CompressionMethod, MethodConfigError, budget_parameters
from recsys_embed.compression.mixed_dims import MixedDimensions
from recsys_embed.compression.multiplexed import Multiplexed
from recsys_embed.compression.qr import QuotientRemainder
from recsys_embed.compression.quantized import QuantizedTables, quantize
from recsys_embed.compression.registry import (
    ENTRY_POINT_GROUP,
    PluginError,
    UnknownMethodError,
    compression_methods,
    describe_methods,
    method_class,
    register_compression,
)
from recsys_embed.compression.retrieval import BinaryIndex, exact_top_k, recall_at_k, rerank
from recsys_embed.compression.robe import RandomOffsetBlock
from recsys_embed.compression.tt_rec import TensorTrain

__all__ = [
    "ENTRY_POINT_GROUP", "AdaptiveHashing", "BinaryCodes", "BinaryIndex", "CompressedTables", "CompressionMethod", "DeepHashEmbedding",
    "DoubleHashing", "ExactTable", "HashingTrick", "LowPrecision", "LowRankVQ", "MethodConfigError", "MixedDimensions", "Multiplexed",
    "PluginError", "ProductQuantized", "QuantizedTables", "QuotientRemainder", "RandomOffsetBlock", "RecurrentBinarizer", "TensorTrain",
    "UnknownMethodError", "binarize", "binarize_table", "budget_parameters", "compression_methods", "describe_methods",
    "exact_top_k", "method_class", "quantize", "recall_at_k", "register_compression", "rerank",
]

"""The compression-method contract: how one table group's table is stored.

A method stores the vectors of ids ``0 .. n-1`` of one table group (``n`` ids, dim ``D``) in less
memory than the exact ``[n, D]`` fp32 table, and :class:`~recsys_embed.compression.layout.CompressedTables`
puts one method per table group behind the table-layout contract, so models, the Trainer,
artifacts and scoring see the same :class:`~recsys_embed.tables.Embeddings` as from exact tables.

Two kinds, told apart by :meth:`CompressionMethod.kernel_tables`:

* **row methods** (hashing trick, double hashing, QR, frequency-adaptive hybrid, mixed dims):
  their storage is ``k`` tables of rows, ``kernel_tables() == [(rows_j, d_j)]``, kept in the
  layout's one fused fbgemm kernel (packed with every other group's tables, trained by its fused
  optimizer). Per id they give the row read in each table, ``kernel_rows(ids)`` ``[k, N]`` (``-1``:
  none), and :meth:`~CompressionMethod.combine` turns the ``k`` rows read ``[..., d_j]`` (zeros
  where none) into the vector ``[..., D]``. A method whose combine is the sum of its reads says
  so (:meth:`~CompressionMethod.pools_reads`), and the kernel pools the ``k`` rows of an id as
  one bag instead.
* **computed methods** (ROBE, TT-Rec, DHE, LPT): ``kernel_tables() == []``; :meth:`~CompressionMethod.lookup`
  computes ``[N, D]`` from their own parameters, which the dense optimizer trains.

Sizing: ``from_options(n, D, options, budget)``: ``options`` are the method's hyper-parameters
from the run config; ``budget`` (or ``None``) is the number of weights (fp32 parameters) the
method may store, from a config's ``budget`` (bytes, or a fraction of the exact table:
:func:`budget_parameters`); a method sizes itself to at most that many weights, or raises
:class:`MethodConfigError` stating its minimum.

Training: a method with a loss term of its own (LR²VQ's commitment) returns it from
:meth:`~CompressionMethod.regularization_loss`; the layout adds up the methods' terms of each forward.

Accounting: :meth:`~CompressionMethod.num_parameters` and :meth:`~CompressionMethod.memory_bytes`
count the method's own tensors (dense parameters with the dense optimizer's Adam moments,
buffers); the layout adds the kernel rows of row methods (weights + fused optimizer state, as
allocated).

State: :meth:`~CompressionMethod.export_state` gives ``(tensors, config)`` (safetensors + JSON,
never pickle); ``from_state(n, D, tensors, config)`` rebuilds the method; ``config["method"]``
is its registered name.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from recsys_embed.tables.base import TableOptimizer

ADAM_MOMENTS = 2  # the dense optimizer (Adam) keeps two moments per parameter


class MethodConfigError(ValueError):
    """A method config the method cannot take: an unknown option, a wrong type, a budget below its minimum."""


def budget_parameters(budget: float, num_ids: int, dim: int, where: str) -> int:
    """The weights a ``budget`` allows: ``0 < budget <= 1`` is a fraction of the exact table's
    ``num_ids * dim`` weights, ``budget > 1`` bytes of fp32 weights (4 bytes each).

    >>> budget_parameters(0.1, 1000, 16, "item_id"), budget_parameters(6400, 1000, 16, "item_id")
    (1600, 1600)
    """
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0:
        raise MethodConfigError(f"{where}: budget must be a fraction in (0, 1] or bytes > 1, got {budget!r}")
    weights = int(budget * num_ids * dim) if budget <= 1 else int(budget) // 4
    if weights < 1:
        raise MethodConfigError(f"{where}: budget {budget!r} allows no weight at all ({num_ids} ids x dim {dim})")
    return weights


class CompressionMethod(nn.Module, abc.ABC):
    """The storage of one table group: ids ``[N]`` in ``[0, num_ids)`` to vectors ``[N, dim]``
    (the module docstring gives the two kinds, sizing, accounting and state).

    ``group`` is set by the layout that holds the method; ``method_name`` is set by :func:`~recsys_embed.compression.registry.register_compression`;
    ``description`` is the one line ``recsys-embed compression`` prints.
    """

    method_name: ClassVar[str]
    description: ClassVar[str] = ""
    group: str = ""  # the table group the layout holds the method for (set by the layout)

    def __init__(self, num_ids: int, dim: int) -> None:
        super().__init__()
        if num_ids < 1 or dim < 1:
            raise MethodConfigError(f"{self._name()}: needs >= 1 id and dim >= 1, got {num_ids} ids, dim {dim}")
        self.num_ids, self.dim = int(num_ids), int(dim)

    # ---- sizing and state: every method ---------------------------------------------------

    @classmethod
    @abc.abstractmethod
    def from_options(cls, num_ids: int, dim: int, options: Mapping[str, Any], budget: int | None) -> CompressionMethod:
        """A fresh method from config ``options`` (its hyper-parameters) and ``budget`` weights (or ``None``)."""

    @abc.abstractmethod
    def state_config(self) -> dict[str, Any]:
        """The JSON-ready options that rebuild this method's geometry (``from_options`` with no budget)."""

    def export_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """``(tensors, config)``: the method's own parameters and buffers on the CPU, and
        ``{"method": name, **state_config()}``."""
        tensors = {name: t.detach().cpu().clone() for name, t in self.state_dict().items()}
        return tensors, {"method": self.method_name, **self.state_config()}

    @classmethod
    def from_state(cls, num_ids: int, dim: int, tensors: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> CompressionMethod:
        """The method :meth:`export_state` described (its own tensors; the layout restores kernel rows)."""
        method = cls.from_options(num_ids, dim, {k: v for k, v in config.items() if k != "method"}, None)
        expected = set(method.state_dict())
        if set(tensors) != expected:
            raise ValueError(
                f"{cls._name()} state: tensors {sorted(tensors)} do not fit the method's {sorted(expected)} "
                f"(state saved by another version of {cls._name()}?)"
            )
        method.load_state_dict(dict(tensors))
        return method

    # ---- row methods ------------------------------------------------------------------------

    def kernel_tables(self) -> list[tuple[int, int]]:
        """``(rows, dim)`` of each table the method keeps in the fused kernel; ``[]``: a computed method."""
        return []

    def kernel_reads(self) -> list[int]:
        """Row methods: the kernel table each of the ``k`` reads per id comes from. Default: read j
        from table j (one read per table); multiplexing reads one table ``k`` times."""
        return list(range(len(self.kernel_tables())))

    def kernel_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Row methods: ``[k, N]`` int64, the row of each id for each of the ``k`` reads (``-1``: none)."""
        raise NotImplementedError(f"{self._name()} keeps no kernel tables")

    def combine(self, parts: Sequence[torch.Tensor], ids: torch.Tensor, runs: Sequence[tuple[CompressionMethod, int]]) -> torch.Tensor:
        """Row methods: the ``k`` rows read ``[..., d_j]`` (zeros where none) to vectors ``[..., dim]``.
        ``ids``: the id each vector is for, ``parts[0].shape[:-1]`` (``0`` in an empty slot, whose
        vector the layout zeroes). ``runs``: ``(method, positions)`` in order along dim 1 of a
        unit's parts ``[B, positions, d_j]`` (the features of several groups whose methods share a
        :meth:`combine_key`), ``[(self, P)]`` for a feature combined on its own. A combine that
        reads only ``parts`` ignores both; QR ``mult`` reads each id's quotient factor."""
        raise NotImplementedError(f"{self._name()} keeps no kernel tables")

    def pools_reads(self) -> bool:
        """Row methods: whether :meth:`combine` is the plain sum of the ``k`` reads (all of one dim),
        so the layout may read them as ONE bag of ``k`` rows that the fused kernel sums (its
        backward hands each row the bag's gradient, as the sum's would), instead of ``k`` one-row
        slots and a combine: half the kernel slots for ``k = 2``, no combine in forward or backward.
        The reads' tables must share one dim (the kernel then packs them together). A read of
        ``-1`` leaves a bag of fewer rows. Default: ``False`` (``k`` slots, :meth:`combine`)."""
        return False

    def combine_key(self) -> Any:
        """Row methods that do not pool their reads: a hashable that methods share only when their
        :meth:`combine` is the same function of ``(parts, ids, runs)`` (same kind of reads), or
        ``None``. The layout combines the reads of all features whose methods share a key (and
        read widths and dim) in ONE call, on parts ``[B, positions, d_j]`` holding every slot of
        those features: a few large element-wise ops in forward and backward instead of a few per
        feature. Default: ``None``, :meth:`combine` per feature on ``[B(, L), d_j]``."""
        return None

    def share_key(self) -> str | None:
        """Row methods of several table groups with the same key share their kernel tables (feature
        multiplexing): the layout allocates them once, for the first such group, and the methods
        must give identical :meth:`kernel_tables`. Default: ``None``, tables of its own."""
        return None

    def initialize(self, table: int, weight: torch.Tensor) -> None:
        """Row methods: set the start values of kernel table ``table`` in place (``weight`` ``[rows, d]``,
        uniform in ``[-init_scale, init_scale]`` when called). Default: keep them."""

    # ---- computed methods -------------------------------------------------------------------

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """Computed methods: vectors ``[N, dim]`` of ids ``[N]``."""
        raise NotImplementedError(f"{self._name()} is a row method: the layout reads its kernel tables")

    def lookup_many(self, ids: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Computed methods: the vectors of several id tensors of one forward (every feature that
        reads the group), ``[N_i] -> [N_i, dim]`` each. Default: one :meth:`lookup` each; a method
        whose backward updates its storage (LPT) reads them in one call, so it updates once a step."""
        return [self.lookup(i) for i in ids]

    def dense_parameters(self) -> list[dict[str, Any]]:
        """Param groups of the method's own parameters with their own settings (the layout's
        :meth:`~recsys_embed.tables.TableLayout.dense_parameters`), e.g. a step size without weight
        decay. Default: none; the dense optimizer trains them at its defaults."""
        return []

    def use_table_optimizer(self, optimizer: TableOptimizer) -> None:
        """The layout's table optimizer (lr, eps), given by the layout that holds the method, for a
        method that updates its own rows in backward as the fused kernel does (LPT). Default: ignored."""

    # ---- accounting and reporting -----------------------------------------------------------

    def num_parameters(self) -> int:
        """Weights the method stores outside the kernel (its parameters and float buffers)."""
        return sum(t.numel() for t in [*self.parameters(), *self.buffers()] if t.is_floating_point())

    def memory_bytes(self) -> int:
        """Bytes the method allocates outside the kernel: parameters with their Adam moments, and buffers."""
        params = sum(p.numel() * p.element_size() for p in self.parameters() if p.requires_grad)
        return params * (1 + ADAM_MOMENTS) + sum(b.numel() * b.element_size() for b in self.buffers())

    def collision_rate(self) -> float | None:
        """Expected fraction of the group's ids whose vector is not their own (hashing methods); ``None``: not hashed."""
        return None

    def details(self) -> str:
        """A few words on the geometry for ``summary()`` (rows, rank, ...)."""
        return ", ".join(f"{k}={v}" for k, v in self.state_config().items())

    def supports_prefix(self, dim: int) -> bool:
        """Whether the first ``dim`` columns of the vectors still embed each id on their own (Matryoshka
        prefixes). Default: yes; QR's ``concat`` puts only the quotient table there for ``dim <= D/2``."""
        return True

    def regularization_loss(self) -> torch.Tensor | None:
        """A training-loss term of the lookups since the last call (a VQ commitment), handed out once;
        ``None``: nothing to add. The layout collects it after each forward and gives it to the
        trainer through the layout contract's ``regularization_loss()``. Default: ``None``."""
        return None

    def finalize(self) -> None:
        """Post-training step (quantize, prune, ...); called once training ends. Default: nothing."""

    @classmethod
    def _name(cls) -> str:
        return getattr(cls, "method_name", cls.__name__)


def option(options: Mapping[str, Any], key: str, default: Any, kind: type, where: str) -> Any:
    """``options[key]`` (or ``default``) checked to be of ``kind``; ``MethodConfigError`` names the key."""
    value = options.get(key, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise MethodConfigError(f"{where}: option {key!r} must be {kind.__name__}, got {value!r}")
    return value


def check_options(options: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    """``MethodConfigError`` naming any option key the method does not take."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise MethodConfigError(f"{where}: unknown option(s) {unknown}; it takes {sorted(allowed)}")


def check_sizing(options: Mapping[str, Any], key: str, budget: int | None, where: str) -> None:
    """``MethodConfigError`` unless exactly one of the option ``key`` and a ``budget`` sizes the method."""
    if (budget is None) == (key not in options):
        raise MethodConfigError(f"{where}: give either {key!r} or 'budget', got options {dict(options)} and budget {budget}")

"""Shard a table layout over ranks with torchrec's ``DistributedModelParallel`` (DMP).

A layout keeps computing its kernel inputs as it does unsharded (hashing, id checks,
sequence position slots: :meth:`kernel_inputs`); those inputs become the
``KeyedJaggedTensor`` of a torchrec ``EmbeddingBagCollection`` whose tables are the
layout's kernel tables, and DMP shards that collection:

* multiplexed: one torchrec table ``shared`` of ``M`` rows and dim ``d_c``, read by
  ``S`` slot features (feature, probe[, position]); sharded row-wise, rank ``r`` holds
  rows ``[r * ceil(M / W), (r + 1) * ceil(M / W))`` (torchrec's even row-wise split);
* per-feature: one torchrec table per table group (``hist_item_id`` reads ``item_id``).

The optimizer is fused into torchrec's fbgemm kernel (``fused_params``): the layout's
``TableOptimizer`` (rowwise Adagrad by default) with its current learning rate. The output
is the layout's :class:`~recsys_embed.tables.base.Embeddings`, so models do not change.

torchrec's planner offers row-wise sharding on CUDA only (``EmbeddingBagCollectionSharder``
lists ``row_wise`` for ``cuda``), yet its row-wise sharding runs on CPU with gloo; so the
plan here is explicit (``construct_module_sharding_plan``), not planned.

Every rank must build the same layout (same seed, or loaded from the same artifact) and
call the constructor, ``forward`` and :meth:`ShardedTables.gather` together (torchrec's
collectives), with batches of ``B > 0`` rows (sizes may differ between ranks). The sharded
step on ``W`` ranks, each with its own batch, equals the unsharded step on all the ranks'
samples with the mean of the ranks' losses: torchrec divides embedding gradients by ``W``, as DDP averages
dense ones (``torchrec.distributed.comm_ops.set_gradient_division``).

Example (under ``torchrun --nproc_per_node 2``, gloo, see ``examples/shard_tables.py``)::

    tables = MultiplexedTables(schema, MultiplexedConfig(rows=100_000, chunk_dim=16))
    sharded = ShardedTables(tables)                 # rank r holds its rows only
    emb = sharded(batch.sparse)                     # Embeddings, as tables(batch.sparse)
    sharded.gather().export_state()                 # every rank: the full trained state
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torchrec.distributed.comm import get_local_size
from torchrec.distributed.embedding_types import EmbeddingComputeKernel
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.sharding_plan import construct_module_sharding_plan, row_wise, table_wise
from torchrec.distributed.types import ShardingEnv, ShardingPlan
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from recsys_embed.features import FeatureSpec
from recsys_embed.tables.base import Embeddings, EmbeddingShapes, unpack_output
from recsys_embed.tables.multiplexed import MultiplexedTables
from recsys_embed.tables.per_feature import PerFeatureTables

SHARDING_TYPES = ("row_wise", "table_wise")
_WEIGHT = "embedding_bags.{}.weight"  # torchrec's state key of a table's weight
Shard = tuple[int, int, torch.Tensor]  # (row offset, column offset, this rank's view into the kernel)


@dataclass(frozen=True)
class ShardingConfig:
    """How DMP places the tables.

    ``sharding_type``: ``row_wise`` (every table split into contiguous row blocks, one per
    rank) or ``table_wise`` (whole tables, table ``t`` on rank ``t % W``).
    """

    sharding_type: str = "row_wise"

    def __post_init__(self) -> None:
        if self.sharding_type not in SHARDING_TYPES:
            raise ValueError(f"sharding_type must be one of {SHARDING_TYPES}, got {self.sharding_type!r}")


def slot_features(
    layout: MultiplexedTables | PerFeatureTables,
) -> tuple[list[FeatureSpec], list[str], dict[str, list[int]]]:
    """The layout's kernel slots as torchrec features.

    Returns ``(order, names, positions)``: the features in the order their slots feed the
    kernel, one torchrec feature name per slot (``<feature>#<probe>``, and
    ``<feature>@<position>#<probe>`` for sequences), and for each sequence feature the slot
    index of probe 0 at each position (its bag is empty where the position is padding).
    """
    if isinstance(layout, MultiplexedTables):
        order = layout.features
        probes = {f.name: layout.probes[f.table] for f in order}  # type: ignore[index]
    elif isinstance(layout, PerFeatureTables):
        order, probes = layout.slot_order, {f.name: 1 for f in layout.slot_order}
    else:
        raise ValueError(
            f"sharding: expected MultiplexedTables or PerFeatureTables, got {type(layout).__name__}; "
            "pruned and Matryoshka layouts are not sharded"
        )
    names: list[str] = []
    positions: dict[str, list[int]] = {}
    for spec in order:
        k = probes[spec.name]
        if spec.is_sequence:
            positions[spec.name] = [len(names) + p * k for p in range(spec.max_len)]
            names += [f"{spec.name}@{p}#{j}" for p in range(spec.max_len) for j in range(k)]
        else:
            names += [f"{spec.name}#{j}" for j in range(k)]
    return order, names, positions


def ebc_configs(layout: MultiplexedTables | PerFeatureTables) -> list[EmbeddingBagConfig]:
    """One torchrec ``EmbeddingBagConfig`` (SUM pooling) per kernel table of the layout,
    read by the slot features of :func:`slot_features`."""
    _, names, _ = slot_features(layout)
    kernel = layout.kernel
    slot_tables = [kernel.table_names[t] for t in kernel.slot_tables]
    return [
        EmbeddingBagConfig(
            num_embeddings=rows,
            embedding_dim=dim,
            name=table,
            feature_names=[s for s, t in zip(names, slot_tables) if t == table],
            pooling=PoolingType.SUM,
        )
        for table, rows, dim in zip(kernel.table_names, kernel.rows, kernel.dims)
    ]


class ShardedTables(nn.Module):
    """A :class:`MultiplexedTables` or :class:`PerFeatureTables` sharded over the ranks of
    ``env`` (default: the default process group), starting from the layout's weights and
    optimizer state.

    ``forward(kjt)`` takes this rank's batch and returns :class:`Embeddings` as
    ``layout(kjt)`` does. :meth:`local_rows` says which rows this rank holds;
    :meth:`gather` copies the trained shards back into ``layout`` on every rank, whose
    ``export_state()`` then saves an artifact.

    The layout is kept (not as a submodule: ``parameters()`` and ``state_dict()`` are the
    shards') for its input path and as the target of :meth:`gather`, so its own full-size
    kernel stays allocated on every rank.
    """

    layout: MultiplexedTables | PerFeatureTables

    def __init__(
        self,
        layout: MultiplexedTables | PerFeatureTables,
        config: ShardingConfig | None = None,
        device: torch.device | str | None = None,
        env: ShardingEnv | None = None,
    ) -> None:
        super().__init__()
        self.config = config or ShardingConfig()
        self.order, self.slot_names, self._positions = slot_features(layout)
        if len(self.slot_names) != len(layout.kernel.slot_tables):
            raise ValueError(
                f"sharding: the layout feeds {len(layout.kernel.slot_tables)} kernel slots, "
                f"its features describe {len(self.slot_names)}"
            )
        object.__setattr__(self, "layout", layout)  # not a submodule, see the class docstring
        self.device = torch.device(device or "cpu")
        if env is None:
            if not dist.is_initialized():
                raise ValueError("sharding: no process group; call torch.distributed.init_process_group first")
            env = ShardingEnv.from_process_group(dist.GroupMember.WORLD)
        self.env = env
        optimizer = layout.kernel.current_optimizer()
        sharder = EmbeddingBagCollectionSharder(fused_params={
            "optimizer": layout.kernel.tbe.optimizer,
            "learning_rate": optimizer.lr,
            "eps": optimizer.eps,
            "weight_decay": optimizer.weight_decay,
        })
        ebc = EmbeddingBagCollection(tables=ebc_configs(layout), device=torch.device("meta"))
        fused = EmbeddingComputeKernel.FUSED.value
        world = env.world_size
        placements = {
            table: row_wise(compute_kernel=fused) if self.config.sharding_type == "row_wise"
            else table_wise(rank=t % world, compute_kernel=fused)
            for t, table in enumerate(layout.kernel.table_names)
        }
        plan = construct_module_sharding_plan(
            ebc, placements, sharder, local_size=get_local_size(world), world_size=world, device_type=self.device.type
        )
        self.dmp = DistributedModelParallel(
            ebc, env=env, device=self.device, plan=ShardingPlan({"": plan}), sharders=[sharder],
            init_data_parallel=False,  # no dense parameters here: DDP for the model around it is the caller's
        )
        self._load()

    def _pairs(self) -> dict[str, list[tuple[list[Shard], torch.Tensor]]]:
        """Table -> ``(this rank's shards, the layout's full tensor)`` for its weight, then for
        each optimizer state (e.g. rowwise Adagrad's ``momentum1``)."""
        weights = self.dmp.state_dict()
        states = self.dmp.fused_optimizer.state_dict()["state"]
        kernel = self.layout.kernel
        out = {}
        for table, weight, table_states in zip(kernel.table_names, kernel.weights(), kernel.optimizer_states()):
            key = _WEIGHT.format(table)
            held = _shards(weights[key])
            pairs = [(held, weight)]
            for name, full in table_states.items():
                state = states.get(key, {}).get(f"{table}.{name}")
                if state is None and held:  # a rank holding no rows of a table has no state for it
                    raise ValueError(
                        f"sharding: torchrec's fused optimizer has no state {table}.{name} for table {table!r}"
                    )
                pairs.append((_shards(state) if held else [], full))
            out[table] = pairs
        return out

    def _kernels(self) -> list[nn.Module]:
        """This rank's fbgemm kernels inside torchrec (torchrec keeps them in ``_lookups``)."""
        return [emb.emb_module for lookup in self.dmp.module._lookups for emb in lookup._emb_modules]

    def _load(self) -> None:
        """Copy this rank's rows of the layout's weights and optimizer state into the shards."""
        with torch.no_grad():
            for pairs in self._pairs().values():
                for shards, full in pairs:
                    for row, col, view in shards:
                        view.copy_(_block(full, row, col, view))
            for tbe in self._kernels():
                tbe.iter.copy_(self.layout.kernel.tbe.iter)

    def forward(self, kjt: KeyedJaggedTensor) -> Embeddings:
        rows, offsets = self.layout.kernel_inputs(kjt)
        slots = len(self.slot_names)
        batch = (offsets.numel() - 1) // slots
        if batch == 0:
            raise ValueError("sharding: a batch of 0 rows; every rank must feed B > 0 rows to torchrec's collectives")
        slot_kjt = KeyedJaggedTensor(keys=self.slot_names, values=rows, offsets=offsets, stride=batch)
        pooled = self.dmp(slot_kjt)
        flat = KeyedTensor.regroup([pooled], [self.slot_names])[0]
        present = offsets.diff().view(slots, batch) > 0
        masks = {name: present[index].T.contiguous() for name, index in self._positions.items()}
        return unpack_output(flat, self.order, self.layout.dims, masks, self.layout.features)

    def shapes(self, num_dense: int = 0) -> EmbeddingShapes:
        """The output shapes, as the unsharded layout gives them."""
        return self.layout.shapes(num_dense)

    def local_rows(self) -> dict[str, tuple[int, int]]:
        """Table -> ``(start, end)`` rows held on this rank (tables it holds no rows of are left out)."""
        out = {}
        for table, pairs in self._pairs().items():
            spans = [(row, row + view.shape[0]) for row, _, view in pairs[0][0]]
            if spans:
                out[table] = (min(s for s, _ in spans), max(e for _, e in spans))
        return out

    def local_parameters(self) -> int:
        """Table weights held on this rank."""
        return sum(view.numel() for pairs in self._pairs().values() for _, _, view in pairs[0][0])

    def gather(self) -> MultiplexedTables | PerFeatureTables:
        """Copy every rank's shards (weights, optimizer state, step) into ``layout`` on every
        rank and return it; a collective, so every rank calls it."""
        group = self.env.process_group
        with torch.no_grad():
            for pairs in self._pairs().values():
                for shards, full in pairs:
                    merged = torch.zeros_like(full)
                    for row, col, view in shards:
                        _block(merged, row, col, view).copy_(view)
                    dist.all_reduce(merged, group=group)  # disjoint shards: the sum places each value once, exactly
                    full.copy_(merged)
            step = torch.stack([tbe.iter.reshape(()) for tbe in self._kernels()] or [torch.tensor(0)]).max()
            dist.all_reduce(step, op=dist.ReduceOp.MAX, group=group)  # a rank may hold no table (table_wise)
            self.layout.kernel.tbe.iter.fill_(step)
        return self.layout


def _block(full: torch.Tensor, row: int, col: int, view: torch.Tensor) -> torch.Tensor:
    """The part of ``full`` a shard ``view`` at ``(row, col)`` covers (1-d states: rows only)."""
    rows = full[row : row + view.shape[0]]
    return rows[:, col : col + view.shape[1]] if view.dim() == 2 else rows


def _shards(tensor: torch.Tensor) -> list[Shard]:
    """``(row offset, column offset, local view)`` of each local shard of a torchrec
    ``ShardedTensor`` (1-d optimizer states have no column offset)."""
    shards = []
    for shard in tensor.local_shards():
        offsets = shard.metadata.shard_offsets
        shards.append((offsets[0], offsets[1] if len(offsets) > 1 else 0, shard.tensor))
    return shards

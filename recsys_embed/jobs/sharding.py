"""Shard a table layout over ranks with torchrec's ``DistributedModelParallel`` (DMP).

A layout keeps computing its kernel inputs as it does unsharded (hashing, id checks,
sequence position slots: :meth:`kernel_inputs`); those inputs become the
``KeyedJaggedTensor`` of a torchrec ``EmbeddingBagCollection`` whose tables are the
layout's kernel tables, and DMP shards that collection:

* multiplexed: one torchrec table ``shared`` of ``M`` rows and dim ``d_c``, read by
  ``S`` slot features (feature, probe[, position]); sharded row-wise, rank ``r`` holds
  rows ``[r * ceil(M / W), (r + 1) * ceil(M / W))`` (torchrec's even row-wise split);
* per-feature: one torchrec table per table group (``hist_item_id`` reads ``item_id``).

Memory: a rank holds its rows (weights and optimizer state) and the layout's input side
only, a twin of the layout built with ``storage=False`` (no kernel storage). A full table
exists on a rank only in what the caller holds while the shards load (the layout passed
in, or the unsharded tensors passed as ``state``, e.g. an artifact every rank reads; the
caller frees them), and on the rank that :meth:`ShardedTables.gather` assembles the
trained table on, in the fresh layout it returns.

The optimizer is fused into torchrec's fbgemm kernel (``fused_params``): the layout's
``TableOptimizer`` (rowwise Adagrad by default) with its current learning rate. The output
is the layout's :class:`~recsys_embed.tables.base.Embeddings`, so models do not change.

torchrec's planner offers row-wise sharding on CUDA only (``EmbeddingBagCollectionSharder``
lists ``row_wise`` for ``cuda``), yet its row-wise sharding runs on CPU with gloo; so the
plan here is explicit (``construct_module_sharding_plan``), not planned.

Every rank must shard the same layout (same seed, or loaded from the same artifact) and
call the constructor, ``forward`` and :meth:`ShardedTables.gather` together (torchrec's
collectives), with batches of ``B > 0`` rows (sizes may differ between ranks). The sharded
step on ``W`` ranks, each with its own batch, equals the unsharded step on all the ranks'
samples with the mean of the ranks' losses: torchrec divides embedding gradients by ``W``, as DDP averages
dense ones (``torchrec.distributed.comm_ops.set_gradient_division``).

Example (under ``torchrun --nproc_per_node 2``, gloo, see ``examples/shard_tables.py``)::

    sharded = ShardedTables(MultiplexedTables(schema, MultiplexedConfig(rows=100_000)))  # rank r keeps its rows
    emb = sharded(batch.sparse)                     # Embeddings, as the layout gives them
    gathered = sharded.gather()                     # rank 0: a full MultiplexedTables; others: None
    if gathered is not None:
        tensors, config = gathered.export_state()

    # from an artifact: every rank reads the file, copies its rows and frees the tensors
    tensors, manifest = load_artifact(path)
    layout = MultiplexedTables.from_config(schema, manifest["layout"], storage=False)
    sharded = ShardedTables(layout, state=tensors)
    del tensors
"""

from __future__ import annotations

from collections.abc import Mapping
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
from recsys_embed.tables.contract import TableLayout

SHARDING_TYPES = ("row_wise", "table_wise")
_WEIGHT = "embedding_bags.{}.weight"  # torchrec's state key of a table's weight
Layout = TableLayout  # one whose kernel_slots() answers: per_feature (pool_sequences=False) or multiplexed


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
    layout: Layout,
) -> tuple[list[FeatureSpec], list[str], dict[str, list[int]]]:
    """The layout's kernel slots as torchrec features.

    Returns ``(order, names, positions)``: the features in the order their slots feed the
    kernel, one torchrec feature name per slot (``<feature>#<probe>``, and
    ``<feature>@<position>#<probe>`` for sequences), and for each sequence feature the slot
    index of probe 0 at each position (its bag is empty where the position is padding).
    A layout that is not sharded raises ``ValueError`` (:meth:`TableLayout.kernel_slots`).
    """
    order, probes = layout.kernel_slots()
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


def ebc_configs(layout: Layout) -> list[EmbeddingBagConfig]:
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
    ``env`` (default: the default process group).

    The shards load their rows of the weights, optimizer state and step from ``state`` if
    given (the unsharded tensors of ``export_state()`` or of an artifact), else from the
    layout's own kernel; a layout built with ``storage=False`` needs ``state``. Each rank
    copies only its row range; this module keeps neither ``state`` nor the layout's kernel.

    ``forward(kjt)`` takes this rank's batch and returns :class:`Embeddings` as
    ``layout(kjt)`` does. :meth:`local_rows` says which rows this rank holds,
    :meth:`memory_bytes` what they take; :meth:`gather` assembles the trained table on one
    rank into a fresh layout, whose ``export_state()`` saves an artifact.

    ``layout`` is the input side (a twin of the layout passed in, built with
    ``storage=False``); it is not a submodule, so ``parameters()`` and ``state_dict()`` are
    the shards'.
    """

    layout: Layout

    def __init__(
        self,
        layout: Layout,
        config: ShardingConfig | None = None,
        device: torch.device | str | None = None,
        env: ShardingEnv | None = None,
        state: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.config = config or ShardingConfig()
        self.device = torch.device(device or "cpu")
        self.order, self.slot_names, _ = slot_features(layout)
        if len(self.slot_names) != len(layout.kernel.slot_tables):
            raise ValueError(
                f"sharding: the layout feeds {len(layout.kernel.slot_tables)} kernel slots, "
                f"its features describe {len(self.slot_names)}"
            )
        if state is None and not layout.kernel.has_storage:
            raise ValueError(
                "sharding: the layout was built with storage=False and holds no weights; pass state=, "
                "the unsharded tensors of export_state() or of an artifact"
            )
        source = layout.kernel.state_views() if state is None else state
        layout.kernel.check_state(source, "ShardedTables state")
        if layout.kernel.has_storage:  # keep its input side only (not a submodule, see the class docstring)
            layout = type(layout).from_config(layout.schema, layout.state_config(), device=self.device, storage=False)
        object.__setattr__(self, "layout", layout)
        if env is None:
            if not dist.is_initialized():
                raise ValueError("sharding: no process group; call torch.distributed.init_process_group first")
            env = ShardingEnv.from_process_group(dist.GroupMember.WORLD)
        self.env = env
        kernel = layout.kernel
        optimizer = kernel.current_optimizer()
        sharder = EmbeddingBagCollectionSharder(fused_params={
            "optimizer": kernel.tbe.optimizer,
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
            for t, table in enumerate(kernel.table_names)
        }
        plan = construct_module_sharding_plan(
            ebc, placements, sharder, local_size=get_local_size(world), world_size=world, device_type=self.device.type
        )
        self.dmp = DistributedModelParallel(
            ebc, env=env, device=self.device, plan=ShardingPlan({"": plan}), sharders=[sharder],
            init_data_parallel=False,  # no dense parameters here: DDP for the model around it is the caller's
        )
        self._load(source)

    def _local_shards(self) -> dict[str, dict[int, torch.Tensor]]:
        """State name as in ``export_state()`` (``<table>.weight``, ``<table>.<optimizer state>``)
        -> this rank's row blocks of it: first row -> view into torchrec's kernel. Shards
        are row blocks of full width (row-wise and table-wise sharding both give those)."""
        weights = self.dmp.state_dict()
        states = self.dmp.fused_optimizer.state_dict()["state"]
        kernel = self.layout.kernel
        out = {}
        for table, table_states in zip(kernel.table_names, kernel.optimizer_states()):
            key = _WEIGHT.format(table)
            out[f"{table}.weight"] = held = _row_blocks(weights[key])
            for name in table_states:
                state = states.get(key, {}).get(f"{table}.{name}")
                if state is None and held:  # a rank holding no rows of a table has no state for it
                    raise ValueError(
                        f"sharding: torchrec's fused optimizer has no state {table}.{name} for table {table!r}"
                    )
                out[f"{table}.{name}"] = _row_blocks(state) if held else {}
        return out

    def _kernels(self) -> list[nn.Module]:
        """This rank's fbgemm kernels inside torchrec (torchrec keeps them in ``_lookups``)."""
        return [emb.emb_module for lookup in self.dmp.module._lookups for emb in lookup._emb_modules]

    def _load(self, source: Mapping[str, torch.Tensor]) -> None:
        """Copy this rank's rows of the unsharded ``source`` (checked names and shapes) into the shards."""
        with torch.no_grad():
            for key, blocks in self._local_shards().items():
                for row, view in blocks.items():
                    view.copy_(source[key][row : row + view.shape[0]])
            for tbe in self._kernels():
                tbe.iter.copy_(source["step"])

    def forward(self, kjt: KeyedJaggedTensor) -> Embeddings:
        inputs = self.layout.kernel_inputs(kjt)  # the layout's own ids, offsets and masks
        batch = (inputs.offsets.numel() - 1) // len(self.slot_names)
        if batch == 0:
            raise ValueError("sharding: a batch of 0 rows; every rank must feed B > 0 rows to torchrec's collectives")
        slot_kjt = KeyedJaggedTensor(keys=self.slot_names, values=inputs.indices, offsets=inputs.offsets, stride=batch)
        pooled = self.dmp(slot_kjt)
        flat = KeyedTensor.regroup([pooled], [self.slot_names])[0]
        return unpack_output(flat, self.order, self.layout.dims, inputs.masks, self.layout.features)

    def shapes(self, num_dense: int = 0) -> EmbeddingShapes:
        """The output shapes, as the unsharded layout gives them."""
        return self.layout.shapes(num_dense)

    def local_rows(self) -> dict[str, tuple[int, int]]:
        """Table -> ``(start, end)`` rows held on this rank (tables it holds no rows of are left out)."""
        local = self._local_shards()
        out = {}
        for table in self.layout.kernel.table_names:
            blocks = local[f"{table}.weight"]
            if blocks:
                out[table] = (min(blocks), max(row + view.shape[0] for row, view in blocks.items()))
        return out

    def local_parameters(self) -> int:
        """Table weights held on this rank."""
        local = self._local_shards()
        return sum(view.numel() for table in self.layout.kernel.table_names for view in local[f"{table}.weight"].values())

    def memory_bytes(self) -> int:
        """Bytes of this rank's rows: weights plus fused optimizer state."""
        return sum(view.numel() * view.element_size() for blocks in self._local_shards().values() for view in blocks.values())

    def gather(self, dst: int = 0) -> Layout | None:
        """The trained table (weights, optimizer state, step, learning rate) assembled on rank
        ``dst`` into a fresh unsharded layout, returned there; ``None`` on the other ranks.
        A collective: every rank calls it. Every rank sends its rows to ``dst``; only ``dst``
        allocates the full table, for the returned layout (this module keeps no reference)."""
        group, rank = self.env.process_group, self.env.rank
        kernels = self._kernels()  # a rank may hold no table (table_wise with more ranks than tables)
        scalars = torch.tensor(
            [max((float(k.iter) for k in kernels), default=0.0), max((k.get_learning_rate() for k in kernels), default=0.0)],
            dtype=torch.float64,
        )
        dist.reduce(scalars, op=dist.ReduceOp.MAX, group=group, group_dst=dst)
        views: dict[str, torch.Tensor] = {}
        gathered = None
        if rank == dst:
            config = self.layout.state_config()
            config["optimizer"]["lr"] = float(scalars[1])
            with torch.random.fork_rng(devices=[]):  # its random init is overwritten: draw nothing from this rank's RNG
                gathered = type(self.layout).from_config(self.layout.schema, config)
            views = gathered.kernel.state_views()
            views["step"].fill_(int(scalars[0]))
        local = self._local_shards()
        with torch.no_grad():
            for key, holder, row, rows in self._placements():  # the same order on every rank
                if rank == holder == dst:
                    views[key][row : row + rows].copy_(local[key][row])
                elif rank == holder:
                    dist.send(local[key][row].contiguous(), group=group, group_dst=dst)
                elif rank == dst:
                    dist.recv(views[key][row : row + rows], group=group, group_src=holder)
        return gathered

    def _placements(self) -> list[tuple[str, int, int, int]]:
        """``(state name, rank, first row, rows)`` of every row block of every table's weight
        and optimizer state on every rank (from the weights' global shard metadata)."""
        weights = self.dmp.state_dict()
        out = []
        for table, table_states in zip(self.layout.kernel.table_names, self.layout.kernel.optimizer_states()):
            for shard in weights[_WEIGHT.format(table)].metadata().shards_metadata:
                out += [
                    (f"{table}.{name}", shard.placement.rank(), shard.shard_offsets[0], shard.shard_sizes[0])
                    for name in ("weight", *table_states)
                ]
        return out


def _row_blocks(tensor: torch.Tensor) -> dict[int, torch.Tensor]:
    """First row -> local view of each local shard of a torchrec ``ShardedTensor``."""
    return {shard.metadata.shard_offsets[0]: shard.tensor for shard in tensor.local_shards()}

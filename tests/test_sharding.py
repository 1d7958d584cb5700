"""Row-wise sharding with torchrec DMP, run for real: ``torchrun`` with 2 CPU ranks over gloo."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recsys_embed.artifacts import load_artifact
from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.jobs.sharding import ShardedTables, ShardingConfig, ebc_configs, slot_features
from recsys_embed.tables import MultiplexedConfig, MultiplexedTables, PerFeatureTables, PrunedTables, kjt_from_ids

REPO = Path(__file__).resolve().parents[1]
# torchrun by this interpreter (the console script's shebang may name another environment's python)
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
WORLD = 2


SCHEMA = Schema([
    FeatureSpec("a", embedding_dim=8),
    FeatureSpec("b", embedding_dim=8),
    FeatureSpec("hist_a", kind="sequence", table="a", max_len=3, embedding_dim=8),
])


def test_multiplexed_layout_is_one_torchrec_table_read_by_every_slot() -> None:
    tables = MultiplexedTables(SCHEMA, MultiplexedConfig(rows=101, chunk_dim=4, probes=1, table_probes={"a": 2}))
    _, names, positions = slot_features(tables)
    assert names == ["a#0", "a#1", "b#0"] + [f"hist_a@{p}#{j}" for p in range(3) for j in range(2)]
    assert positions == {"hist_a": [3, 5, 7]}  # probe 0 of each position
    (config,) = ebc_configs(tables)
    assert (config.name, config.num_embeddings, config.embedding_dim, config.feature_names) == ("shared", 101, 4, names)


def test_per_feature_layout_is_one_torchrec_table_per_table_group() -> None:
    configs = ebc_configs(PerFeatureTables(SCHEMA, {"a": 30, "b": 7}))
    assert [(c.name, c.num_embeddings, c.embedding_dim) for c in configs] == [("a", 30, 8), ("b", 7, 8)]
    assert [c.feature_names for c in configs] == [["a#0", "hist_a@0#0", "hist_a@1#0", "hist_a@2#0"], ["b#0"]]


def test_refuses_what_it_cannot_shard() -> None:
    with pytest.raises(ValueError, match="layout 'pruned' is not sharded"):
        slot_features(PrunedTables(SCHEMA, {"a": 30, "b": 7}))
    with pytest.raises(ValueError, match="sharding_type must be one of"):
        ShardingConfig("column_wise")
    with pytest.raises(ValueError, match="no process group"):
        ShardedTables(PerFeatureTables(SCHEMA, {"a": 30, "b": 7}))
    no_storage = PerFeatureTables(SCHEMA, {"a": 30, "b": 7}, storage=False)
    with pytest.raises(ValueError, match="storage=False and holds no weights; pass state="):
        ShardedTables(no_storage)
    tensors, _ = PerFeatureTables(SCHEMA, {"a": 31, "b": 7}).export_state()
    with pytest.raises(ValueError, match=r"ShardedTables state: tensor 'a.weight' has shape \(31, 8\), the layout expects \(30, 8\)"):
        ShardedTables(no_storage, state=tensors)
    with pytest.raises(ValueError, match=r"missing \['b.momentum1'\]"):
        ShardedTables(no_storage, state={k: v for k, v in tensors.items() if k != "b.momentum1"})


@pytest.mark.parametrize("make", [
    lambda storage: MultiplexedTables(SCHEMA, MultiplexedConfig(rows=101, chunk_dim=4, probes=1, table_probes={"a": 2}), storage=storage),
    lambda storage: PerFeatureTables(SCHEMA, {"a": 30, "b": 7}, storage=storage),
], ids=["multiplexed", "per_feature"])
def test_a_layout_without_storage_has_the_input_side_only(make) -> None:
    full = make(True)
    generator_state = torch.get_rng_state()
    inputs = make(False)
    assert torch.equal(torch.get_rng_state(), generator_state)  # nothing was drawn for weights it does not have
    assert inputs.memory_bytes() == 0 and full.memory_bytes() > inputs.num_parameters() * 4
    assert inputs.num_parameters() == full.num_parameters() and inputs.shapes() == full.shapes()
    assert {k: v.shape for k, v in inputs.kernel.state_views().items()} == {k: v.shape for k, v in full.kernel.state_views().items()}
    kjt = kjt_from_ids({"a": torch.tensor([3, 29]), "b": torch.tensor([6, 0]), "hist_a": torch.tensor([[1, 2, -1], [4, -1, -1]])}, padding_id=-1)
    got, want = inputs.kernel_inputs(kjt), full.kernel_inputs(kjt)
    assert torch.equal(got.indices, want.indices) and torch.equal(got.offsets, want.offsets)
    assert got.masks.keys() == want.masks.keys() and all(torch.equal(got.masks[k], want.masks[k]) for k in got.masks)
    for call in (lambda: inputs(kjt), inputs.export_state):
        with pytest.raises(RuntimeError, match="built on the meta device .* holds no weights"):
            call()
    twin = type(full).from_config(SCHEMA, full.state_config(), storage=False)
    assert not twin.kernel.has_storage and twin.state_config() == full.state_config()


def torchrun(script: Path, *args: str) -> subprocess.CompletedProcess:
    # --standalone: a local rendezvous on a port the OS picks; gloo talks over the loopback (127.0.0.1)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    command = [*TORCHRUN, "--standalone", f"--nproc_per_node={WORLD}", str(script), *args]
    run = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env, cwd=REPO)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    return run


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("sharding")
    torchrun(REPO / "tests" / "sharding_script.py", str(out))
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]


ROW_WISE = ["multiplexed", "multiplexed_state", "per_feature", "per_feature_state"]
METADATA_BYTES = 4096  # what the sharded module may hold besides its rows (measured: ~100 B)


def row_bytes(result: dict, table: str) -> int:
    """Bytes of one row of a table with rowwise Adagrad: the weight (dim float32) and one momentum."""
    return (result["table_dims"][table] + 1) * 4


@pytest.mark.parametrize("case", ROW_WISE)
def test_each_rank_holds_only_its_row_block(ranks: list[dict], case: str) -> None:
    tables = ranks[0][case]["table_rows"]
    dims = ranks[0][case]["table_dims"]
    for table, rows in tables.items():
        block = math.ceil(rows / WORLD)  # torchrec's even row-wise split
        spans = [tuple(rank[case]["local_rows"][table]) for rank in ranks]
        assert spans == [(r * block, min(rows, (r + 1) * block)) for r in range(WORLD)]
    for rank in ranks:
        held = sum((end - start) * dims[t] for t, (start, end) in rank[case]["local_rows"].items())
        assert rank[case]["local_parameters"] == held
        assert held < sum(rows * dims[t] for t, rows in tables.items())


@pytest.mark.parametrize("case", [*ROW_WISE, "per_feature_table_wise"])
def test_the_sharded_module_holds_its_rows_and_little_else(ranks: list[dict], case: str) -> None:
    # every tensor the module holds (parameters, buffers, fused optimizer state, its input-side
    # layout), by distinct storage: its rows' weights and optimizer state, plus a little metadata
    for rank in ranks:
        rows = {t: end - start for t, (start, end) in rank[case]["local_rows"].items()}
        expected = sum(n * row_bytes(rank[case], t) for t, n in rows.items())
        assert rank[case]["memory_bytes"] == expected
        assert expected <= rank[case]["held_bytes"] <= expected + METADATA_BYTES


@pytest.mark.parametrize("case", ROW_WISE)
def test_row_wise_shards_split_the_table_memory_over_the_ranks(ranks: list[dict], case: str) -> None:
    full = sum(rows * row_bytes(ranks[0][case], t) for t, rows in ranks[0][case]["table_rows"].items())
    assert full > 50 * METADATA_BYTES  # so that a full copy could not hide in the metadata
    for rank in ranks:
        assert rank[case]["held_bytes"] / (full / WORLD) == pytest.approx(1, abs=0.01)


def test_table_wise_places_whole_tables_on_one_rank_each(ranks: list[dict]) -> None:
    case = "per_feature_table_wise"
    rows = ranks[0][case]["table_rows"]
    assert [rank[case]["local_rows"] for rank in ranks] == [{"a": [0, rows["a"]]}, {"b": [0, rows["b"]]}]


@pytest.mark.parametrize("case", [*ROW_WISE, "per_feature_table_wise"])
def test_sharded_forward_equals_unsharded(ranks: list[dict], case: str) -> None:
    for rank in ranks:
        assert rank[case]["forward_max_diff"] <= 1e-6
        assert rank[case]["masks_equal"]


@pytest.mark.parametrize("case", [*ROW_WISE, "per_feature_table_wise"])
def test_gathered_training_state_equals_unsharded_fused_run(ranks: list[dict], case: str) -> None:
    assert [rank[case]["gathered"] for rank in ranks] == [True] + [False] * (WORLD - 1)  # on rank 0 only
    result = ranks[0][case]
    diffs = result["trained_max_diff"]
    assert {key.split(".")[-1] for key in diffs} == {"weight", "momentum1", "step"}  # rowwise Adagrad's state
    assert max(diffs.values()) <= 1e-5, diffs
    assert min(result["weights_moved"].values()) > 0.05  # the steps did train every table
    assert result["lr_equal"]


def test_example_shards_row_wise_trains_and_saves_the_gathered_table(tmp_path: Path) -> None:
    run = torchrun(REPO / "examples" / "shard_tables.py", str(tmp_path / "artifact"))
    spans = sorted((int(a), int(b)) for a, b in re.findall(r"rank \d holds rows \[(\d+), (\d+)\)", run.stdout))
    total = int(re.search(r"of (\d+) rows", run.stdout).group(1))
    assert len(spans) == WORLD and spans[0][0] == 0 and spans[0][1] == spans[1][0] and spans[1][1] == total
    for held, full in re.findall(r"([\d,]+) of ([\d,]+) bytes", run.stdout):
        assert int(held.replace(",", "")) / int(full.replace(",", "")) == pytest.approx(1 / WORLD, abs=0.01)
    first, last = (float(x) for x in re.search(r"loss ([\d.]+) -> ([\d.]+)", run.stdout).groups())
    assert last < first - 0.1, run.stdout
    tensors, manifest = load_artifact(tmp_path / "artifact")
    tables = MultiplexedTables.from_state(Schema.from_dict(manifest["schema"]), tensors, manifest["layout"])
    assert tables.num_parameters() == total * tables.config.chunk_dim
    assert torch.equal(tables.table_weights()["shared"], tensors["shared.weight"])

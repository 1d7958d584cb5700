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
from recsys_embed.sharding import ShardedTables, ShardingConfig, ebc_configs, slot_features
from recsys_embed.tables import MultiplexedConfig, MultiplexedTables, PerFeatureTables, PrunedTables

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")
WORLD = 2


SCHEMA = Schema([
    FeatureSpec("a", embedding_dim=8),
    FeatureSpec("b", embedding_dim=8),
    FeatureSpec("hist_a", kind="sequence", table="a", max_len=3, embedding_dim=8),
])


def test_multiplexed_layout_is_one_torchrec_table_read_by_every_slot() -> None:
    tables = MultiplexedTables(SCHEMA, MultiplexedConfig(rows=101, chunk_dim=4, table_probes={"a": 2}))
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
    with pytest.raises(ValueError, match="expected MultiplexedTables or PerFeatureTables, got PrunedTables"):
        slot_features(PrunedTables(SCHEMA, {"a": 30, "b": 7}))
    with pytest.raises(ValueError, match="sharding_type must be one of"):
        ShardingConfig("column_wise")
    with pytest.raises(ValueError, match="no process group"):
        ShardedTables(PerFeatureTables(SCHEMA, {"a": 30, "b": 7}))


def torchrun(script: Path, *args: str) -> subprocess.CompletedProcess:
    # --standalone: a local rendezvous on a port the OS picks; gloo talks over the loopback (127.0.0.1)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    command = [str(TORCHRUN), "--standalone", f"--nproc_per_node={WORLD}", str(script), *args]
    run = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env, cwd=REPO)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    return run


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("sharding")
    torchrun(REPO / "tests" / "sharding_script.py", str(out))
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]


@pytest.mark.parametrize("case", ["multiplexed", "per_feature"])
def test_each_rank_holds_only_its_row_block(ranks: list[dict], case: str) -> None:
    tables = ranks[0][case]["table_rows"]
    dims = ranks[0][case]["table_dims"]
    for table, rows in tables.items():
        block = math.ceil(rows / WORLD)  # torchrec's even row-wise split
        spans = [tuple(rank[case]["local_rows"][table]) for rank in ranks]
        assert spans == [(r * block, min(rows, (r + 1) * block)) for r in range(WORLD)]
    for r, rank in enumerate(ranks):
        held = sum((end - start) * dims[t] for t, (start, end) in rank[case]["local_rows"].items())
        assert rank[case]["local_parameters"] == rank[case]["parameters"] == held
        assert held < sum(rows * dims[t] for t, rows in tables.items())


def test_table_wise_places_whole_tables_on_one_rank_each(ranks: list[dict]) -> None:
    case = "per_feature_table_wise"
    rows = ranks[0][case]["table_rows"]
    assert [rank[case]["local_rows"] for rank in ranks] == [{"a": [0, rows["a"]]}, {"b": [0, rows["b"]]}]


@pytest.mark.parametrize("case", ["multiplexed", "per_feature", "per_feature_table_wise"])
def test_sharded_forward_equals_unsharded(ranks: list[dict], case: str) -> None:
    for rank in ranks:
        assert rank[case]["forward_max_diff"] <= 1e-6
        assert rank[case]["masks_equal"]


@pytest.mark.parametrize("case", ["multiplexed", "per_feature", "per_feature_table_wise"])
def test_gathered_training_state_equals_unsharded_fused_run(ranks: list[dict], case: str) -> None:
    for rank in ranks:
        diffs = rank[case]["trained_max_diff"]
        assert {key.split(".")[-1] for key in diffs} == {"weight", "momentum1", "step"}  # rowwise Adagrad's state
        assert max(diffs.values()) <= 1e-5, diffs
        assert min(rank[case]["weights_moved"].values()) > 0.05  # the steps did train every table


def test_example_shards_row_wise_trains_and_saves_the_gathered_table(tmp_path: Path) -> None:
    run = torchrun(REPO / "examples" / "shard_tables.py", str(tmp_path / "artifact"))
    spans = sorted((int(a), int(b)) for a, b in re.findall(r"rank \d holds rows \[(\d+), (\d+)\)", run.stdout))
    total = int(re.search(r"of (\d+) rows", run.stdout).group(1))
    assert len(spans) == WORLD and spans[0][0] == 0 and spans[0][1] == spans[1][0] and spans[1][1] == total
    first, last = (float(x) for x in re.search(r"loss ([\d.]+) -> ([\d.]+)", run.stdout).groups())
    assert last < first - 0.1, run.stdout
    tensors, manifest = load_artifact(tmp_path / "artifact")
    tables = MultiplexedTables.from_state(Schema.from_dict(manifest["schema"]), tensors, manifest["layout"])
    assert tables.num_parameters() == total * tables.config.chunk_dim
    assert torch.equal(tables.table_weights()["shared"], tensors["shared.weight"])

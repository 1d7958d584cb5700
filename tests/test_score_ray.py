"""The Ray Data engine on a real local Ray instance (a CLI subprocess with a timeout): outputs
equal the local engine's row for row, every node bound to 127.0.0.1, resume by the same
manifest, and the CPU setting that would hang Ray Data refused before anything starts."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from scoring_data import ctr_artifact, ctr_inputs, seq_artifact

from recsys_embed.jobs.recommend import RecommendJob
from recsys_embed.jobs.score import ScoreJob
from recsys_embed.jobs.score_files import MANIFEST, run_local

CLI = [sys.executable, "-m", "recsys_embed.jobs.cli"]
RAY_TIMEOUT = 600  # a hung Ray Data job fails the test instead of the suite


def ray_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args, "--engine", "ray", "--ray-cpus", "2"], capture_output=True, text=True, timeout=RAY_TIMEOUT)


def nodes(stdout: str) -> list[str]:
    match = re.search(r"on Ray nodes (.+)$", stdout.strip().splitlines()[-1])
    assert match, stdout[-2000:]
    return match.group(1).split(", ")


def test_ray_score_equals_the_local_engine_and_resumes_by_the_same_manifest(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    data = ctr_inputs(tmp_path / "data", files=3, rows_per_file=1500, row_group=400)
    pq.write_table(pq.read_table(data / "part-0.parquet").slice(0, 0), data / "part-3.parquet")  # zero rows
    model = ctr_artifact(tmp_path, data, "din")
    local = tmp_path / "local"
    assert run_local(ScoreJob.from_artifact(model, keep=["user_id", "item_id"]), data, local, batch_rows=300, progress=False).count("written") == 4

    out = tmp_path / "ray"
    shutil.copytree(local, out)  # part-1 done already; the others to do
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["files"] = {"part-1.parquet": manifest["files"]["part-1.parquet"]}
    (out / MANIFEST).write_text(json.dumps(manifest))
    for name in ("part-0.parquet", "part-2.parquet", "part-3.parquet"):
        (out / name).unlink()
    result = ray_cli("score", "--model", str(model), "--input", str(data), "--output", str(out), "--resume",
                     "--keep", "user_id", "item_id", "--batch-size", "300")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "-> 3,000 output rows: 3 files written, 1 skipped (already done), 0 failed" in result.stdout
    assert nodes(result.stdout) == ["127.0.0.1"]
    def entries(folder: Path) -> dict:  # all but the output's size (Parquet pages of other sizes)
        files = json.loads((folder / MANIFEST).read_text())["files"]
        return {name: {k: v for k, v in entry.items() if k != "output_size"} for name, entry in files.items()}

    assert entries(out) == entries(local)
    for i in range(4):
        ray_rows, local_rows = pq.read_table(out / f"part-{i}.parquet"), pq.read_table(local / f"part-{i}.parquet")
        assert ray_rows.schema == local_rows.schema and ray_rows.num_rows == local_rows.num_rows
        assert ray_rows.select(["user_id", "item_id"]).equals(local_rows.select(["user_id", "item_id"]))  # same rows, same order
        # float32 rounding only: a Ray batch may join two files, which changes its padded history length
        np.testing.assert_allclose(ray_rows["score"].to_numpy(), local_rows["score"].to_numpy(), rtol=0, atol=1e-6)


def test_ray_recommend_equals_the_local_engine(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    events, model = seq_artifact(tmp_path)
    local = run_local(RecommendJob.from_artifact(model, k=5, exclude_history=True), events, tmp_path / "local", progress=False)
    assert local.count("written") == 2
    result = ray_cli("recommend", "--model", str(model), "--input", str(events), "--output", str(tmp_path / "ray"), "--k", "5",
                     "--exclude-history")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "-> 300 output rows: 2 files written" in result.stdout and nodes(result.stdout) == ["127.0.0.1"]
    for name in ("part-0.parquet", "part-1.parquet"):
        assert pq.read_table(tmp_path / "ray" / name).equals(pq.read_table(tmp_path / "local" / name))


def test_actors_that_would_take_every_cpu_are_refused_before_ray_starts(
    tmp_path: Path, cli_main: Callable[..., subprocess.CompletedProcess]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    result = cli_main("score", "--model", str(tmp_path / "no-model-needed-yet"), "--input", str(data), "--output", str(tmp_path / "out"),
                      "--actors", "2", "--engine", "ray", "--ray-cpus", "2")  # fmt: skip
    assert result.returncode == 2
    assert "2 actors x 1 CPUs = 2 CPUs leave none of the 2 for reading (Ray Data would wait forever); keep actors x actor_cpus <= 1" in result.stderr

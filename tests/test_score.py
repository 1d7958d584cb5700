"""Batch scoring on the local engine: Scorer, the score CLI as a real subprocess, manifest and
resume (SIGKILL mid-run), and one test per kind of bad input (the CLI's ``main`` in process)."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from scoring_data import ctr_artifact, ctr_inputs

from recsys_embed.jobs.model_io import load_model
from recsys_embed.jobs.score import Scorer, ScoreJob
from recsys_embed.jobs.score_files import MANIFEST, SchemaMismatch, run_local

CLI = [sys.executable, "-m", "recsys_embed.jobs.cli"]
CliMain = Callable[..., subprocess.CompletedProcess]  # the cli_main fixture (conftest.py)


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """``(inputs, DIN artifact, AutoInt artifact)``."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("score")
    inputs = ctr_inputs(root)
    return inputs, ctr_artifact(root, inputs, "din"), ctr_artifact(root, inputs, "autoint")


def fitted(scorer: Scorer) -> tuple[dict, dict]:
    """The scorer's fitted pipeline state (config, arrays as lists), to check nothing refits."""
    arrays, config = scorer.encoder.state.export_state()
    return config, {name: array.to_pylist() for name, array in arrays.items()}


def test_score_table_is_the_model_on_the_artifacts_pipeline_without_refitting(setup: tuple[Path, Path, Path]) -> None:
    inputs, din, _ = setup
    scorer = Scorer.from_artifact(din)
    state_before = fitted(scorer)
    table = pq.read_table(inputs / "part-0.parquet")
    scores = scorer.score_table(table)
    assert scores.type == pa.float32() and len(scores) == table.num_rows
    loaded = load_model(din)
    with torch.no_grad():
        expected = torch.cat([torch.sigmoid(loaded.model(b)) for b in loaded.pipeline.batches(inputs / "part-0.parquet", batch_size=512)])
    np.testing.assert_allclose(scores.to_numpy(), expected.numpy(), rtol=0, atol=1e-6)
    batches = table.to_batches(max_chunksize=300)
    pieces = list(scorer.score_batches(batches))
    assert [len(p) for p in pieces] == [b.num_rows for b in batches] and len(pieces) > 1
    np.testing.assert_allclose(pa.concat_arrays(pieces).to_numpy(), scores.to_numpy(), rtol=0, atol=1e-6)
    assert not scorer.model.training and fitted(scorer) == state_before
    assert len(scorer.score_table(table.slice(0, 0))) == 0


def test_unseen_categories_score_as_oov_and_nulls_follow_the_schema(setup: tuple[Path, Path, Path]) -> None:
    inputs, din, _ = setup
    scorer = Scorer.from_artifact(din)
    row = pq.read_table(inputs / "part-0.parquet").slice(0, 1)
    def with_value(column: str, value: object) -> pa.Table:
        return row.set_column(row.schema.get_field_index(column), column, pa.array([value], row.schema.field(column).type))

    unseen = [scorer.score_table(with_value("item_id", v))[0].as_py() for v in (10**12, 10**12 + 7)]
    oov_free = scorer.score_table(row)[0].as_py()
    assert unseen[0] == unseen[1] != oov_free  # both unknown ids read the one OOV row
    fill = next(f for f in scorer.schema.features if f.name == "price").fill_value
    assert scorer.score_table(with_value("price", None))[0].as_py() == scorer.score_table(with_value("price", fill))[0].as_py()


def test_score_cli_writes_one_output_per_input_with_a_manifest(setup: tuple[Path, Path, Path], tmp_path: Path) -> None:
    inputs, din, _ = setup
    out = tmp_path / "out"
    result = cli("score", "--model", str(din), "--input", str(inputs), "--output", str(out), "--keep", "user_id", "item_id",
                 "--batch-size", "700")
    assert result.returncode == 0, result.stderr[-3000:]
    line = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(rf"6,000 rows in [\d.]+ s \([\d,]+ rows/s\) -> 6,000 output rows: 3 files written, 0 skipped \(already done\), "
                        rf"0 failed -> {re.escape(str(out))}/", line), line
    assert "rows: 100%" in result.stderr  # the tqdm bar
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "part-0.parquet", "part-1.parquet", "part-2.parquet"]
    scorer = Scorer.from_artifact(din)
    manifest = json.loads((out / MANIFEST).read_text())["files"]
    for i in range(3):
        source = pq.read_table(inputs / f"part-{i}.parquet")
        written = pq.read_table(out / f"part-{i}.parquet")
        assert written.column_names == ["user_id", "item_id", "score"]
        assert written["user_id"].equals(source["user_id"]) and written["item_id"].equals(source["item_id"])
        np.testing.assert_allclose(written["score"].to_numpy(), scorer.score_table(source).to_numpy(), rtol=0, atol=1e-6)
        entry = manifest[f"part-{i}.parquet"]
        stat = (inputs / f"part-{i}.parquet").stat()
        assert (entry["input"], entry["size"], entry["mtime_ns"], entry["rows"]) == (str(inputs / f"part-{i}.parquet"), stat.st_size, stat.st_mtime_ns, 2000)
        assert entry["model"] == scorer.fingerprint and len(entry["model"]) == 64


def test_resume_skips_done_inputs_and_redoes_changed_inputs_or_models(setup: tuple[Path, Path, Path], tmp_path: Path) -> None:
    inputs, din, autoint = setup
    data = tmp_path / "in"
    shutil.copytree(inputs, data)
    out = tmp_path / "out"
    job = ScoreJob.from_artifact(din, keep=["user_id"])
    assert run_local(job, data, out, progress=False).count("written") == 3
    with pytest.raises(ValueError, match=r"output directory .* is not empty; pass --resume"):
        run_local(job, data, out, progress=False)
    again = run_local(job, data, out, resume=True, progress=False)
    assert (again.count("skipped"), again.count("written")) == (3, 0)
    assert "0 files written, 3 skipped (already done), 0 failed" in again.summary()
    os.utime(data / "part-1.parquet", ns=(time.time_ns(), time.time_ns()))  # a changed input is redone
    changed = run_local(job, data, out, resume=True, progress=False)
    assert [r.name for r in changed.files if r.status == "written"] == ["part-1.parquet"]
    (out / "part-2.parquet").unlink()  # a lost output is redone
    assert [r.name for r in run_local(job, data, out, resume=True, progress=False).files if r.status == "written"] == ["part-2.parquet"]
    other = run_local(ScoreJob.from_artifact(autoint, keep=["user_id"]), data, out, resume=True, progress=False)
    assert other.count("written") == 3  # another model: everything again
    kept = run_local(ScoreJob.from_artifact(autoint, keep=["item_id"]), data, out, resume=True, progress=False)
    assert kept.count("written") == 3  # other --keep columns: other outputs


def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_run(setup: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, din, _ = setup
    data = ctr_inputs(tmp_path / "data", files=8, rows_per_file=2000, row_group=250)
    args = ["score", "--model", str(din), "--input", str(data), "--keep", "user_id", "timestamp", "--batch-size", "250"]
    # the uninterrupted run and the one to kill are independent: they run at the same time
    full = subprocess.Popen([*CLI, *args, "--output", str(tmp_path / "full")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    out = tmp_path / "killed"
    job = subprocess.Popen([*CLI, *args, "--output", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    done: dict = {}
    while time.time() < deadline and job.poll() is None:
        if (out / MANIFEST).exists():
            done = json.loads((out / MANIFEST).read_text())["files"]
            if done:
                break
        time.sleep(0.01)
    assert job.poll() is None, "the job ended before it could be killed; give it more work"
    job.send_signal(signal.SIGKILL)
    job.wait(timeout=60)
    assert 1 <= len(done) < 8
    finished = {p.name for p in out.glob("part-*.parquet")}
    assert finished == set(json.loads((out / MANIFEST).read_text())["files"])  # no output looks complete that is not
    _, full_stderr = full.communicate(timeout=600)
    assert full.returncode == 0, full_stderr[-3000:]

    resumed = cli(*args, "--output", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    skipped = int(re.search(r"(\d+) skipped", resumed.stdout).group(1))
    assert skipped == len(finished) and f"{8 - skipped} files written" in resumed.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / "full").iterdir())  # no temp files left
    for i in range(8):
        assert pq.read_table(out / f"part-{i}.parquet").equals(pq.read_table(tmp_path / "full" / f"part-{i}.parquet"))


def test_missing_and_mistyped_columns_are_named_in_one_error_before_any_work(setup: tuple[Path, Path, Path], tmp_path: Path, cli_main: CliMain) -> None:
    inputs, din, _ = setup
    table = pq.read_table(inputs / "part-0.parquet").drop_columns(["price", "device"])
    table = table.set_column(table.schema.get_field_index("user_age"), "user_age", pa.array([0.5] * table.num_rows))
    table = table.set_column(table.schema.get_field_index("item_id"), "item_id", pa.array([[1]] * table.num_rows))
    data = tmp_path / "in"
    shutil.copytree(inputs, data)
    pq.write_table(table, data / "part-3.parquet")
    result = cli_main("score", "--model", str(din), "--input", str(data), "--output", str(tmp_path / "out"), "--keep", "request_id")
    assert result.returncode == 2
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("recsys-embed: error: the input does not fit the model's schema: ")
    for name in ("'device'", "'price'", "'user_age'", "'item_id'", "'request_id'", "part-3.parquet", "part-0.parquet (and 2 more files)"):
        assert name in error, name
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    with pytest.raises(SchemaMismatch, match=r"missing column\(s\) \['device', 'price'\].*'user_age'"):
        Scorer.from_artifact(din).score_table(table)


def test_a_truncated_file_is_reported_by_name_and_the_others_are_written(setup: tuple[Path, Path, Path], tmp_path: Path, cli_main: CliMain) -> None:
    inputs, din, _ = setup
    data = tmp_path / "in"
    shutil.copytree(inputs, data)
    broken = data / "part-1.parquet"
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    out = tmp_path / "out"
    result = cli_main("score", "--model", str(din), "--input", str(data), "--output", str(out))
    assert result.returncode == 1
    assert "2 files written, 0 skipped (already done), 1 failed" in result.stdout
    assert f"recsys-embed: error: {broken}: not a readable Parquet file (truncated or corrupt?)" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "part-0.parquet", "part-2.parquet"]
    # a file whose footer reads but whose data does not: the same, found while reading
    pages = pq.read_table(inputs / "part-1.parquet")
    pq.write_table(pages, broken, row_group_size=500, compression="zstd")
    raw = bytearray(broken.read_bytes())
    meta = pq.ParquetFile(broken).metadata
    start = meta.row_group(2).column(0).data_page_offset
    raw[start : start + 2000] = os.urandom(2000)
    broken.write_bytes(bytes(raw))
    again = run_local(ScoreJob.from_artifact(din), data, tmp_path / "out2", progress=False)
    assert [r.status for r in again.files] == ["written", "failed", "written"]
    assert again.failed[0].error.startswith(str(broken)) and not (tmp_path / "out2" / "part-1.parquet").exists()
    assert not list((tmp_path / "out2").glob(".*"))


class _Payload:
    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {os.environ['SCORING_MARKER']}",))


def test_a_corrupt_or_tampered_artifact_is_refused_without_unpickling(setup: tuple[Path, Path, Path], tmp_path: Path, cli_main: CliMain) -> None:
    inputs, din, _ = setup
    cases = {}
    truncated = shutil.copytree(din, tmp_path / "truncated")
    (truncated / "tensors.safetensors").write_bytes((din / "tensors.safetensors").read_bytes()[:1000])
    cases["truncated"] = (truncated, "tensors.safetensors is not a valid safetensors file")
    reshaped = shutil.copytree(din, tmp_path / "reshaped")
    manifest = json.loads((din / "manifest.json").read_text())
    name = next(iter(manifest["tensors"]))
    manifest["tensors"][name]["shape"][0] += 1
    (reshaped / "manifest.json").write_text(json.dumps(manifest))
    cases["reshaped"] = (reshaped, f"tensor {name!r} is")
    pickled = shutil.copytree(din, tmp_path / "pickled")
    marker = tmp_path / "unpickled"
    os.environ["SCORING_MARKER"] = str(marker)
    (pickled / "tensors.safetensors").write_bytes(pickle.dumps(_Payload()))
    cases["pickled"] = (pickled, "not a valid safetensors file")
    for case, (artifact, message) in cases.items():
        result = cli_main("score", "--model", str(artifact), "--input", str(inputs), "--output", str(tmp_path / f"out-{case}"))
        assert result.returncode == 2, case
        assert result.stderr.strip().splitlines()[-1].startswith(f"recsys-embed: error: artifact {artifact}: "), result.stderr[-500:]
        assert message in result.stderr, (case, result.stderr[-500:])
    assert not marker.exists()


def test_empty_input_no_files_is_an_error_and_zero_row_files_give_empty_outputs(setup: tuple[Path, Path, Path], tmp_path: Path, cli_main: CliMain) -> None:
    inputs, din, _ = setup
    (tmp_path / "none").mkdir()
    result = cli_main("score", "--model", str(din), "--input", str(tmp_path / "none"), "--output", str(tmp_path / "out"))
    assert result.returncode == 2 and "holds no Parquet/CSV/TSV file" in result.stderr
    (tmp_path / "zero").mkdir()
    pq.write_table(pq.read_table(inputs / "part-0.parquet").slice(0, 0), tmp_path / "zero" / "part-0.parquet")
    report = run_local(ScoreJob.from_artifact(din, keep=["user_id"]), tmp_path / "zero", tmp_path / "out", progress=False)
    assert report.count("written") == 1 and "0 rows" in report.summary()
    empty = pq.read_table(tmp_path / "out" / "part-0.parquet")
    assert empty.num_rows == 0 and empty.schema == pa.schema([("user_id", pa.int64()), ("score", pa.float32())])

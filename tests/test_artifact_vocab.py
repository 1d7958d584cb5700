"""Vocabularies in artifacts: arrays on disk (integers in safetensors, strings in Arrow IPC),
format 1 artifacts (inline JSON lists) still load, tampering is caught, nothing unpickles."""

from __future__ import annotations

import importlib.util
import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file, save_file

from recsys_embed.artifacts import ARRAYS_FILE, MANIFEST_FILE, TENSORS_FILE, load_arrays, load_artifact, save_artifact
from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.jobs.builders import build_model, build_tables
from recsys_embed.jobs.model_io import load_model, save_model
from recsys_embed.jobs.ranking_model import RankingModel
from recsys_embed.pipelines import FittedState, Pipeline
from recsys_embed.tables import TableOptimizer

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "artifact_load.py"
FORMAT_1 = Path(__file__).resolve().parent / "data" / "format_1"
SCHEMA = Schema([
    FeatureSpec("item", embedding_dim=4),
    FeatureSpec("hist", kind="sequence", table="item", max_len=3, embedding_dim=4),
    FeatureSpec("user", embedding_dim=4),
], label="label")  # fmt: skip
LAYOUT, MODEL = {"name": "per_feature"}, {"name": "mlp", "hidden": [8]}
USERS = ["é", "日本語のユーザー名", "", "a", None, "user-long-name-000001", "🙂", "a", "a\x00", "12345678"]


def benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("benchmark_artifact_load", BENCHMARK)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # type: ignore[union-attr]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def write(path: Path, items: list, hists: list, users: list) -> Path:
    pq.write_table(pa.table({
        "item": pa.array(items, pa.int64()), "hist": pa.array(hists, pa.list_(pa.int64())),
        "user": pa.array(users, pa.string()), "label": pa.array([i % 2 for i in range(len(items))], pa.int64()),
    }), path)  # fmt: skip
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("vocab")
    train = write(root / "train.parquet", [5, 2**62, -3, 5, None, 7, 7, 7, -(2**63), 11],
                  [[5, 7], None, [-3, None, 5], [], [2**62], [7], [13, 5], None, [5], [11]], USERS)
    score = write(root / "score.parquet", [5, 999, None, 2**62, -(2**63), 13],
                  [[999, 5, None], None, [], [13], [7, 7, 7, 7], [-3]], ["日本語のユーザー名", "unseen", None, "🙂", "", "日本語"])
    return train, score


def trained(train: Path) -> tuple[Pipeline, RankingModel]:
    torch.manual_seed(0)
    pipeline = Pipeline(SCHEMA).fit(train)
    tables = build_tables(LAYOUT, SCHEMA, pipeline.num_embeddings, TableOptimizer("rowwise_adagrad", lr=0.1))
    return pipeline, RankingModel(tables, build_model(MODEL, tables.shapes(0), SCHEMA))


def encoded(pipeline: Pipeline, source: Path) -> pa.Table:
    return pa.Table.from_batches(list(pipeline.transform(source)))


def scores(model: RankingModel, pipeline: Pipeline, source: Path) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return torch.cat([model(batch) for batch in pipeline.batches(source, batch_size=4)])


def test_int_and_string_vocabularies_round_trip_as_arrays(data: tuple[Path, Path], tmp_path: Path) -> None:
    train, score = data
    pipeline, model = trained(train)
    path = save_model(tmp_path / "model", pipeline, model, LAYOUT, MODEL)
    assert sorted(p.name for p in path.iterdir()) == [ARRAYS_FILE, MANIFEST_FILE, TENSORS_FILE]
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    assert manifest["format_version"] == 3 and manifest["pipeline"]["state"]["format_version"] == 2
    assert all("vocabulary" not in table for table in manifest["pipeline"]["state"]["tables"].values())
    assert manifest["arrays"] == {
        "vocabulary.item": {"type": "int64", "length": 7, "file": TENSORS_FILE},
        "vocabulary.user": {"type": "large_string", "length": 7, "file": ARRAYS_FILE, "batch": 0},
    }
    assert load_file(str(path / TENSORS_FILE))["vocabulary.item"].tolist() == pipeline.state.tables["item"].vocabulary.to_pylist()
    assert pa.ipc.open_file(path / ARRAYS_FILE).get_batch(0).column(0).equals(pipeline.state.tables["user"].vocabulary)

    loaded = load_model(path)
    assert loaded.pipeline.state == pipeline.state and loaded.pipeline.schema == SCHEMA
    assert set(loaded.pipeline.state.tables["user"].vocabulary.to_pylist()) == {u for u in USERS if u}  # "" is missing
    ids = encoded(loaded.pipeline, score)
    assert ids.equals(encoded(pipeline, score))
    assert ids.column("item").to_pylist()[1:3] == [1, 0]  # OOV, null
    assert ids.column("user").to_pylist()[1:3] == [1, 0] and ids.column("user").to_pylist()[5] == 1  # "日本語" is a prefix, not a value
    assert ids.column("hist").to_pylist()[0][0] == 1 and ids.column("user").to_pylist()[3:5] == [8, 0]  # "🙂" is the last value, "" missing
    assert torch.equal(scores(loaded.model, loaded.pipeline, score), scores(model, pipeline, score))

    alone = Pipeline.load(pipeline.save(tmp_path / "pipeline"))  # a pipeline saved on its own: the same format
    assert alone.state == pipeline.state and encoded(alone, score).equals(ids)
    assert Pipeline.load(path).state == pipeline.state  # the pipeline of a model artifact


def test_format_1_artifacts_and_pipeline_files_still_load_with_identical_ids(data: tuple[Path, Path], tmp_path: Path) -> None:
    """``FORMAT_1`` was written by recsys-embed at commit e3dc132 (format 1: vocabularies inline
    in the JSON manifest): ``save_model`` of :func:`trained` on the ``train`` data (other random
    weights) into ``model/``, and ``Pipeline.save`` into ``pipeline.json``."""
    train, score = data
    pipeline = Pipeline(SCHEMA).fit(train)
    old = shutil.copytree(FORMAT_1 / "model", tmp_path / "old")
    manifest = json.loads((old / MANIFEST_FILE).read_text())
    assert manifest["format_version"] == 1 and "arrays" not in manifest
    assert manifest["pipeline"]["state"]["tables"]["user"]["vocabulary"] == pipeline.state.tables["user"].vocabulary.to_pylist()
    loaded = load_model(old)
    assert loaded.pipeline.state == pipeline.state and encoded(loaded.pipeline, score).equals(encoded(pipeline, score))
    assert torch.isfinite(scores(loaded.model, loaded.pipeline, score)).all()
    assert encoded(Pipeline.load(FORMAT_1 / "pipeline.json"), score).equals(encoded(pipeline, score))

    manifest["format_version"] = 0
    (old / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"old: format_version 0 is not one this recsys-embed reads \(1 to 3\)"):
        load_model(old)
    manifest["format_version"], manifest["pipeline"]["state"]["format_version"] = 1, 3
    (old / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"fitted state: format_version 3 is not supported \(this library reads 1 and 2\)"):
        load_model(old)


def test_the_benchmarks_format_1_writer_writes_what_format_1_wrote(data: tuple[Path, Path], tmp_path: Path) -> None:
    train, score = data
    pipeline, model = trained(train)
    written = benchmark().save_format_1(tmp_path / "old", pipeline, model, LAYOUT, MODEL)
    manifest, reference = (json.loads((p / MANIFEST_FILE).read_text()) for p in (written, FORMAT_1 / "model"))
    assert sorted(p.name for p in written.iterdir()) == [MANIFEST_FILE, TENSORS_FILE]
    assert [manifest[k] for k in ("format_version", "tensors", "pipeline", "layout", "model")] == [
        reference[k] for k in ("format_version", "tensors", "pipeline", "layout", "model")
    ]
    loaded = load_model(written)
    assert loaded.pipeline.state == pipeline.state and encoded(loaded.pipeline, score).equals(encoded(pipeline, score))
    assert torch.equal(scores(loaded.model, loaded.pipeline, score), scores(model, pipeline, score))


@pytest.fixture
def saved(data: tuple[Path, Path], tmp_path: Path) -> Path:
    pipeline, model = trained(data[0])
    return save_model(tmp_path / "model", pipeline, model, LAYOUT, MODEL)


def edit_manifest(path: Path, edit) -> None:  # type: ignore[no-untyped-def]
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    edit(manifest)
    (path / MANIFEST_FILE).write_text(json.dumps(manifest))


def as_format_2(manifest: dict) -> None:
    """A format-2 manifest: no checksums (so a tampered file reaches the checks behind them)."""
    manifest.pop("checksums")
    manifest["format_version"] = 2


def test_missing_vocabulary_files_and_arrays_are_named(saved: Path) -> None:
    (saved / ARRAYS_FILE).rename(saved / "elsewhere")
    with pytest.raises(ValueError, match=r"model: arrays\.arrow is missing; manifest\.json declares string arrays \['vocabulary\.user'\]"):
        load_model(saved)
    (saved / "elsewhere").rename(saved / ARRAYS_FILE)

    tensors = load_file(str(saved / TENSORS_FILE))
    save_file({k: v for k, v in tensors.items() if k != "vocabulary.item"}, str(saved / TENSORS_FILE))
    with pytest.raises(ValueError, match=r"tensors\.safetensors lacks tensors \['vocabulary\.item'\]"):
        load_model(saved)
    save_file(tensors, str(saved / TENSORS_FILE))
    edit_manifest(saved, lambda m: m["arrays"].pop("vocabulary.item"))
    with pytest.raises(ValueError, match=r"undeclared tensors \['vocabulary\.item'\]"):
        load_model(saved)
    save_file({k: v for k, v in tensors.items() if k != "vocabulary.item"}, str(saved / TENSORS_FILE))
    with pytest.raises(ValueError, match=r"model: tensors\.safetensors differs from the checksum recorded at save"):
        load_model(saved)
    edit_manifest(saved, as_format_2)
    with pytest.raises(ValueError, match=r"table 'item': its vocabulary array 'vocabulary\.item' is missing"):
        load_model(saved)


def test_tampered_vocabulary_files_are_named(saved: Path) -> None:
    original = (saved / ARRAYS_FILE).read_bytes()
    (saved / ARRAYS_FILE).write_bytes(original[: len(original) // 2])
    with pytest.raises(ValueError, match=r"model: arrays\.arrow is not a valid Arrow IPC file of string arrays"):
        load_model(saved)
    at = original.index("user-long-name-000001".encode())
    (saved / ARRAYS_FILE).write_bytes(original[:at] + b"\xff" + original[at + 1:])  # not UTF-8 any more
    with pytest.raises(ValueError, match=r"arrays\.arrow is not a valid Arrow IPC file of string arrays: .*UTF8"):
        load_model(saved)
    schema = pa.schema([pa.field("values", pa.large_string())])
    with pa.ipc.new_file(saved / ARRAYS_FILE, schema) as writer:  # a valid file with another vocabulary
        writer.write_batch(pa.record_batch([pa.array(["x", "y"], pa.large_string())], schema=schema))
    with pytest.raises(ValueError, match=r"array 'vocabulary\.user' in arrays\.arrow is \{'type': 'large_string', 'length': 2\} but manifest\.json declares"):
        load_model(saved)
    with pa.ipc.new_file(saved / ARRAYS_FILE, pa.schema([pa.field("values", pa.int64())])) as writer:
        writer.write_batch(pa.record_batch([pa.array([1, 2])], names=["values"]))
    with pytest.raises(ValueError, match=r"arrays\.arrow holds 1 batches of \[DataType\(int64\)\]"):
        load_model(saved)
    (saved / ARRAYS_FILE).write_bytes(original)

    tensors = load_file(str(saved / TENSORS_FILE))
    save_file({**tensors, "vocabulary.item": tensors["vocabulary.item"].to(torch.int32)}, str(saved / TENSORS_FILE))
    with pytest.raises(ValueError, match=r"model: tensors\.safetensors differs from the checksum recorded at save"):
        load_model(saved)
    edit_manifest(saved, as_format_2)  # the checks below guard artifacts without checksums
    with pytest.raises(ValueError, match=r"array 'vocabulary\.item' in tensors\.safetensors is \{'type': 'int32', 'length': 7\} but manifest"):
        load_model(saved)
    save_file({**tensors, "vocabulary.item": tensors["vocabulary.item"][:6].reshape(2, 3)}, str(saved / TENSORS_FILE))
    with pytest.raises(ValueError, match=r"tensors\.safetensors holds no 1-d arrays \['vocabulary\.item'\]"):
        load_model(saved)
    save_file(tensors, str(saved / TENSORS_FILE))
    edit_manifest(saved, lambda m: m["arrays"]["vocabulary.user"].update(batch=3))
    with pytest.raises(ValueError, match=r"manifest\.json has a malformed 'arrays' table"):
        load_model(saved)


def test_save_artifact_refuses_arrays_it_cannot_store(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"array 'f' has type double .*integer arrays without nulls and string arrays"):
        save_artifact(tmp_path / "a", {}, {}, {"f": pa.array([1.5])})
    with pytest.raises(TypeError, match=r"array 'n' has type int64 \(nulls: 1\)"):
        save_artifact(tmp_path / "a", {}, {}, {"n": pa.array([1, None])})
    with pytest.raises(ValueError, match="'w' names both a tensor and an array"):
        save_artifact(tmp_path / "a", {"w": torch.ones(1)}, {}, {"w": pa.array([1])})
    assert not (tmp_path / "a").exists()
    with pytest.raises(ValueError, match=r"table 'item': vocabulary of type string for key_type 'int'"):
        FittedState.from_state({"vocabulary.item": pa.array(["1"])}, {
            "schema_fingerprint": "x", "tables": {"item": {"ids": "vocabulary", "key_type": "int"}}})  # fmt: skip


def test_loading_unpickles_nothing(saved: Path, data: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline, old = Pipeline(SCHEMA).fit(data[0]), FORMAT_1 / "model"

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("loading an artifact unpickled")

    for owner, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load"), (np, "load")):
        monkeypatch.setattr(owner, name, refuse)
    found: list[object] = []
    watching = [True]  # an audit hook stays for the life of the process: it records only during this test
    sys.addaudithook(lambda event, args: found.append(args) if watching[0] and event == "pickle.find_class" else None)
    for path in (saved, old):
        tensors, manifest = load_artifact(path)
        assert load_arrays(path, manifest).keys() == ({"vocabulary.item", "vocabulary.user"} if path == saved else set())
        assert encoded(load_model(path).pipeline, data[1]).equals(encoded(pipeline, data[1]))
    watching[0] = False
    assert found == []


def test_benchmark_runs_and_writes_its_results(tmp_path: Path) -> None:
    out = tmp_path / "artifact_load.json"
    args = ["--ints", "3000", "--strings", "1000", "--rounds", "2", "--out", str(out)]
    run = subprocess.run([sys.executable, str(BENCHMARK), *args], capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert set(result["formats"]) == {"format_1", "format_2"} and result["config"]["ints"] == 3000
    for fmt in result["formats"].values():
        assert len(fmt["runs"]["load_cpu_s"]) == 2 and fmt["load_wall_s"] > 0
    assert set(result["formats"]["format_2"]["files"]) == {ARRAYS_FILE, MANIFEST_FILE, TENSORS_FILE}
    assert result["ratios"]["format_1 / format_2 bytes"] > 1 and "format_1 / format_2 load cpu" in run.stdout
    assert out.with_suffix(".png").stat().st_size > 1000

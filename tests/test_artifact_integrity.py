"""Issue 13, tamper-evident artifacts: checksums of the data files and manifest sections
recorded at save and verified at load (naming what differs), non-finite weights refused, and
artifacts of formats 1 and 2 (no checksums) still loading."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from recsys_embed.artifacts import FORMAT_VERSION, load_artifact, save_artifact
from recsys_embed.errors import IntegrityError
from recsys_embed.jobs.model_io import load_model

from hostile import SCHEMA, cli, impressions, write_config

FORMAT_2 = Path(__file__).parent / "data" / "format_2" / "model"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("integrity")
    pq.write_table(impressions(), root / "data.parquet")
    schema = {**SCHEMA, "features": [*SCHEMA["features"][:3], {"name": "price", "kind": "numeric", "transform": "standardize"}]}
    config = write_config(root / "run.yaml", root / "data.parquet", root / "run", schema=schema,
                          layout={"name": "multiplexed", "rows": 64, "chunk_dim": 4, "probes": 2})  # fmt: skip
    result = cli("train", "--config", config)
    assert result.code == 0, result.stderr[-3000:]
    return root


@pytest.fixture()
def artifact(trained: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained / "run" / "model", tmp_path / "model"))


def edit_manifest(path: Path, edit) -> None:  # noqa: ANN001
    manifest = json.loads((path / "manifest.json").read_text())
    edit(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


def as_format_2(manifest: dict) -> None:
    manifest.pop("checksums")
    manifest["format_version"] = 2


def evaluate_error(path: Path, data: Path) -> str:
    result = cli("evaluate", "--model", path, "--data", data)
    assert result.code == 2
    return result.error


def test_a_saved_artifact_records_checksums_of_its_files_and_sections(artifact: Path) -> None:
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION == 3
    assert sorted(manifest["checksums"]["files"]) == ["arrays.arrow", "tensors.safetensors"]
    assert sorted(manifest["checksums"]["sections"]) == sorted(k for k in manifest if k != "checksums")


def test_flipped_bytes_inside_the_tensor_data_are_named(artifact: Path, trained: Path) -> None:
    with safe_open(str(artifact / "tensors.safetensors"), framework="pt") as file:
        assert "model.logit.weight" in file.keys()
    raw = bytearray((artifact / "tensors.safetensors").read_bytes())
    raw[-5] ^= 0x40  # inside the last tensor's data: the header and every shape stay valid
    (artifact / "tensors.safetensors").write_bytes(bytes(raw))
    assert "differs from the checksum recorded at save" in evaluate_error(artifact, trained / "data.parquet")
    with pytest.raises(IntegrityError, match=r"model: tensors\.safetensors differs from the checksum recorded at save; the file was edited or corrupted"):
        load_artifact(artifact)


def test_a_nan_weight_is_refused_with_or_without_checksums(artifact: Path, trained: Path) -> None:
    tensors = load_file(str(artifact / "tensors.safetensors"))
    tensors["model.logit.weight"][0, 3] = float("nan")
    save_file(tensors, str(artifact / "tensors.safetensors"))
    assert "tensors.safetensors differs from the checksum" in evaluate_error(artifact, trained / "data.parquet")
    edit_manifest(artifact, as_format_2)
    assert "tensor 'model.logit.weight' holds 1 NaN or infinite values" in evaluate_error(artifact, trained / "data.parquet")


@pytest.mark.parametrize(
    ("section", "edit"),
    [
        ("pipeline", lambda m: m["pipeline"]["state"]["numeric"]["price"].update(std=0.0)),
        ("pipeline", lambda m: m["pipeline"]["schema"]["features"][0].update(embedding_dim=8)),
        ("layout_state", lambda m: m["layout_state"]["config"].update(rows=65)),
        ("model", lambda m: m["model"].update(hidden=[9])),
    ],
)
def test_an_edited_manifest_section_is_named(artifact: Path, trained: Path, section: str, edit) -> None:  # noqa: ANN001
    edit_manifest(artifact, edit)
    assert f"manifest.json section {section!r} differs from the checksum recorded at save" in evaluate_error(artifact, trained / "data.parquet")


def test_a_manifest_rewritten_with_other_layout_and_key_order_still_loads(artifact: Path) -> None:
    manifest = json.loads((artifact / "manifest.json").read_text())
    (artifact / "manifest.json").write_text(json.dumps(manifest, sort_keys=True, ensure_ascii=True))
    assert load_model(artifact).manifest["checksums"] == manifest["checksums"]


def test_an_edited_vocabulary_file_is_named(artifact: Path, trained: Path) -> None:
    raw = (artifact / "arrays.arrow").read_bytes()
    at = raw.index(b"android")
    (artifact / "arrays.arrow").write_bytes(raw[:at] + b"Android" + raw[at + 7 :])  # still valid UTF-8 and Arrow
    assert "arrays.arrow differs from the checksum recorded at save" in evaluate_error(artifact, trained / "data.parquet")


def test_std_zero_without_checksums_is_still_refused(artifact: Path, trained: Path) -> None:
    edit_manifest(artifact, lambda m: (as_format_2(m), m["pipeline"]["state"]["numeric"]["price"].update(std=0.0)))
    assert "numeric feature 'price': mean" in evaluate_error(artifact, trained / "data.parquet")


def test_removed_or_added_checksum_parts_are_refused(artifact: Path) -> None:
    edit_manifest(artifact, lambda m: m.pop("checksums"))
    with pytest.raises(IntegrityError, match=r"manifest\.json of format 3 has no well-formed 'checksums'"):
        load_artifact(artifact)
    edit_manifest(artifact, lambda m: m.update(checksums={"files": {}, "sections": {}}))
    with pytest.raises(IntegrityError, match=r"records no checksum of tensors\.safetensors"):
        load_artifact(artifact)


def test_a_section_added_after_save_is_named(tmp_path: Path) -> None:
    save_artifact(tmp_path / "a", {"w": torch.ones(2)}, {"note": "x"})
    edit_manifest(tmp_path / "a", lambda m: m.update(extra={"hidden": 1}))
    with pytest.raises(IntegrityError, match=r"sections \['extra'\] were added and \[\] removed after save"):
        load_artifact(tmp_path / "a")


def test_a_format_2_artifact_without_checksums_loads_and_scores_as_its_format_3_copy(tmp_path: Path) -> None:
    """``FORMAT_2`` was written by this library just before format 3 (``tests/hostile.py``'s
    run config on ``impressions()``); re-saved now it carries checksums and scores the same."""
    assert json.loads((FORMAT_2 / "manifest.json").read_text())["format_version"] == 2
    pq.write_table(impressions(), tmp_path / "data.parquet")
    old = cli("evaluate", "--model", FORMAT_2, "--data", tmp_path / "data.parquet")
    assert old.code == 0, old.stderr[-2000:]
    loaded = load_model(FORMAT_2)
    from recsys_embed.jobs.model_io import save_model

    resaved = save_model(tmp_path / "model", loaded.pipeline, loaded.model, loaded.manifest["layout"], loaded.manifest["model"])
    assert json.loads((resaved / "manifest.json").read_text())["format_version"] == 3
    new = cli("evaluate", "--model", resaved, "--data", tmp_path / "data.parquet")
    assert json.loads(new.stdout) == json.loads(old.stdout) and json.loads(old.stdout)["rows"] == 400

"""Issue 13: every bad input ends in one line ``recsys-embed: error: ...`` and exit 2, never a
traceback nor a silent wrong result. The CLI runs in this process (its ``main``), except for
Ctrl-C, which needs a real process and a real signal."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file, save_file

from recsys_embed.errors import ArtifactError, ColumnTypeError, ConfigError, DataError, InputError, WriteError
from recsys_embed.features import Schema
from recsys_embed.jobs.config import load_run_config
from recsys_embed.jobs.trainer import TrainerConfig

from hostile import SCHEMA, cli, impressions, write_config

BAD_COLUMNS = {
    "string_price": ({"price": pa.array(["1.5"] * 400)}, r"column 'price': holds string; numeric feature 'price' expects numbers"),
    "list_for_scalar": ({"item_id": pa.array([[1]] * 400)}, r"column 'item_id': holds lists .* expects one value per row"),
    "scalar_for_list": ({"hist_item_id": pa.array([1] * 400)}, r"column 'hist_item_id': holds int64; sequence feature .* expects lists"),
    "decimal_ids": ({"item_id": pa.array([1.5] * 400)}, r"column 'item_id': holds double; categorical feature 'item_id' expects integers or strings"),
    "string_label": ({"label": pa.array(["yes"] * 400)}, r"column 'label': holds string; the label expects numbers"),
    "label_5": ({"label": pa.array([0] * 10 + [5] * 390)}, r"column 'label', row 10: label 5 is not 0 or 1"),
    "label_minus_1": ({"label": pa.array([1] * 3 + [-1] * 397)}, r"column 'label', row 3: label -1 is not 0 or 1"),
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory with a trained model on 400 good rows (and the data in data.parquet)."""
    root = tmp_path_factory.mktemp("trained")
    pq.write_table(impressions(), root / "data.parquet")
    result = cli("train", "--config", write_config(root / "run.yaml", root / "data.parquet", root / "run"))
    assert result.code == 0, result.stderr[-3000:]
    return root


@pytest.mark.parametrize("case", sorted(BAD_COLUMNS))
def test_a_bad_column_is_one_line_naming_file_and_column(tmp_path: Path, case: str) -> None:
    columns, message = BAD_COLUMNS[case]
    data = tmp_path / "data.parquet"
    pq.write_table(impressions(**columns), data)
    result = cli("train", "--config", write_config(tmp_path / "run.yaml", data, tmp_path / "run"))
    assert result.code == 2
    assert re.search(f"{re.escape(str(data))}: {message}", result.error), result.error
    assert not (tmp_path / "run" / "model").exists()


def test_a_wrong_column_type_is_our_error_and_still_a_type_error() -> None:
    from recsys_embed.pipelines import Pipeline

    with pytest.raises(ColumnTypeError, match="holds string") as caught:
        Pipeline(Schema.from_dict(SCHEMA)).fit(impressions(price=pa.array(["x"] * 400)))
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, InputError)


def test_csv_with_bytes_that_are_not_utf8_names_the_row(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    pacsv.write_csv(impressions().drop(["hist_item_id"]), data)
    lines = data.read_bytes().split(b"\n")
    lines[7], found = re.subn(rb'"(ios|web|android)"', lambda m: b'"\xff' + m.group(1) + b'"', lines[7])
    assert found == 1
    data.write_bytes(b"\n".join(lines))
    schema = {**SCHEMA, "features": SCHEMA["features"][:4]}
    result = cli("train", "--config", write_config(tmp_path / "run.yaml", data, tmp_path / "run", schema=schema))
    assert result.code == 2
    assert "data.csv: column 'device', row 6: value b'" in result.error and "is not UTF-8 text" in result.error


@pytest.mark.parametrize(
    ("trainer", "message"),
    [
        ({"lr": float("nan")}, r"trainer\.lr: expected a finite number, got nan"),
        ({"lr": float("inf")}, r"trainer\.lr: expected a finite number, got inf"),
        ({"lr": -0.001}, r"trainer\.lr must be a finite number > 0, got -0\.001"),
        ({"patience": 0}, r"trainer\.patience must be >= 1"),
        ({"max_steps": -1}, r"trainer\.max_steps must be >= 0 \(0: no limit\), got -1"),
        ({"checkpoint_every": -5}, r"trainer\.checkpoint_every must be >= 0"),
        ({"weight_decay": -1.0}, r"trainer\.weight_decay must be a finite number >= 0"),
    ],
)
def test_trainer_values_that_would_train_silently_wrong_are_refused(tmp_path: Path, trainer: dict, message: str) -> None:
    pq.write_table(impressions(), tmp_path / "data.parquet")
    result = cli("train", "--config", write_config(tmp_path / "run.yaml", tmp_path / "data.parquet", tmp_path / "run", trainer=trainer))
    assert result.code == 2
    assert re.search(message, result.error), result.error
    assert not (tmp_path / "run" / "checkpoint").exists()


def test_a_nan_table_learning_rate_is_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path / "run.yaml", tmp_path / "d.parquet", tmp_path / "run", table_optimizer={"name": "sgd", "lr": float("nan")})
    with pytest.raises(ConfigError, match=r"table_optimizer\.lr: expected a finite number, got nan"):
        load_run_config(path)


def test_trainer_config_errors_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="patience"):
        TrainerConfig(patience=0)


def test_a_key_given_twice_in_yaml_is_refused_naming_it(tmp_path: Path) -> None:
    path = write_config(tmp_path / "run.yaml", tmp_path / "d.parquet", tmp_path / "run")
    path.write_text(path.read_text() + "run_dir: somewhere/else\n")
    result = cli("train", "--config", path)
    assert result.code == 2
    assert "run.yaml: not valid YAML: line" in result.error and "found duplicate key 'run_dir' (first given on line" in result.error
    with pytest.raises(ValueError, match="duplicate key 'name'"):
        Schema.from_yaml("features:\n  - {name: a, name: b}\n")


def test_evaluation_on_zero_rows_is_an_error_not_nan(trained: Path, tmp_path: Path) -> None:
    pq.write_table(impressions().slice(0, 0), tmp_path / "empty.parquet")
    result = cli("evaluate", "--model", trained / "run" / "model", "--data", tmp_path / "empty.parquet")
    assert result.code == 2 and "NaN" not in result.stdout
    assert "no rows to evaluate" in result.error


def _edited(trained: Path, tmp_path: Path, edit) -> Path:  # noqa: ANN001
    artifact = tmp_path / "model"
    shutil.copytree(trained / "run" / "model", artifact)
    manifest = json.loads((artifact / "manifest.json").read_text())
    tensors = load_file(str(artifact / "tensors.safetensors"))
    edit(manifest, tensors)
    save_file(tensors, str(artifact / "tensors.safetensors"))
    (artifact / "manifest.json").write_text(json.dumps(manifest))
    return artifact


def _as_format_2(manifest: dict) -> None:
    """No checksums (format 2, or a forger who recomputed them): the edit reaches the model."""
    manifest.pop("checksums")
    manifest["format_version"] = 2


def _widen_hidden(manifest: dict, tensors: dict) -> None:
    _as_format_2(manifest)
    manifest["model"]["hidden"] = [16, 4]


def _shrink_table(manifest: dict, tensors: dict) -> None:
    _as_format_2(manifest)
    tensors["tables.item_id.weight"] = tensors["tables.item_id.weight"][:-1].clone()
    manifest["tensors"]["tables.item_id.weight"]["shape"] = list(tensors["tables.item_id.weight"].shape)


def _drop_tensor(manifest: dict, tensors: dict) -> None:
    del tensors["model.logit.bias"], manifest["tensors"]["model.logit.bias"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [(_widen_hidden, "size mismatch for mlp.layers.0.weight"), (_shrink_table, "tensor 'item_id.weight' has shape (51, 4)"),
     (_drop_tensor, "tensors.safetensors differs from the checksum")],
    ids=["model_config", "table_shape", "tensor_set"],
)  # fmt: skip
def test_an_artifact_whose_config_or_tensors_were_edited_is_one_line(trained: Path, tmp_path: Path, edit, message: str) -> None:  # noqa: ANN001
    artifact = _edited(trained, tmp_path, edit)
    result = cli("evaluate", "--model", artifact, "--data", trained / "data.parquet")
    assert result.code == 2
    assert message in result.error


@pytest.mark.parametrize("version", [0, -1, True, "2", None])
def test_an_artifact_format_version_that_is_no_version_is_refused(trained: Path, tmp_path: Path, version: object) -> None:
    def edit(manifest: dict, tensors: dict) -> None:
        manifest["format_version"] = version

    artifact = _edited(trained, tmp_path, edit)
    result = cli("evaluate", "--model", artifact, "--data", trained / "data.parquet")
    assert result.code == 2
    assert "is not one this recsys-embed reads" in result.error
    from recsys_embed.artifacts import load_artifact

    with pytest.raises(ArtifactError, match="format_version"):
        load_artifact(artifact)


@pytest.mark.parametrize("version", [0, -1, True, 1.0])
def test_a_fitted_state_format_version_that_is_no_version_is_refused(version: object) -> None:
    from recsys_embed.pipelines import Pipeline

    pipeline = Pipeline(Schema.from_dict(SCHEMA)).fit(impressions())
    arrays, config = pipeline.export_state()
    config["state"]["format_version"] = version
    with pytest.raises(ValueError, match=rf"fitted state: format_version {version!r} is not supported"):
        Pipeline.from_state(arrays, config)


def _limit_file_size(limit: int):  # noqa: ANN202
    """Writes past ``limit`` bytes fail with an OSError (EFBIG) as on a full disk (ENOSPC):
    the same path through our code, without a small filesystem to fill."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))

    def restore() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)

    return restore


def test_a_full_disk_while_training_names_the_file_and_leaves_nothing_half_written(tmp_path: Path) -> None:
    pq.write_table(impressions(), tmp_path / "data.parquet")
    config = write_config(tmp_path / "run.yaml", tmp_path / "data.parquet", tmp_path / "run", model={"name": "mlp", "hidden": [512]})
    restore = _limit_file_size(20_000)  # the checkpoint holds > 40 kB of weights and Adam moments
    try:
        result = cli("train", "--config", config)
    finally:
        restore()
    assert result.code == 2
    assert f"cannot write {tmp_path / 'run' / 'checkpoint'}: File too large" in result.error
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint"]
    assert list((tmp_path / "run" / "checkpoint").iterdir()) == []  # no partial state, no lock, no staged outputs


def test_a_full_disk_while_saving_an_artifact_keeps_the_previous_one(tmp_path: Path) -> None:
    from recsys_embed.artifacts import load_artifact, save_artifact

    save_artifact(tmp_path / "model", {"w": torch.ones(4)}, {"note": "first"})
    restore = _limit_file_size(10_000)
    try:
        with pytest.raises(WriteError, match=r"cannot write .*model/tensors\.safetensors: File too large"):
            save_artifact(tmp_path / "model", {"w": torch.ones(100_000)}, {"note": "second"})
    finally:
        restore()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert load_artifact(tmp_path / "model")[1]["note"] == "first"


def test_a_full_disk_during_synth_names_the_part_and_leaves_no_folder(tmp_path: Path) -> None:
    restore = _limit_file_size(30_000)
    try:
        result = cli("synth", "ctr", "--rows", "5000", "--out", tmp_path / "raw", "--row-group-size", "1000")
    finally:
        restore()
    assert result.code == 2
    assert f"cannot write {tmp_path / 'raw' / 'part-00000.parquet'}: File too large" in result.error
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_during_training_says_where_the_checkpoint_is_and_how_to_resume(tmp_path: Path) -> None:
    pq.write_table(impressions(rows=2000), tmp_path / "data.parquet")
    config = write_config(tmp_path / "run.yaml", tmp_path / "data.parquet", tmp_path / "run",
                          trainer={"epochs": 200, "checkpoint_every": 2, "patience": 1000}, batching={"batch_size": 64})  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "recsys_embed.jobs.cli", "train", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    checkpoint = tmp_path / "run" / "checkpoint"
    deadline = time.monotonic() + 120
    while not (checkpoint / "current").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last == f"recsys-embed: interrupted; the last checkpoint is {checkpoint}: resume with `recsys-embed train --config {config} --resume`"
    assert "Traceback" not in stderr
    assert not (tmp_path / "run" / ".lock").exists() and not list((tmp_path / "run").glob(".outputs-*"))


def test_errors_are_value_errors_where_the_input_is_at_fault() -> None:
    for error in (ConfigError, DataError, ColumnTypeError, ArtifactError):
        assert issubclass(error, InputError) and issubclass(error, ValueError)
    assert issubclass(WriteError, OSError) and str(WriteError(28, os.strerror(28), "/x/y")) == "cannot write /x/y: No space left on device"

"""Run configs name a reader's schema (`schema: criteo`, `{name: criteo, min_count: 1}`); the CLI
shows fitting's coverage warning and an undefined AUC as words, not NaN."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from recsys_embed.errors import ConfigError
from recsys_embed.jobs.ctr import resolve_schema

CRITEO_NAMES = ["label", *(f"I{i}" for i in range(1, 14)), *(f"C{i}" for i in range(1, 27))]


def test_schema_names_with_options_and_errors() -> None:
    assert resolve_schema("criteo")["C1"].min_count == 10
    assert resolve_schema({"name": "criteo", "min_count": 1})["C1"].min_count == 1
    assert resolve_schema({"name": "libfm", "fields": 3}).source_columns == ["field_0", "field_1", "field_2", "label"]
    assert resolve_schema({"name": "avazu", "columns": ["feat_1"]}).source_columns == ["feat_1", "label"]
    assert resolve_schema("synthetic_ctr").label == "label"
    with pytest.raises(ConfigError, match=r"schema 'critter' is not one of \['avazu', 'criteo', 'history', 'libfm', 'movielens', 'synthetic_ctr'\]"):
        resolve_schema({"name": "critter"})
    with pytest.raises(ValueError, match=r"schema 'critter' is neither one of \['avazu', 'criteo',"):
        resolve_schema("critter")
    with pytest.raises(ConfigError, match=r"schema 'criteo': unknown option\(s\) \['min_cnt'\]; expected some of \['categorical_ids', 'min_count'"):
        resolve_schema({"name": "criteo", "min_cnt": 1})
    with pytest.raises(ConfigError, match=r"schema 'criteo': .*numeric must be 'log1p' or 'bucketize'"):
        resolve_schema({"name": "criteo", "numeric": "raw"})


def criteo_csv(path: Path, rows: int, seed: int, one_class: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    lines = [",".join(CRITEO_NAMES)]
    for _ in range(rows):
        ints = [str(v) for v in rng.integers(0, 20, 13)]
        cats = [f"{v:08x}" for v in rng.integers(0, 50, 26)]
        label = 0 if one_class else int(rng.random() < 0.3 + 0.4 * (int(cats[0], 16) % 2))
        lines.append(",".join([str(label), *ints, *cats]))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_run(tmp_path: Path, data: dict[str, str], min_count: int) -> Path:
    """``tmp_path/run.yaml``: one epoch of a small MLP on ``data`` with the Criteo schema, into ``tmp_path/run``."""
    config = {
        "data": data,
        "schema": {"name": "criteo", "min_count": min_count, "embedding_dim": 4},
        "model": {"name": "mlp", "hidden": [8]},
        "trainer": {"epochs": 1, "progress": False},
        "batching": {"batch_size": 64},
        "run_dir": str(tmp_path / "run"),
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    return tmp_path / "run.yaml"


def test_train_with_a_named_schema_warns_and_evaluate_on_one_class(tmp_path: Path, cli_main) -> None:  # type: ignore[no-untyped-def]
    data = {"train": str(criteo_csv(tmp_path / "train.csv", 115, 0)), "test": str(criteo_csv(tmp_path / "test.csv", 60, 1))}
    result = cli_main("train", "--config", str(write_run(tmp_path, data, min_count=10)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "recsys-embed: warning: table group 'C1': its vocabulary" in result.stderr and "keeps " in result.stderr
    assert "test AUC 0." in result.stdout
    one_class = criteo_csv(tmp_path / "negatives.csv", 30, 2, one_class=True)
    out = cli_main("evaluate", "--model", str(tmp_path / "run" / "model"), "--data", str(one_class))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "recsys-embed: warning: AUC is undefined: the 30 labels evaluated are all negative" in out.stderr
    metrics = json.loads(out.stdout.strip().splitlines()[-1])
    assert metrics["auc"] is None and metrics["logloss"] > 0


def criteo_tsv(path: Path, rows: int, seed: int) -> Path:
    """The original Criteo layout: tab-separated, no header."""
    lines = criteo_csv(path, rows, seed).read_text().splitlines()[1:]
    path.write_text("".join(line.replace(",", "\t") + "\n" for line in lines))
    return path


def test_a_reader_key_reads_the_original_criteo_tsv_once_into_parquet(tmp_path: Path, cli_main) -> None:  # type: ignore[no-untyped-def]
    train, test = criteo_tsv(tmp_path / "day_0.txt", 300, 0), criteo_tsv(tmp_path / "day_1.txt", 100, 1)
    write_run(tmp_path, {"train": str(train), "test": str(test), "reader": "criteo"}, min_count=1)
    result = cli_main("train", "--config", str(tmp_path / "run.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test AUC 0." in result.stdout
    converted = tmp_path / "run" / "data" / "train.parquet"
    assert pq.read_table(converted).num_rows == 300 and pq.read_table(tmp_path / "run" / "data" / "test.parquet").num_rows == 100
    assert pq.read_table(converted).column("C1").to_pylist()[:2] == [line.split("\t")[14] for line in train.read_text().splitlines()[:2]]
    written = converted.stat().st_mtime_ns
    again = cli_main("train", "--config", str(tmp_path / "run.yaml"), "--overwrite")  # same sources: the Parquet is reused
    assert again.returncode == 0, again.stderr[-3000:]
    assert converted.stat().st_mtime_ns == written
    with train.open("a") as file:  # a changed source is read again
        file.write("1" + "\t" * 39 + "\n")
    again = cli_main("train", "--config", str(tmp_path / "run.yaml"), "--overwrite")
    assert again.returncode == 0, again.stderr[-3000:]
    assert pq.read_table(converted).num_rows == 301


def test_a_bad_reader_option_or_line_is_named(tmp_path: Path, cli_main) -> None:  # type: ignore[no-untyped-def]
    train = criteo_tsv(tmp_path / "day_0.txt", 50, 0)
    config = {
        "data": {"train": str(train), "reader": {"name": "criteo", "sep": ","}},
        "schema": "criteo",
        "run_dir": str(tmp_path / "run"),
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    result = cli_main("train", "--config", str(tmp_path / "run.yaml"))
    assert result.returncode == 2
    assert "reader 'criteo': unknown option(s) ['sep']; expected some of ['has_label', 'validate', 'separator', 'header']" in result.stderr
    with train.open("a") as file:
        file.write("1\t2\t3\n")
    config["data"]["reader"] = "criteo"
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    result = cli_main("train", "--config", str(tmp_path / "run.yaml"))
    assert result.returncode == 2 and f"{train}: line 51" in result.stderr, result.stderr[-2000:]
    assert not list((tmp_path / "run" / "data").glob("*.parquet")) and not list((tmp_path / "run" / "data").glob(".*"))

"""The CLI: demo, train/evaluate from a YAML config, bad input -> exit 2.

Each command's entry point runs as a real subprocess at least once; the variants of a command
(other layouts and models, bad input) call the CLI's ``main(argv)`` in process (the
``cli_main`` fixture): they need no new process paying torch's import."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

CLI = [sys.executable, "-m", "recsys_embed.jobs.cli"]
CliMain = Callable[..., subprocess.CompletedProcess]  # the cli_main fixture (conftest.py)


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600, cwd=cwd)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    root = tmp_path_factory.mktemp("demo")
    result = run("demo", "--rows", "30000", "--batch-size", "512", "--data-dir", str(root / "data"), "--run-dir", str(root / "run"))
    return root, result


def test_demo_trains_and_reports_auc_against_the_oracle(demo: tuple[Path, subprocess.CompletedProcess]) -> None:
    root, result = demo
    assert result.returncode == 0, result.stderr[-3000:]
    line = result.stdout.strip().splitlines()[-1]
    match = re.search(r"test AUC (\d\.\d+) \(oracle (\d\.\d+)\)", line)
    assert match, line
    auc, oracle = float(match.group(1)), float(match.group(2))
    assert 0.55 < auc < oracle + 0.02, line
    assert "samples/s" in line and "saved to" in line
    assert "training: " in result.stderr and "epoch=1/1" in result.stderr  # the tqdm bar
    metrics = json.loads((root / "run" / "metrics.json").read_text())
    assert metrics["test"]["auc"] == pytest.approx(auc, abs=1e-4)
    assert (root / "run" / "training_curves.png").exists()
    assert {p.name for p in (root / "run" / "model").iterdir()} == {"manifest.json", "tensors.safetensors", "arrays.arrow"}


def test_evaluate_a_saved_model_reproduces_the_test_metrics(demo: tuple[Path, subprocess.CompletedProcess]) -> None:
    root, result = demo
    assert result.returncode == 0
    test_split = next((root / "data").glob("*/splits/test"))
    out = run("evaluate", "--model", str(root / "run" / "model"), "--data", str(test_split))
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads(out.stdout.strip().splitlines()[-1])
    saved = json.loads((root / "run" / "metrics.json").read_text())["test"]
    assert metrics["auc"] == pytest.approx(saved["auc"], abs=1e-6)


def test_train_from_yaml_config_with_multiplexed_tables_and_autoint(demo: tuple[Path, subprocess.CompletedProcess], tmp_path: Path) -> None:
    root, _ = demo
    splits = next((root / "data").glob("*/splits"))
    config = {
        "data": {"train": str(splits / "train"), "valid": str(splits / "valid"), "test": str(splits / "test")},
        "schema": "synthetic_ctr",
        "layout": {"name": "multiplexed", "rows": 4096, "chunk_dim": 8, "probes": 2},
        "model": {"name": "autoint", "dnn": [32]},
        "trainer": {"epochs": 1, "lr": 0.002},
        "batching": {"batch_size": 1024},
        "run_dir": str(tmp_path / "run"),
    }
    result = train_from_yaml(config, tmp_path)
    assert re.search(r"test AUC 0\.\d+", result.stdout)
    manifest = json.loads((tmp_path / "run" / "model" / "manifest.json").read_text())
    assert manifest["layout_state"]["layout"] == "multiplexed" and manifest["model"]["name"] == "autoint"


def test_autoint_on_per_feature_tables_pools_histories_in_the_kernel(
    demo: tuple[Path, subprocess.CompletedProcess], tmp_path: Path, cli_main: CliMain
) -> None:
    root, _ = demo
    splits = next((root / "data").glob("*/splits"))
    config = {
        "data": {"train": str(splits / "train"), "test": str(splits / "test")},
        "model": {"name": "autoint", "head_dim": 8},
        "trainer": {"epochs": 1, "lr": 0.002},
        "batching": {"batch_size": 1024},
        "run_dir": str(tmp_path / "run"),
    }
    train_from_yaml(config, tmp_path, cli_main)
    manifest = json.loads((tmp_path / "run" / "model" / "manifest.json").read_text())
    assert manifest["layout_state"]["pool_sequences"] is True
    out = cli_main("evaluate", "--model", str(tmp_path / "run" / "model"), "--data", str(splits / "test"))
    assert out.returncode == 0, out.stderr[-3000:]
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    assert json.loads(out.stdout.strip().splitlines()[-1])["auc"] == pytest.approx(saved["auc"], abs=1e-6)


def test_train_din_with_mini_batch_aware_l2_from_yaml(
    demo: tuple[Path, subprocess.CompletedProcess], tmp_path: Path, cli_main: CliMain
) -> None:
    root, _ = demo
    splits = next((root / "data").glob("*/splits"))
    config = {
        "data": {"train": str(splits / "train"), "test": str(splits / "test")},
        "model": {"name": "din", "hidden": [32], "attention_hidden": [16]},
        "trainer": {"epochs": 1, "lr": 0.003, "mba_l2": 0.01, "progress": False},
        "batching": {"batch_size": 2048},
        "run_dir": str(tmp_path / "run"),
    }
    result = train_from_yaml(config, tmp_path, cli_main)
    auc = float(re.search(r"test AUC (0\.\d+)", result.stdout).group(1))
    assert auc > 0.5, result.stdout
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["config"]["mba_l2"] == 0.01


def test_train_pruned_tables_searches_dims_and_saves_the_compact_export(
    demo: tuple[Path, subprocess.CompletedProcess], tmp_path: Path, cli_main: CliMain
) -> None:
    """OptEmbed's three stages through the layout contract: supernet training, the layout's search
    stage on validation AUC, retraining, and the layout's serving export (compact) in the artifact."""
    root, _ = demo
    splits = next((root / "data").glob("*/splits"))
    search = {"rounds": 1, "mutations": 2, "crossovers": 2, "top_k": 2}
    config = {
        "data": {"train": str(splits / "train"), "valid": str(splits / "valid"), "test": str(splits / "test")},
        "layout": {"name": "pruned", "threshold_init": 0.01, "search": search},
        "model": {"name": "mlp", "hidden": [32]},
        "trainer": {"epochs": 1, "lr": 0.003, "progress": False},
        "batching": {"batch_size": 2048},
        "run_dir": str(tmp_path / "run"),
    }
    result = train_from_yaml(config, tmp_path, cli_main)
    assert re.search(r"pruned search: dims \[[\d, ]+\] validation AUC 0\.\d+ after \d+ evaluations", result.stdout), result.stdout
    assert (tmp_path / "run" / "retrain" / "metrics.json").exists()
    manifest = json.loads((tmp_path / "run" / "model" / "manifest.json").read_text())
    assert manifest["layout_state"]["layout"] == "compact"
    out = cli_main("evaluate", "--model", str(tmp_path / "run" / "model"), "--data", str(splits / "test"))
    assert out.returncode == 0, out.stderr[-3000:]
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    assert json.loads(out.stdout.strip().splitlines()[-1])["auc"] == pytest.approx(saved["auc"], abs=1e-6)


def test_pruned_tables_without_validation_data_fail_before_training(
    demo: tuple[Path, subprocess.CompletedProcess], tmp_path: Path, cli_main: CliMain
) -> None:
    root, _ = demo
    splits = next((root / "data").glob("*/splits"))
    config = {"data": {"train": str(splits / "train")}, "layout": {"name": "pruned"}, "run_dir": str(tmp_path / "run")}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    result = cli_main("train", "--config", str(tmp_path / "run.yaml"))
    assert result.returncode == 2
    assert "layout 'pruned' needs data.valid" in result.stderr and "epoch 1" not in result.stderr
    assert not (tmp_path / "run" / "model").exists()


@pytest.mark.parametrize("model", ["autoint", "mlp"])
def test_sequence_mean_models_train_with_mini_batch_aware_l2_from_yaml(
    demo: tuple[Path, subprocess.CompletedProcess], tmp_path: Path, cli_main: CliMain, model: str
) -> None:
    """AutoInt and the MLP read only history means, which per_feature pools in the kernel unless
    mini-batch aware L2 needs each position's row: then the histories stay per position."""
    root, _ = demo
    splits = next((root / "data").glob("*/splits"))
    config = {
        "data": {"train": str(splits / "train"), "test": str(splits / "test")},
        "model": {"name": model},
        "trainer": {"epochs": 1, "lr": 0.003, "mba_l2": 0.01, "progress": False},
        "batching": {"batch_size": 2048},
        "run_dir": str(tmp_path / "run"),
    }
    result = train_from_yaml(config, tmp_path, cli_main)
    assert float(re.search(r"test AUC (0\.\d+)", result.stdout).group(1)) > 0.5, result.stdout
    manifest = json.loads((tmp_path / "run" / "model" / "manifest.json").read_text())
    assert manifest["layout_state"]["pool_sequences"] is False


@pytest.mark.parametrize(
    "change, message",
    [
        ({"trainer": {"epochs": 1, "learning_rate": 0.1}}, r"trainer: unknown key\(s\) \['learning_rate'\]"),
        ({"model": {"name": "dcn"}}, r"model.name='dcn' is not one of"),
        ({"batching": {"batch_size": "big"}}, r"batching.batch_size: expected int"),
        ({"layout": {"name": "per_feature", "rows": 3}}, r"layout: per_feature takes only 'pool_sequences' and 'compression', got \['rows'\]"),
        ({"layout": {"name": "per_feature", "pool_sequences": "yes"}}, r"layout.pool_sequences: expected true or false"),
        ({"data": {"valid": "x"}}, r"data: missing required key\(s\) \['train'\]"),
        ({"trainer": {"mba_l2": -0.1}}, r"trainer: trainer.mba_l2 must be >= 0"),
        ({"trainer": {"mba_l2": "high"}}, r"trainer.mba_l2: expected float"),
        ({"layout": {"name": "per_feature", "pool_sequences": True}, "trainer": {"mba_l2": 0.01}},
         r"layout.pool_sequences: true pools each sequence .* trainer.mba_l2 > 0 needs"),
    ],
)
def test_bad_config_keys_name_the_key(tmp_path: Path, cli_main: CliMain, change: dict, message: str) -> None:
    config = {"data": {"train": str(tmp_path)}, "run_dir": str(tmp_path / "run")}
    config.update(change)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    result = cli_main("train", "--config", str(path))
    assert result.returncode == 2
    assert re.search(message, result.stderr), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--rows", "0"], "rows"),
        (["--rows", "-5"], "rows"),
    ],
)
def test_synth_rejects_bad_row_counts(tmp_path: Path, cli_main: CliMain, args: list[str], message: str) -> None:
    result = cli_main("synth", "ctr", *args, "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


def test_synth_refuses_a_non_empty_directory_without_overwrite(tmp_path: Path, cli_main: CliMain) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = cli_main("synth", "ctr", "--rows", "100", "--out", str(out))
    assert result.returncode == 2 and "--overwrite" in result.stderr or "overwrite" in result.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_synth_unwritable_directory(tmp_path: Path, cli_main: CliMain) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = cli_main("synth", "seq", "--users", "10", "--out", str(blocker / "out"))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1


def test_synth_then_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "ctr"
    assert run("synth", "ctr", "--rows", "500", "--out", str(out)).returncode == 0
    result = run("synth", "ctr", "--rows", "400", "--out", str(out), "--overwrite")
    assert result.returncode == 0 and "wrote 400 rows" in result.stdout


def test_train_sequential_task_from_yaml(tmp_path: Path) -> None:
    assert run("synth", "seq", "--users", "300", "--out", str(tmp_path / "seq")).returncode == 0
    config = {
        "task": "sequential",
        "data": {"events": "seq", "format": "synthetic"},
        "model": {"name": "bert4rec", "max_len": 10, "dim": 16, "num_layers": 1},
        "trainer": {"epochs": 1, "batch_size": 64, "progress": False},
        "run_dir": str(tmp_path / "run"),
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    result = run("train", "--config", str(tmp_path / "run.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"bert4rec test NDCG@10 0\.\d+ \(popularity 0\.\d+\)", result.stdout), result.stdout
    assert (tmp_path / "run" / "model" / "manifest.json").exists()


def train_from_yaml(config: dict, tmp_path: Path, cli: CliMain = run) -> subprocess.CompletedProcess:
    """`recsys-embed train --config run.yaml` on ``config`` (by ``cli``: a subprocess unless told);
    asserts it exits 0."""
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    result = cli("train", "--config", str(path))
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_builders_docstring_examples() -> None:
    import doctest

    import recsys_embed.jobs.builders

    result = doctest.testmod(recsys_embed.jobs.builders)
    assert result.attempted >= 2 and result.failed == 0

"""Third-party compression methods: a plugin package installed on the path (real dist-info
metadata) is listed, trained by name from a YAML run config, and its saved model loads in a
fresh process; without the package, loading names it; broken plugins fail naming themselves.
Also: the example plugin runs, and config errors name the method, the group and the minimum."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from recsys_embed.compression import CompressedTables, MethodConfigError, UnknownMethodError
from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.jobs.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

ENTRY_POINTS = """\
[recsys_embed.compression]
signed_hashing = compression_plugin:SignedHashing
broken = missing_module:Thing
not_a_method = plain_plugin:helper
wrong_shape = plain_plugin:WrongShape
"""

PLAIN = """
import torch
from compression_plugin import SignedHashing

class WrongShape(SignedHashing):
    \"\"\"Registered by the entry point's name; returns one column too few.\"\"\"
    description = "returns [N, D - 1]"

    def lookup(self, ids):
        return super().lookup(ids)[:, 1:]

def helper():
    return None
"""


def recsys(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "recsys_embed.jobs.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=cwd)


def install_plugin_package(site: Path) -> None:
    """The example plugin as package ``toy-compression`` 0.1: its modules and a dist-info with entry points."""
    site.mkdir()
    shutil.copy(EXAMPLES / "compression_plugin.py", site / "compression_plugin.py")
    (site / "plain_plugin.py").write_text(textwrap.dedent(PLAIN))
    info = site / "toy_compression-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-compression\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    (info / "top_level.txt").write_text("compression_plugin\nplain_plugin\n")


def test_example_plugin_runs() -> None:
    run = subprocess.run([sys.executable, str(EXAMPLES / "compression_plugin.py")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert re.search(r"item_id\s+5,000\s+16 signed_hashing\s+8,000\s+96,000\s+19\.2\s+9\.60\s+10\.0x", run.stdout), run.stdout
    loss, guess = map(float, re.search(r"final training loss (\d\.\d+) \(a constant guess: (\d\.\d+)\)", run.stdout).groups())  # type: ignore[union-attr]
    assert loss < 0.6 * guess
    assert "identical outputs True" in run.stdout


def test_plugin_package_trains_by_name_from_yaml_and_loads_in_a_fresh_process(tmp_path: Path) -> None:
    install_plugin_package(tmp_path / "site")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "OMP_NUM_THREADS": "1"}
    data = tmp_path / "data"
    synth = recsys("synth", "ctr", "--out", str(data), "--rows", "4000", env=env)
    assert synth.returncode == 0, synth.stderr[-2000:]
    parquet = next(data.rglob("*.parquet")).parent
    config = {
        "data": {"train": str(parquet), "test": str(parquet)},
        "layout": {"name": "per_feature", "compression": {
            "item_id": {"method": "signed_hashing", "budget": 0.1},
            "user_id": {"method": "qr", "budget": 0.2},
        }},
        "model": {"name": "mlp", "hidden": [16]},
        "trainer": {"epochs": 1},
        "batching": {"batch_size": 512},
        "run_dir": str(tmp_path / "run"),
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))

    listed = recsys("compression", env=env)
    assert listed.returncode == 0, listed.stderr[-2000:]
    lines = dict(line.split(None, 1) for line in listed.stdout.strip().splitlines())
    assert lines["signed_hashing"].startswith("signed hashing: M shared rows") and lines["qr"].startswith("quotient-remainder")
    assert lines["broken"].startswith("(failed to load: compression plugin 'broken' (entry point broken = missing_module:Thing "
                                      "of package toy-compression 0.1) failed to load: ModuleNotFoundError")

    train = recsys("train", "--config", str(tmp_path / "run.yaml"), env=env)
    assert train.returncode == 0, train.stderr[-3000:]
    manifest = json.loads((tmp_path / "run" / "model" / "manifest.json").read_text())
    methods = manifest["layout_state"]["methods"]
    assert manifest["layout_state"]["layout"] == "compressed"
    assert methods["item_id"]["method"] == "signed_hashing" and methods["item_id"]["package"] == "toy-compression"
    assert methods["user_id"]["method"] == "qr" and "package" not in methods["user_id"]
    assert methods["item_category"] == {"method": "exact"}
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]

    again = recsys("evaluate", "--model", str(tmp_path / "run" / "model"), "--data", str(parquet), env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout.strip().splitlines()[-1])["auc"] == pytest.approx(saved["auc"], abs=1e-6)

    without = recsys("evaluate", "--model", str(tmp_path / "run" / "model"), "--data", str(parquet),
                     env={k: v for k, v in env.items() if k != "PYTHONPATH"})
    assert without.returncode == 2
    assert re.search(r"recsys-embed: error: unknown compression method 'signed_hashing'; it was saved with package "
                     r"'toy-compression' \(pip install toy-compression\); installed: \[", without.stderr), without.stderr


PROBE = textwrap.dedent("""
    import json
    from recsys_embed.compression import CompressedTables, method_class
    from recsys_embed.features import FeatureSpec, Schema
    schema = Schema([FeatureSpec("item_id", embedding_dim=8)])
    errors = {}
    for name in ("broken", "not_a_method", "wrong_shape"):
        try:
            CompressedTables.from_options(schema, {"item_id": 100}, {"item_id": {"method": name, "rows": 10}})
        except ValueError as error:
            errors[name] = f"{type(error).__name__}: {error}"
    print(json.dumps(errors))
""")


def test_broken_plugins_fail_naming_the_plugin(tmp_path: Path) -> None:
    install_plugin_package(tmp_path / "site")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    errors = json.loads(run.stdout.strip().splitlines()[-1])
    assert errors["broken"].startswith("PluginError: compression plugin 'broken' (entry point broken = missing_module:Thing "
                                       "of package toy-compression 0.1) failed to load: ModuleNotFoundError")
    assert "neither a CompressionMethod subclass nor a module that registers 'not_a_method'" in errors["not_a_method"]
    assert errors["wrong_shape"] == (
        "PluginError: table group 'item_id': compression method 'wrong_shape' (entry point wrong_shape = plain_plugin:WrongShape "
        "of package toy-compression 0.1) gave vectors of shape (2, 7) for 2 ids, expected (2, 8)"
    )


SCHEMA = Schema([FeatureSpec("user_id", embedding_dim=8), FeatureSpec("item_id", embedding_dim=8)])


@pytest.mark.parametrize(
    "compression, error, message",
    [
        ({"item_id": {"method": "codebook"}}, UnknownMethodError,
         r"unknown compression method 'codebook'; installed: \[.*'exact', 'hashing', .*'qr'"),
        ({"items": {"method": "qr", "budget": 0.1}}, ValueError,
         r"layout.compression: no table group\(s\) \['items'\]; the schema's table groups are \['user_id', 'item_id'\]"),
        ({"item_id": {"method": "qr", "budget": 0.001}}, MethodConfigError,
         r"layout.compression.item_id: qr: 10000 ids need at least 200 rows \(m \+ ceil\(n/m\), at m = 100\), "
         r"the budget allows 10 rows of dim 8"),
        ({"item_id": {"method": "hashing", "budget": 0.1, "probes": 2}}, MethodConfigError,
         r"hashing: unknown option\(s\) \['probes'\]; it takes \['rows', 'salt'\]"),
        ({"item_id": {"method": "hashing"}}, MethodConfigError, r"hashing: give either 'rows' or 'budget'"),
        ({"item_id": {"method": "qr", "budget": -1}}, MethodConfigError, r"item_id: budget must be a fraction in \(0, 1\] or bytes > 1"),
        ({"item_id": {"method": "qr", "budget": 0.1, "combine": "max"}}, MethodConfigError,
         r"qr: combine must be one of \['mult', 'add', 'concat'\], got 'max'"),
        ({"item_id": "qr"}, ValueError, r"layout.compression.item_id: expected a mapping with 'method'"),
    ],
)
def test_bad_compression_configs_name_what_is_wrong(compression: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        CompressedTables.from_options(SCHEMA, {"user_id": 50, "item_id": 10_000}, compression)


def test_cli_reports_a_bad_method_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = {"data": {"train": str(tmp_path)}, "run_dir": str(tmp_path / "run"),
              "layout": {"name": "per_feature", "compression": {"item_id": {"method": "codebook"}}}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(tmp_path / "run.yaml")]) == 2
    assert re.match(r"recsys-embed: error: unknown compression method 'codebook'; installed: \[", capsys.readouterr().err)

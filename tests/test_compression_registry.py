"""Compression plugins: the example plugin runs, and a third-party package installed on the path
is found through its entry points, lazily, by name (real dist-info metadata, real subprocesses)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

ENTRY_POINTS = """\
[recsys_embed.compression]
int8_rows = compression_plugin:Int8RowTables
int8_again = plain_plugin:Int8Again
broken = missing_module:Thing
not_a_layout = plain_plugin:helper
"""

# what the subprocess checks, printed as one JSON line
PROBE = textwrap.dedent("""
    import json, sys, torch
    torch.set_num_threads(1)
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
    from recsys_embed.compression import compression_methods
    from recsys_embed.features import FeatureSpec, Schema
    from recsys_embed.tables import PerFeatureTables, layout_class, registered_layouts

    report = {"listed": compression_methods(), "registered_before": registered_layouts()}
    errors = {}
    for name in ("broken", "not_a_layout", "no_such_method"):
        try:
            layout_class(name)
        except ValueError as error:
            errors[name] = f"{type(error).__name__}: {error}"
    report["errors"] = errors
    schema = Schema([FeatureSpec("item_id", embedding_dim=8)])
    full = PerFeatureTables(schema, {"item_id": 50}).eval()
    kjt = KeyedJaggedTensor.from_lengths_sync(["item_id"], torch.arange(50), torch.ones(50, dtype=torch.int64))
    for name in ("int8_rows", "int8_again"):
        cls = layout_class(name)
        small = cls.quantize(full, schema)
        tensors, config = small.export_state()
        again = layout_class(config["layout"]).from_state(schema, tensors, config)
        with torch.no_grad():
            error = float((small(kjt).pooled["item_id"] - full(kjt).pooled["item_id"]).abs().max())
            same = torch.equal(again(kjt).pooled["item_id"], small(kjt).pooled["item_id"])
        report[name] = {"class": cls.__name__, "layout_name": cls.layout_name, "config": config,
                        "error": error, "round_trip": same}
    report["registered_after"] = registered_layouts()
    print(json.dumps(report))
""")


def install_plugin_package(site: Path) -> None:
    """The example plugin as package ``toy-compression`` 0.1: its modules and a dist-info with entry points."""
    site.mkdir()
    shutil.copy(EXAMPLES / "compression_plugin.py", site / "compression_plugin.py")
    (site / "plain_plugin.py").write_text(textwrap.dedent("""
        from compression_plugin import Int8RowTables

        class Int8Again(Int8RowTables):
            \"\"\"Not registered by its module: the entry point's name registers it.\"\"\"

        def helper():
            return None
    """))
    info = site / "toy_compression-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-compression\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)


def test_example_plugin_runs() -> None:
    run = subprocess.run([sys.executable, str(EXAMPLES / "compression_plugin.py")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    memory = re.search(r"int8_rows: memory ([\d,]+) -> ([\d,]+) bytes, largest output error (\d\.\d+)", run.stdout)
    assert memory, run.stdout
    before, after = (int(memory.group(i).replace(",", "")) for i in (1, 2))
    assert after < before / 3 and float(memory.group(3)) < 0.001
    assert "round trip through layout_class('int8_rows'): identical outputs True" in run.stdout


def test_third_party_package_resolves_by_entry_point(tmp_path: Path) -> None:
    install_plugin_package(tmp_path / "site")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    # installed plugins are listed without being imported; a lookup imports only the one it names
    assert {"int8_rows", "int8_again", "broken", "not_a_layout"} <= set(report["listed"])
    assert "int8_rows" not in report["registered_before"]
    assert {"int8_rows", "int8_again"} <= set(report["registered_after"])
    for name, class_name in (("int8_rows", "Int8RowTables"), ("int8_again", "Int8Again")):
        found = report[name]
        assert found["class"] == class_name and found["layout_name"] == name and found["config"] == {"layout": name}
        assert found["round_trip"] and found["error"] < 0.001
    errors = report["errors"]
    assert re.match(
        r"PluginError: compression plugin 'broken' \(entry point broken = missing_module:Thing of package toy-compression 0.1\) "
        r"failed to load: ModuleNotFoundError: No module named 'missing_module'", errors["broken"]
    ), errors["broken"]
    assert "neither a TableLayout subclass nor a module that registers 'not_a_layout'" in errors["not_a_layout"]
    assert errors["no_such_method"].startswith("UnknownLayoutError: unknown table layout 'no_such_method'; known: [")

"""Small CTR data, run configs and an in-process CLI call for the tests of bad input
(tests/test_errors.py, test_run_dir.py, test_artifact_integrity.py, test_fuzz.py)."""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import yaml

from recsys_embed.jobs.cli import main

SCHEMA: dict[str, Any] = {
    "features": [
        {"name": "user_id", "embedding_dim": 4},
        {"name": "item_id", "embedding_dim": 4},
        {"name": "device", "embedding_dim": 4},
        {"name": "price", "kind": "numeric"},
        {"name": "hist_item_id", "kind": "sequence", "table": "item_id", "max_len": 3, "embedding_dim": 4},
    ],
    "label": "label",
}
ERROR_LINE = re.compile(r"recsys-embed: error: \S.*")


def impressions(rows: int = 400, seed: int = 0, **columns: pa.Array) -> pa.Table:
    """``rows`` impressions of the columns :data:`SCHEMA` reads; ``columns`` replace some."""
    rng = np.random.default_rng(seed)
    items = rng.integers(0, 50, rows)
    data = {
        "user_id": pa.array(rng.integers(0, 30, rows)),
        "item_id": pa.array(items),
        "device": pa.array(rng.choice(["ios", "android", "web"], rows)),
        "price": pa.array(rng.random(rows) * 10),
        "hist_item_id": pa.array([rng.integers(0, 50, rng.integers(0, 4)).tolist() for _ in range(rows)], pa.list_(pa.int64())),
        "label": pa.array((items % 3 == 0).astype(np.int64) ^ (rng.random(rows) < 0.1)),
    }
    data.update(columns)
    return pa.table(data)


def write_config(path: Path, train: Path, run_dir: Path, **changes: Any) -> Path:
    """A small run YAML at ``path`` (one quiet epoch of an MLP); ``changes`` replace top-level
    keys, a ``trainer`` mapping is merged into the default one."""
    config: dict[str, Any] = {
        "data": {"train": str(train)},
        "schema": SCHEMA,
        "model": {"name": "mlp", "hidden": [8]},
        "trainer": {"epochs": 1, "progress": False},
        "batching": {"batch_size": 128},
        "run_dir": str(run_dir),
    }
    config["trainer"].update(changes.pop("trainer", {}))
    config.update(changes)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def error(self) -> str:
        """The one error line; fails the test unless stderr ends with exactly one."""
        lines = self.stderr.strip().splitlines()
        assert lines and ERROR_LINE.fullmatch(lines[-1]), f"no error line in stderr:\n{self.stderr[-2000:]}"
        assert "Traceback" not in self.stderr, self.stderr[-3000:]
        return lines[-1]


def cli(*argv: str) -> CliResult:
    """Run ``recsys-embed ARGV`` in this process (no torch import per call); any exception
    escaping ``main`` fails the test, as it would show the user a traceback."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return CliResult(code, out.getvalue(), err.getvalue())


def train_small(root: Path, rows: int, batch_size: int, **changes: Any) -> Path:
    """``recsys-embed synth ctr`` of ``rows`` rows into ``root/data``, then one quiet epoch of
    ``train`` on it (the test split is the same data) into ``root/run``; ``changes`` are
    top-level config keys (``model`` defaults to an MLP of 16, a ``trainer`` mapping is merged).
    Returns the saved model's folder."""
    from recsys_embed.jobs.cli import main

    assert main(["synth", "ctr", "--rows", str(rows), "--out", str(root / "data"), "--row-group-size", "1000"]) == 0
    config: dict[str, Any] = {
        "data": {"train": str(root / "data"), "test": str(root / "data")},
        "model": {"name": "mlp", "hidden": [16]},
        "trainer": {"epochs": 1, "progress": False, **changes.pop("trainer", {})},
        "batching": {"batch_size": batch_size},
        "run_dir": str(root / "run"),
        **changes,
    }
    (root / "run.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(root / "run.yaml")]) == 0
    return root / "run" / "model"

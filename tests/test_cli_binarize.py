"""``recsys-embed binarize``: binary codes of a trained SASRec's item table from the command line
(a real subprocess), equal to :func:`~recsys_embed.jobs.binarize.binarize_artifact`'s with the
same seed, and its bad input (in process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recsys_embed.compression.binary import BinaryCodes
from recsys_embed.jobs.binarize import binarize_artifact
from recsys_embed.jobs.sequential import SequentialConfig, train_sequential
from recsys_embed.models import SASRecConfig
from test_cli import CliMain
from test_sequential import cycle_events, one_thread  # noqa: F401 (one_thread: an autouse fixture)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small trained SASRec artifact (items of a 300-item cycle, dim 16)."""
    run = tmp_path_factory.mktemp("binarize") / "run"
    config = SequentialConfig(SASRecConfig(max_len=6, dim=16, num_layers=1, num_heads=1, dropout=0.0), epochs=1, batch_size=64, progress=False)
    train_sequential(cycle_events(users=200, length=6, items=300), config, run)
    return run / "model"


def test_binarize_writes_the_codes_of_the_item_table(model: Path, tmp_path: Path) -> None:
    out = tmp_path / "codes"
    done = subprocess.run([sys.executable, "-m", "recsys_embed.jobs.cli", "binarize", "--model", str(model), "--steps", "2",
                           "--bits", "16", "--iterations", "50", "--output", str(out)], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    codes, same = BinaryCodes.load(out), binarize_artifact(model, steps=2, bits=16, iterations=50, seed=0)
    rows = len(same.codes)  # the items of the training split's vocabulary
    assert done.stdout.strip() == f"binarized {rows} rows of dim 16 into 32 bits each (4 bytes, 0.0625 of fp32); saved to {out}"
    assert rows > 250 and codes.codes.shape == (rows, 4) and np.array_equal(codes.codes, same.codes)


def test_binarize_bad_input_names_what_is_wrong(model: Path, tmp_path: Path, cli_main: CliMain) -> None:
    bad_bits = cli_main("binarize", "--model", str(model), "--bits", "12", "--output", str(tmp_path / "b"))
    assert bad_bits.returncode == 2 and "bits" in bad_bits.stderr and "8" in bad_bits.stderr, bad_bits.stderr
    same = cli_main("binarize", "--model", str(model), "--output", str(model))
    assert same.returncode == 2 and "is the input model" in same.stderr, same.stderr
    missing = cli_main("binarize", "--model", str(tmp_path / "nothing"), "--output", str(tmp_path / "c"))
    assert missing.returncode == 2 and "nothing" in missing.stderr, missing.stderr
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()

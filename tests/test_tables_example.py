"""The import example runs as a user would run it, and its model learns."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "import_into_torch_model.py"


def test_import_example_swaps_in_a_multiplexed_table_and_trains() -> None:
    run = subprocess.run([sys.executable, str(EXAMPLE), "--steps", "30"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "embedding parameters: 403,200 -> 40,320" in run.stdout
    losses = [float(x) for x in re.findall(r"loss (\d+\.\d+)", run.stdout)]
    assert len(losses) == 7 and losses[-1] < losses[0] - 0.1, run.stdout

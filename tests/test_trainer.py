"""Trainer: learning, reports, and resume after a real kill reaching identical weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from recsys_embed.checkpoint import load_state
from recsys_embed.trainer import TrainerConfig

SCRIPT = Path(__file__).with_name("resume_script.py")


def _run(run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(run_dir), *extra], capture_output=True, text=True, timeout=300)


def test_resume_after_kill_matches_uninterrupted_run(tmp_path: Path) -> None:
    straight = _run(tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-2000:]
    metrics = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 3 and metrics["epochs"][-1]["auc"] > 0.6
    assert (tmp_path / "straight" / "training_curves.png").stat().st_size > 1000

    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(killed_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:  # kill while epoch 2 is being drawn, after a mid-epoch checkpoint
        if line.strip() == "batch 1 17":
            proc.kill()
            break
    proc.wait(timeout=60)
    assert proc.returncode != 0, "the run finished before it could be killed"
    assert not (killed_dir / "final.safetensors").exists()
    state = load_state(killed_dir / "checkpoint")
    assert state["epoch"] == 1 and state["batch_index"] > 0  # a mid-epoch checkpoint

    resumed = _run(killed_dir, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    first_batch = resumed.stdout.splitlines()[0]
    assert first_batch == "batch 1 0"  # the interrupted epoch is replayed, trained batches skipped
    a = load_file(str(tmp_path / "straight" / "final.safetensors"))
    b = load_file(str(killed_dir / "final.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{key} differs after resume")


def test_resume_without_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    result = _run(tmp_path / "nothing", "--resume")
    assert result.returncode != 0
    assert "checkpoint does not exist" in result.stderr


@pytest.mark.parametrize("kwargs, message", [({"metric": "accuracy"}, "trainer.metric"), ({"epochs": 0}, "epochs")])
def test_bad_trainer_config(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainerConfig(**kwargs)

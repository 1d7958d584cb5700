"""Issue 13, run directories: one run at a time, an explicit --resume / --overwrite, a resumed
run that counts its steps as an uninterrupted one, outputs that appear together, checkpoints
and synthetic data that survive kill -9 at any moment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from safetensors.torch import load_file

from recsys_embed.checkpoint import load_state, save_state
from recsys_embed.errors import RunDirError
from recsys_embed.jobs.run_dir import RunDir

from hostile import cli, impressions, write_config

CLI = [sys.executable, "-m", "recsys_embed.jobs.cli"]


def _wait_for(condition, proc: subprocess.Popen, seconds: float = 120) -> None:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while not condition():
        assert proc.poll() is None, f"the process ended (code {proc.returncode}) before it could be killed"
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    pq.write_table(impressions(rows=1200), tmp_path / "data.parquet")
    return tmp_path / "data.parquet"


def test_a_rerun_into_a_finished_run_refuses_until_told_resume_or_overwrite(tmp_path: Path, data: Path) -> None:
    config = write_config(tmp_path / "run.yaml", data, tmp_path / "run")
    assert cli("train", "--config", config).code == 0
    first = (tmp_path / "run" / "metrics.json").read_text()
    again = cli("train", "--config", config)
    assert again.code == 2
    assert f"run directory {tmp_path / 'run'} holds an earlier run (checkpoint, model, metrics.json" in again.error
    assert "pass --resume to continue it or --overwrite to replace it" in again.error
    assert (tmp_path / "run" / "metrics.json").read_text() == first  # untouched
    over = cli("train", "--config", config, "--overwrite")
    assert over.code == 0, over.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint", "metrics.json", "model", "training_curves.png"]


def test_resume_needs_a_checkpoint(tmp_path: Path, data: Path) -> None:
    result = cli("train", "--config", write_config(tmp_path / "run.yaml", data, tmp_path / "run"), "--resume")
    assert result.code == 2
    assert f"run directory {tmp_path / 'run'} holds no checkpoint to resume from; run without --resume" in result.error


def test_a_resumed_run_counts_steps_and_reaches_weights_as_an_uninterrupted_one(tmp_path: Path, data: Path) -> None:
    trainer = {"epochs": 3, "checkpoint_every": 3}
    straight = write_config(tmp_path / "straight.yaml", data, tmp_path / "straight", trainer=trainer, batching={"batch_size": 64})
    assert cli("train", "--config", straight).code == 0
    killed = write_config(tmp_path / "killed.yaml", data, tmp_path / "killed", trainer=trainer, batching={"batch_size": 64})
    proc = subprocess.Popen([*CLI, "train", "--config", str(killed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    checkpoint = tmp_path / "killed" / "checkpoint"

    def mid_second_epoch() -> bool:
        try:
            state = load_state(checkpoint)
        except FileNotFoundError:  # none yet, or replaced while read
            return False
        return state["epoch"] >= 1 and state["batch_index"] > 0

    _wait_for(mid_second_epoch, proc)
    proc.kill()
    proc.wait()
    assert not (tmp_path / "killed" / "model").exists()
    again = cli("train", "--config", killed)
    assert again.code == 2 and "--resume" in again.error
    assert "removed .outputs-" in again.stderr  # the killed run's staged outputs, cleaned and reported
    resumed = cli("train", "--config", killed, "--resume")
    assert resumed.code == 0, resumed.stderr[-3000:]
    steps = {name: json.loads((tmp_path / name / "metrics.json").read_text())["steps"] for name in ("straight", "killed")}
    assert steps["killed"] == steps["straight"] == 3 * 19  # 1200 rows in batches of 64
    a = load_file(str(tmp_path / "straight" / "model" / "tensors.safetensors"))
    b = load_file(str(tmp_path / "killed" / "model" / "tensors.safetensors"))
    assert a.keys() == b.keys()
    assert [k for k in a if not a[k].equal(b[k])] == []


def test_a_second_run_is_refused_naming_the_holder_and_a_dead_holders_lock_is_taken_over(tmp_path: Path, data: Path) -> None:
    config = write_config(tmp_path / "run.yaml", data, tmp_path / "run")
    (tmp_path / "run").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "run" / ".lock").write_text(f"{holder.pid}\n")
        result = cli("train", "--config", config)
        assert result.code == 2
        assert f"run directory {tmp_path / 'run'} is in use by process {holder.pid}" in result.error
    finally:
        holder.kill()
        holder.wait()
    result = cli("train", "--config", config)  # the holder is gone: its lock is stale
    assert result.code == 0, result.stderr[-2000:]
    assert not (tmp_path / "run" / ".lock").exists()


def test_two_real_runs_into_one_directory_one_is_refused(tmp_path: Path, data: Path) -> None:
    # a run far longer than the test: the second must meet its lock, not its finished outputs
    config = write_config(tmp_path / "run.yaml", data, tmp_path / "run", trainer={"epochs": 100_000, "patience": 100_000})
    first = subprocess.Popen([*CLI, "train", "--config", str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: (tmp_path / "run" / ".lock").exists(), first)
        second = subprocess.run([*CLI, "train", "--config", str(config)], capture_output=True, text=True, timeout=300)
        assert second.returncode == 2
        assert second.stderr.strip().splitlines()[-1] == (
            f"recsys-embed: error: run directory {tmp_path / 'run'} is in use by process {first.pid} (lock {tmp_path / 'run' / '.lock'}); "
            "wait for that run to end or choose another run_dir"
        )
    finally:
        first.kill()
        first.wait()


def test_outputs_of_a_run_killed_while_moving_them_in_are_finished_by_the_next_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    staging = run / ".outputs-4242"  # what a kill between two of commit's renames leaves
    (staging / "model").mkdir(parents=True)
    (staging / "model" / "manifest.json").write_text("{}")
    (staging / "COMPLETE").touch()
    (run / "metrics.json").write_text('{"new": true}')  # moved in before the kill
    with RunDir.open(run, overwrite=True):
        pass
    assert "finished moving the outputs ['model'] of a run killed while saving them" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == []  # then --overwrite removed that earlier run


def test_outputs_of_a_run_killed_before_they_were_complete_never_appear(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    (run / ".outputs-4242" / "model").mkdir(parents=True)  # killed while saving the model
    (run / ".outputs-4242" / "metrics.json").write_text("{}")
    (run / ".model.tmp-77").mkdir()  # a partial artifact of an earlier version
    with RunDir.open(run) as opened:
        assert sorted(p.name for p in run.iterdir()) == [".lock", opened.staging.name]
    err = capsys.readouterr().err
    assert "removed .outputs-4242, the unfinished outputs of a killed run" in err and "removed .model.tmp-77" in err
    assert list(run.iterdir()) == []


def test_resume_and_overwrite_exclude_each_other(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="exclude each other"), RunDir.open(tmp_path, resume=True, overwrite=True):
        pass


SAVER = textwrap.dedent(
    """
    import sys, torch
    from recsys_embed.checkpoint import save_state
    step = 0
    while True:
        step += 1
        save_state(sys.argv[1], {"step": step, "w": torch.full((200_000,), float(step))})
        print(step, flush=True)
    """
)


def test_a_checkpoint_killed_at_any_moment_of_a_save_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint"
    for delay in (0.0, 0.003, 0.007, 0.013, 0.021):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        first = int(proc.stdout.readline())
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        state = load_state(path)
        assert state["step"] >= first and bool((state["w"] == state["step"]).all())
    names = sorted(p.name for p in path.iterdir())
    assert "current" in names and len(names) <= 3  # current, its folder, at most one partial folder
    save_state(path, {"step": 0})
    assert sorted(p.name for p in path.iterdir()) == ["current", os.readlink(path / "current")]


def test_synth_killed_mid_write_leaves_a_hidden_folder_that_the_next_run_removes(tmp_path: Path) -> None:
    out = tmp_path / "raw"
    proc = subprocess.Popen([*CLI, "synth", "ctr", "--rows", "3000000", "--out", str(out), "--row-group-size", "20000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    _wait_for(lambda: any(p.name.startswith(".raw.tmp-") and any(p.iterdir()) for p in tmp_path.iterdir()), proc)
    proc.kill()
    proc.wait()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".raw.tmp-")]
    assert cli("synth", "ctr", "--rows", "500", "--out", out).code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]

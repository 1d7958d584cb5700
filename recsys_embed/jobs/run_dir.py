"""A training run's directory: one run at a time, an explicit choice about an earlier run's
state, and outputs that appear together or not at all.

``with RunDir.open(path, resume=..., overwrite=...) as run:`` (used by ``train`` and the
sequential job):

* **lock**: ``.lock`` holds the pid of the run using the directory; a second run is a
  :class:`~recsys_embed.errors.RunDirError` naming that pid. A lock whose process is gone
  (the run was killed) is taken over.
* **an earlier run**: a directory holding a ``checkpoint`` or outputs refuses a new run
  unless told: ``resume`` continues from the checkpoint, ``overwrite`` deletes the earlier
  run's checkpoint and outputs first.
* **outputs** (``model/``, ``metrics.json``, ``training_curves.png``) are written into
  ``run.staging`` (a hidden ``.outputs-PID`` folder) and moved in by ``run.commit()``, which
  first marks the staging folder complete. A kill during the moves is finished by the next
  run (roll forward); a staging folder never marked complete is removed (its outputs never
  appeared). The next run reports what it cleaned up, on stderr.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from recsys_embed.errors import RunDirError
from recsys_embed.files import alive, remove

LOCK = ".lock"
CHECKPOINT = "checkpoint"
OUTPUTS = ("model", "metrics.json", "training_curves.png")
STAGING = ".outputs-"
COMPLETE = "COMPLETE"
EARLIER_STATE = (CHECKPOINT, *OUTPUTS, "retrain")


def _holder(lock: Path) -> int | None:
    try:
        return int(lock.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def acquire(path: Path) -> Path:
    """Create ``path/.lock`` holding this pid; a live holder is a :class:`RunDirError`, a dead
    one's lock is taken over."""
    lock = path / LOCK
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid = _holder(lock)
            if pid is not None and pid != os.getpid() and alive(pid):
                raise RunDirError(
                    f"run directory {path} is in use by process {pid} (lock {lock}); wait for that run to end or choose another run_dir"
                ) from None
            lock.unlink(missing_ok=True)  # its holder is gone: a killed run
            continue
        with os.fdopen(fd, "w") as file:
            file.write(f"{os.getpid()}\n")
        return lock
    raise RunDirError(f"run directory {path}: could not take the lock {lock} (another run keeps taking it)")


def recover(path: Path) -> list[str]:
    """Finish or undo what a killed run left in ``path``; returns one line per thing done."""
    done = []
    for staging in sorted(path.glob(f"{STAGING}*")):
        if (staging / COMPLETE).exists():
            moved = _move_outputs(staging, path)
            done.append(f"finished moving the outputs {moved} of a run killed while saving them")
        else:
            done.append(f"removed {staging.name}, the unfinished outputs of a killed run")
        remove(staging)
    for partial in path.glob(".*.tmp*"):  # an earlier version's temporary files
        remove(partial)
        done.append(f"removed {partial.name}, a partial file of a killed run")
    return done


def _move_outputs(staging: Path, path: Path) -> list[str]:
    names = sorted(p.name for p in staging.iterdir() if p.name != COMPLETE)
    for name in names:
        remove(path / name)
        os.replace(staging / name, path / name)
    return names


@dataclass
class RunDir:
    path: Path
    resume: bool

    @property
    def staging(self) -> Path:
        """Where this run writes its outputs until :meth:`commit`."""
        return self.path / f"{STAGING}{os.getpid()}"

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    def commit(self) -> None:
        """Move the staged outputs in, replacing the earlier ones: mark the staging folder
        complete, then one rename per output (finished by the next run after a kill)."""
        (self.staging / COMPLETE).touch()
        _move_outputs(self.staging, self.path)
        remove(self.staging)

    @classmethod
    @contextmanager
    def open(cls, path: str | Path, resume: bool = False, overwrite: bool = False) -> Iterator[RunDir]:
        """Lock ``path`` (created if missing), clean up after killed runs, apply ``resume`` /
        ``overwrite`` to an earlier run's state; the lock and any uncommitted staging
        folder go on exit."""
        if resume and overwrite:
            raise RunDirError("--resume and --overwrite exclude each other: resume continues the earlier run, overwrite deletes it")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        lock = acquire(path)
        run = cls(path, resume)
        try:
            for line in recover(path):
                print(f"{path}: {line}", file=sys.stderr)
            earlier = [name for name in EARLIER_STATE if (path / name).exists()]
            if resume and not run.checkpoint.exists():
                raise RunDirError(f"run directory {path} holds no checkpoint to resume from; run without --resume")
            if earlier and not resume:
                if not overwrite:
                    raise RunDirError(
                        f"run directory {path} holds an earlier run ({', '.join(earlier)}); pass --resume to continue it "
                        "or --overwrite to replace it (Python: resume=True / overwrite=True)"
                    )
                for name in earlier:
                    remove(path / name)
            run.staging.mkdir()
            yield run
        finally:
            if (run.staging / COMPLETE).exists():  # interrupted inside commit: finish it
                _move_outputs(run.staging, path)
            remove(run.staging)
            lock.unlink(missing_ok=True)

"""Writing files so that nothing half-written is ever left under a final name.

:func:`writing` turns an ``OSError`` (disk full, no permission, file too large) raised while a
file is written into a :class:`~recsys_embed.errors.WriteError` naming that file, after
removing the partial temporary file or folder. :func:`write_text` writes a temporary sibling
and renames it over the final name (a rename within a folder is atomic on POSIX).
:func:`owned_sibling` names a temporary sibling after the process writing it
(``.NAME.KIND-PID-XXXXXXXX``), so that :func:`remove_leftovers` can tell a killed writer's
leftovers (its process is gone) from a running writer's.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "metrics.json"
    >>> write_text(path, '{"auc": 0.7}')
    >>> path.read_text(), sorted(p.name for p in path.parent.iterdir())
    ('{"auc": 0.7}', ['metrics.json'])
"""

from __future__ import annotations

import errno
import glob
import os
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from recsys_embed.errors import WriteError

_OS_ERROR = re.compile(r"os error (\d+)")


def temp_sibling(path: Path, kind: str = "tmp") -> Path:
    """A hidden name beside ``path`` for this process: ``.NAME.KIND-PID``."""
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}")


def owned_sibling(path: Path, kind: str) -> Path:
    """A fresh hidden name beside ``path`` owned by this process: ``.NAME.KIND-PID-XXXXXXXX``."""
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def leftovers(path: Path, kind: str) -> list[Path]:
    """The :func:`owned_sibling` names of ``path`` of kind ``kind`` whose process is gone."""
    found = []
    for sibling in path.parent.glob(f".{glob.escape(path.name)}.{kind}-*"):
        pid = sibling.name[len(f".{path.name}.{kind}-") :].split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not alive(int(pid)):
            found.append(sibling)
    return sorted(found)


def remove_leftovers(path: Path, kind: str = "tmp") -> list[Path]:
    """Remove the leftovers (:func:`leftovers`) of killed writers of ``path``; returns them."""
    found = leftovers(path, kind)
    for leftover in found:
        remove(leftover)
    return found


def remove(path: Path) -> None:
    """Remove a file, a link or a folder tree if it exists; what cannot be removed stays.

    Not ``shutil.rmtree``: in Python 3.11 a Ctrl-C between its ``os.close(fd)`` and the flag
    that records it makes its ``finally`` close the descriptor again, and the ``EBADF`` error
    replaces the ``KeyboardInterrupt`` (a run interrupted while a checkpoint save removed the
    previous state ended as "error: Bad file descriptor")."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        for root, folders, files in os.walk(path, topdown=False):
            for name in files:
                _quietly(os.unlink, os.path.join(root, name))
            for name in folders:  # links to folders are listed here and not followed
                folder = os.path.join(root, name)
                _quietly(os.unlink if os.path.islink(folder) else os.rmdir, folder)
        _quietly(os.rmdir, path)
    elif path.exists() or path.is_symlink():
        _quietly(os.unlink, path)


def _quietly(operation: Callable[[str | Path], object], path: str | Path) -> None:
    try:
        operation(path)
    except OSError:
        pass


@contextmanager
def writing(target: Path, partial: Path | None = None) -> Iterator[None]:
    """Inside: write ``target`` (through ``partial``, its temporary file or folder). An
    ``OSError``, or an error of a writer library that reports one by its ``os error N``
    (safetensors), becomes a :class:`WriteError` naming ``target``; ``partial`` is removed on
    any exception, Ctrl-C included."""
    try:
        yield
    except WriteError:
        _remove_partial(partial)
        raise
    except OSError as err:
        _remove_partial(partial)
        number = err.errno or errno.EIO
        raise WriteError(number, os.strerror(number) if err.errno else str(err), str(target)) from err
    except BaseException as err:
        _remove_partial(partial)
        code = _OS_ERROR.search(str(err))
        if code and not isinstance(err, (KeyboardInterrupt, SystemExit)):
            number = int(code.group(1))
            raise WriteError(number, os.strerror(number), str(target)) from err
        raise


def _remove_partial(partial: Path | None) -> None:
    if partial is not None:
        remove(partial)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary sibling and a rename."""
    path = Path(path)
    tmp = temp_sibling(path)
    with writing(path, tmp):
        tmp.write_text(text)
        tmp.replace(path)

"""Read ahead: a background thread produces the next items of an iterator while the caller
works on the current one. Parquet decoding releases the GIL, so on two cores reading the
next record batch overlaps with counting or encoding the current one.

A read-ahead thread still running when the interpreter exits (its consumer abandoned on
Ctrl-C, say, and not yet collected) is stopped and joined at exit: a daemon thread cut off
inside pyarrow's C++ code aborts the process ("terminate called without an active exception").

    >>> list(prefetch(iter(range(5))))
    [0, 1, 2, 3, 4]
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Iterator
from queue import Empty, Full, Queue
from typing import TypeVar

T = TypeVar("T")
_DONE = object()
_RUNNING: dict[threading.Thread, threading.Event] = {}  # read-ahead threads and their stop signals


@atexit.register
def _stop_running() -> None:
    running = list(_RUNNING.items())
    for _, stop in running:  # all first: an outer thread may be waiting on an inner one
        stop.set()
    for thread, _ in running:
        thread.join(timeout=10)


def prefetch(items: Iterator[T], depth: int = 1) -> Iterator[T]:
    """Yield the items of ``items``, produced up to ``depth`` items ahead in a daemon thread.
    An exception raised while producing is raised here, at the item it replaced; closing
    this generator early stops the thread."""
    queue: Queue = Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: object) -> bool:
        while not stop.is_set():
            try:
                queue.put(entry, timeout=0.05)
                return True
            except Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_DONE, None))
        except BaseException as err:  # handed to the consumer, raised there
            put((_DONE, err))

    thread = threading.Thread(target=produce, name="recsys-embed-prefetch", daemon=True)
    _RUNNING[thread] = stop
    thread.start()
    try:
        while True:
            try:
                item, err = queue.get(timeout=0.05)
            except Empty:
                if thread.is_alive() or not queue.empty():
                    continue
                return  # stopped at exit: the thread ends with a _DONE entry otherwise
            if item is _DONE:
                if err is not None:
                    raise err
                return
            yield item
    finally:
        stop.set()
        thread.join()
        _RUNNING.pop(thread, None)

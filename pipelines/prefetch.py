"""Read ahead: a background thread produces the next items of an iterator while the caller
works on the current one. Parquet decoding releases the GIL, so on two cores reading the
next record batch overlaps with counting or encoding the current one.

    >>> list(prefetch(iter(range(5))))
    [0, 1, 2, 3, 4]
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from queue import Full, Queue
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


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
    thread.start()
    try:
        while True:
            item, err = queue.get()  # the thread always ends with a _DONE entry unless stopped
            if item is _DONE:
                if err is not None:
                    raise err
                return
            yield item
    finally:
        stop.set()
        thread.join()

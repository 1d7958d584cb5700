"""Sequential-recommendation files of one user per line: ``user_id item_id item_id ...``.

The format of many sequential-recommendation repositories (SASRec, S3-Rec, ICLRec: e.g. their
Amazon ``Beauty.txt``): integers separated by spaces, the user first, then the user's items
oldest first. :func:`read_user_lines` turns it into the events every sequential job reads,
``user_id, item_id, timestamp`` with ``timestamp`` the item's position on its line (0, 1, ...),
so the order of the file is the order of the sequence and there are no ties to break.

Blank lines are skipped. A token that is not an integer, a user on two lines, or a file that is
not in this format (a header, commas, tabs, binary data) is a ``ValueError`` naming the file,
the line (1-based) and what was expected. Users with too few items for a split are dropped by
the sequential job (``min_length``), which counts them in its summary.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl

FORMAT = "one user per line: 'user_id item_id item_id ...', integers separated by spaces, items oldest first"
_LINE = re.compile(rb" *(-?[0-9]+(?: +-?[0-9]+)*) *\r?\n?")


def read_user_lines(path: str | Path) -> pl.LazyFrame:
    """Events ``user_id, item_id, timestamp`` (Int64; ``timestamp``: the item's position on
    its line) of a one-user-per-line file (see the module docstring), in file order.

    Example::

        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "seq.txt"
        >>> _ = path.write_text("1 10 11 12\\n\\n2 11 13\\n")
        >>> read_user_lines(path).collect().rows()
        [(1, 10, 0), (1, 11, 1), (1, 12, 2), (2, 11, 0), (2, 13, 1)]
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    users: list[int] = []
    lengths: list[int] = []
    items: list[np.ndarray] = []
    first_line: dict[int, int] = {}
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            if not _LINE.fullmatch(line):
                raise ValueError(f"{path}:{number}: {_what_is_wrong(line)}; expected {FORMAT}")
            tokens = np.array(line.split(), dtype=np.int64)
            user = int(tokens[0])
            if user in first_line:
                raise ValueError(f"{path}:{number}: user {user} already had line {first_line[user]}; expected {FORMAT}")
            first_line[user] = number
            users.append(user)
            lengths.append(tokens.size - 1)
            items.append(tokens[1:])
    counts = np.asarray(lengths, dtype=np.int64)
    positions = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    return pl.LazyFrame({
        "user_id": np.repeat(np.asarray(users, dtype=np.int64), counts),
        "item_id": np.concatenate(items) if items else np.zeros(0, np.int64),
        "timestamp": positions,
    })  # fmt: skip


def _what_is_wrong(line: bytes) -> str:
    """Words for a line :data:`_LINE` refused: binary data, other separators, or the first
    token that is not an integer."""
    try:
        text = line.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        return "not a text line (binary data: is this a Parquet or compressed file?)"
    for separator, name in ((",", "commas"), ("\t", "tabs"), (";", "semicolons"), ("::", "'::'")):
        if separator in text:
            return f"fields separated by {name} in {text[:80]!r}"
    for token in text.split():
        if not re.fullmatch(r"-?[0-9]+", token):
            return f"token {token[:40]!r} is not an integer id"
    return f"unexpected spacing in {text[:80]!r}"

"""Row blocks that fit in a core's cache, for layers whose work is elementwise or row by row.

On CPU, an elementwise op over a large ``[N, H]`` tensor streams it from main memory and a fresh
output of tens of MB pays a page fault per 4 KB page; the same ops over blocks of about
:data:`BLOCK_ELEMENTS` values stay in L2 and reuse their freed memory. Other devices get one block.
"""

from __future__ import annotations

import torch

BLOCK_ELEMENTS = 1 << 16  # 256 KB of float32 per block


def row_blocks(rows: int, width: int, device: torch.device, elements: int = BLOCK_ELEMENTS) -> list[slice]:
    """Slices covering ``range(rows)``: on CPU in blocks of about ``elements // width`` rows (at
    least one), elsewhere in one block.

    Example::

        >>> row_blocks(5, 4, torch.device("cpu"), elements=8)
        [slice(0, 2, None), slice(2, 4, None), slice(4, 5, None)]
    """
    step = max(1, elements // max(1, width)) if device.type == "cpu" else max(1, rows)
    return [slice(start, min(start + step, rows)) for start in range(0, rows, step)]

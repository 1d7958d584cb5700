"""The compiled CPU kernels (``models/layers/field_attention.cpp``, ``models/layers/dice.cpp``,
``recsys_embed/compression/kernels.cpp``), built by ``setup.py`` on x86-64: importing one
registers its ops under ``torch.ops.recsys_embed``."""

from __future__ import annotations

import importlib
import importlib.util

import torch


def load_kernel(module: str) -> bool:
    """Import the compiled module ``module`` (e.g. ``recsys_embed.models.layers._dice``); whether it
    is there and the CPU runs its AVX2 code (False: the caller runs its Python path).

    >>> load_kernel("recsys_embed.compression._no_such_kernel")
    False
    """
    if importlib.util.find_spec(module) is None:
        return False
    importlib.import_module(module)
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")

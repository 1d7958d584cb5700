"""The compiled CPU kernels of the layers (``field_attention.cpp``, ``dice.cpp``), built by
``setup.py`` on x86-64: importing one registers its ops under ``torch.ops.recsys_embed``."""

from __future__ import annotations

import importlib
import importlib.util

import torch


def load_kernel(module: str) -> bool:
    """Import the compiled module ``recsys_embed.models.layers.<module>``; whether it is there and
    the CPU runs its AVX2 code (False: the layer runs its Python path)."""
    name = f"recsys_embed.models.layers.{module}"
    if importlib.util.find_spec(name) is None:
        return False
    importlib.import_module(name)
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")

"""Training checkpoints without pickle: nested state (module and optimizer state dicts,
RNG states, counters) is flattened into safetensors tensors plus a JSON tree.

A checkpoint directory holds ``state.safetensors`` and ``state.json``; it is written to a
temporary sibling and renamed, so a kill mid-write never leaves a half checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

_TENSOR = "__tensor__"


def _flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = prefix or "root"
        tensors[key] = obj.detach().cpu().contiguous()
        return {_TENSOR: key}
    if isinstance(obj, dict):
        return {"__dict__": [[_flatten(k, f"{prefix}.k{i}", tensors), _flatten(v, f"{prefix}.{i}", tensors)] for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, (list, tuple)):
        items = [_flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"checkpoint: cannot store {type(obj).__name__} at {prefix!r} (only tensors, numbers, strings, lists, dicts)")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if _TENSOR in obj:
            return tensors[obj[_TENSOR]]
        if "__dict__" in obj:
            return {_unflatten(k, tensors): _unflatten(v, tensors) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` (a tree of tensors, numbers, strings, lists and dicts) atomically."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    tree = _flatten(state, "", tensors)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors, str(tmp / "state.safetensors"))
    (tmp / "state.json").write_text(json.dumps(tree))
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a state written by :func:`save_state`."""
    path = Path(path)
    for name in ("state.json", "state.safetensors"):
        if not (path / name).is_file():
            raise FileNotFoundError(f"checkpoint {path} has no {name}; is it a recsys-embed checkpoint?")
    tensors = load_file(str(path / "state.safetensors"))
    return _unflatten(json.loads((path / "state.json").read_text()), tensors)

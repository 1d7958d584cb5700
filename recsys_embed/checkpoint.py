"""Training checkpoints without pickle: nested state (module and optimizer state dicts,
RNG states, counters) is flattened into safetensors tensors plus a JSON tree.

A checkpoint is a folder: ``current`` in it is a relative symbolic link to the subfolder
holding ``state.safetensors`` and ``state.json`` (``data-PID-XXXXXXXX``), replaced in one
atomic rename once the new subfolder is complete. A kill at any moment therefore leaves the
checkpoint naming a complete state, the new one or the one before (and at most an
unreferenced subfolder, removed by the next save). A disk that fills up mid-write is a
:class:`~recsys_embed.errors.WriteError` naming the checkpoint, with the partial subfolder
removed and the previous state still in place. (Checkpoints of earlier versions, the two
files directly in the folder, still load.)
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from recsys_embed.files import remove, writing

_TENSOR = "__tensor__"
CURRENT = "current"


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
    """Write ``state`` (a tree of tensors, numbers, strings, lists and dicts) into the
    checkpoint folder ``path`` atomically: it names the previous state until the new one is
    complete."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    tree = _flatten(state, "", tensors)
    path.mkdir(parents=True, exist_ok=True)
    data = path / f"data-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with writing(path, data):
        data.mkdir()
        save_file(tensors, str(data / "state.safetensors"))
        (data / "state.json").write_text(json.dumps(tree))
        link = data / f".{CURRENT}"  # made inside the new subfolder, so a kill leaves nothing else behind
        link.symlink_to(data.name)  # relative: resolved from where the link is, once moved: ``path``
        os.replace(link, path / CURRENT)
    for stale in path.iterdir():  # earlier states, leftovers of killed saves
        if stale.name not in (CURRENT, data.name):
            remove(stale)


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a state written by :func:`save_state`."""
    path = Path(path)
    folder = path / CURRENT if (path / CURRENT).is_symlink() else path
    for name in ("state.json", "state.safetensors"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"checkpoint {path} has no {name}; is it a recsys-embed checkpoint?")
    tensors = load_file(str(folder / "state.safetensors"))
    return _unflatten(json.loads((folder / "state.json").read_text()), tensors)

"""Portable artifacts: tensors in safetensors, everything else in a JSON manifest.

An artifact is a directory holding ``tensors.safetensors`` and ``manifest.json``. The
manifest records the format version, the library, torch, fbgemm and torchrec versions, the
name, dtype and shape of every tensor, and whatever the caller adds (schema, fitted
pipeline state, table layout and its config, model name and config). It is written into a
temporary sibling directory and renamed, so a crash never leaves half an artifact, and it
loads without unpickling anything.

Example::

    >>> import tempfile, torch
    >>> path = Path(tempfile.mkdtemp()) / "model"
    >>> _ = save_artifact(path, {"w": torch.ones(2, 3)}, {"layout": {"name": "per_feature"}})
    >>> tensors, manifest = load_artifact(path)
    >>> tensors["w"].shape, manifest["layout"], manifest["tensors"]["w"]
    (torch.Size([2, 3]), {'name': 'per_feature'}, {'dtype': 'float32', 'shape': [2, 3]})
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import recsys_embed

FORMAT_VERSION = 1
TENSORS_FILE = "tensors.safetensors"
MANIFEST_FILE = "manifest.json"
RESERVED_KEYS = ("format_version", "versions", "tensors")


def _version(distributions: tuple[str, ...]) -> str | None:
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def versions() -> dict[str, str | None]:
    """The versions an artifact written now records."""
    return {
        "recsys_embed": recsys_embed.__version__,
        "torch": torch.__version__,
        "fbgemm_gpu": _version(("fbgemm-gpu-cpu", "fbgemm-gpu", "fbgemm-gpu-nightly", "fbgemm-gpu-nightly-cpu")),
        "torchrec": _version(("torchrec", "torchrec-nightly")),
    }


def _dtype_name(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def save_artifact(path: str | Path, tensors: Mapping[str, torch.Tensor], manifest: Mapping[str, Any]) -> Path:
    """Write ``tensors`` and ``manifest`` (JSON-serialisable; keys ``format_version``,
    ``versions`` and ``tensors`` are filled in here) to directory ``path``, replacing an
    artifact already there. Returns ``path``."""
    path = Path(path)
    taken = [k for k in RESERVED_KEYS if k in manifest]
    if taken:
        raise ValueError(f"save_artifact: manifest keys {taken} are written by save_artifact; rename them")
    not_tensors = [k for k, v in tensors.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise TypeError(f"save_artifact: values of {not_tensors} are not tensors")
    stored = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    full = {
        "format_version": FORMAT_VERSION,
        "versions": versions(),
        "tensors": {k: {"dtype": _dtype_name(v), "shape": list(v.shape)} for k, v in stored.items()},
        **manifest,
    }
    try:
        text = json.dumps(full, indent=2)
    except TypeError as err:
        raise TypeError(f"save_artifact: the manifest must be JSON-serialisable: {err}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp, old = path.with_name(f".{path.name}.tmp-{tag}"), path.with_name(f".{path.name}.old-{tag}")
    tmp.mkdir()
    try:
        # safetensors refuses tensors that share storage: clone views into a larger buffer
        save_file({k: v.clone() if v.untyped_storage().nbytes() != v.nbytes else v for k, v in stored.items()},
                  str(tmp / TENSORS_FILE))
        (tmp / MANIFEST_FILE).write_text(text)
        if path.exists():
            path.rename(old)
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not path.exists():
            old.rename(path)  # put the previous artifact back
        raise
    shutil.rmtree(old, ignore_errors=True)
    return path


def load_artifact(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read an artifact written by :func:`save_artifact`: ``(tensors, manifest)``.

    A missing file, a manifest that is not JSON or comes from a newer format version, and a
    tensor missing, extra or of another dtype or shape than the manifest declares are
    ``ValueError``\\ s naming the file and the tensor.
    """
    path = Path(path)
    for name in (MANIFEST_FILE, TENSORS_FILE):
        if not (path / name).is_file():
            raise ValueError(f"artifact {path}: {name} is missing; is this a recsys-embed artifact directory?")
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"artifact {path}: {MANIFEST_FILE} is not valid JSON: {err}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("tensors"), dict):
        raise ValueError(f"artifact {path}: {MANIFEST_FILE} has no 'tensors' table; it was not written by save_artifact")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"artifact {path}: format_version {version!r} is newer than this recsys-embed reads ({FORMAT_VERSION}); "
            f"it was written by recsys-embed {manifest.get('versions', {}).get('recsys_embed')!r}: upgrade to load it"
        )
    try:
        tensors = load_file(str(path / TENSORS_FILE))
    except SafetensorError as err:
        raise ValueError(f"artifact {path}: {TENSORS_FILE} is not a valid safetensors file: {err}") from None
    declared: dict[str, Any] = manifest["tensors"]
    missing, extra = sorted(set(declared) - set(tensors)), sorted(set(tensors) - set(declared))
    if missing or extra:
        raise ValueError(f"artifact {path}: {TENSORS_FILE} lacks tensors {missing} and has undeclared tensors {extra}")
    for key, spec in declared.items():
        got = {"dtype": _dtype_name(tensors[key]), "shape": list(tensors[key].shape)}
        if got != {"dtype": spec.get("dtype"), "shape": spec.get("shape")}:
            raise ValueError(f"artifact {path}: tensor {key!r} is {got} but {MANIFEST_FILE} declares {spec}")
    return tensors, manifest

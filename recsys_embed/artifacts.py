"""Portable artifacts: tensors in safetensors, Arrow arrays, everything else in a JSON manifest.

An artifact is a directory holding ``tensors.safetensors``, ``manifest.json`` and, when the
caller stores string arrays, ``arrays.arrow``. The manifest records the format version, the
library, torch, fbgemm and torchrec versions, the name, dtype and shape of every tensor, the
name, type, length and file of every array, and whatever the caller adds (schema, fitted
pipeline state, table layout and its config, model name and config). Integer arrays without
nulls (integer vocabularies) are 1-d tensors of the safetensors file; string arrays are record
batches of one column in an Arrow IPC file, read memory-mapped. The directory is written into
a temporary sibling and renamed, so a crash never leaves half an artifact, and it loads
without unpickling anything (safetensors, Arrow IPC and JSON only).

Tamper evidence (format 3): the manifest's ``checksums`` record the SHA-256 of each data file
and of each other manifest section (its JSON with sorted keys). Loading recomputes them and
names the file or section that differs (an :class:`~recsys_embed.errors.IntegrityError`), and
refuses floating-point tensors holding NaN or infinity whatever the format. Artifacts of
formats 1 and 2 carry no checksums and load without that check; a format-3 manifest without
them is refused. The checksums catch corruption and accidental edits, not a deliberate forger
(who can recompute them): they are no signature.

Example::

    >>> import tempfile, torch, pyarrow as pa
    >>> path = Path(tempfile.mkdtemp()) / "model"
    >>> arrays = {"ids": pa.array([7, 3]), "names": pa.array(["b", "é"])}
    >>> _ = save_artifact(path, {"w": torch.ones(2, 3)}, {"layout": {"name": "per_feature"}}, arrays)
    >>> tensors, manifest = load_artifact(path)
    >>> tensors["w"].shape, manifest["layout"], manifest["tensors"]["w"]
    (torch.Size([2, 3]), {'name': 'per_feature'}, {'dtype': 'float32', 'shape': [2, 3]})
    >>> {name: array.to_pylist() for name, array in load_arrays(path, manifest).items()}
    {'ids': [7, 3], 'names': ['b', 'é']}
    >>> manifest["arrays"]["names"]
    {'type': 'large_string', 'length': 2, 'file': 'arrays.arrow', 'batch': 0}
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

import recsys_embed
from recsys_embed.errors import ArtifactError, IntegrityError
from recsys_embed.files import remove, writing

FORMAT_VERSION = 3  # 3: checksums; 2: arrays (integer ones in the safetensors file, strings in arrays.arrow); 1: tensors only
CHECKSUMS = "checksums"
TENSORS_FILE = "tensors.safetensors"
MANIFEST_FILE = "manifest.json"
ARRAYS_FILE = "arrays.arrow"
RESERVED_KEYS = ("format_version", "versions", "tensors", "arrays", CHECKSUMS)
STRING = pa.large_string()


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


def _split_arrays(arrays: Mapping[str, pa.Array], tensors: Mapping[str, torch.Tensor]) -> tuple[
    dict[str, torch.Tensor], list[pa.Array], dict[str, dict[str, Any]]
]:  # fmt: skip
    """``(integer arrays as tensors, string arrays cast to large_string, their manifest entries)``."""
    as_tensors: dict[str, torch.Tensor] = {}
    strings: list[pa.Array] = []
    declared: dict[str, dict[str, Any]] = {}
    for name, array in arrays.items():
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        if not isinstance(array, pa.Array):
            raise TypeError(f"save_artifact: array {name!r} is a {type(array).__name__}, not a pyarrow Array")
        if name in tensors:
            raise ValueError(f"save_artifact: {name!r} names both a tensor and an array; rename one")
        if pa.types.is_integer(array.type) and array.null_count == 0:
            as_tensors[name] = torch.from_numpy(array.to_numpy().copy())  # Arrow buffers are read-only
            declared[name] = {"type": str(array.type), "length": len(array), "file": TENSORS_FILE}
        elif pa.types.is_string(array.type) or pa.types.is_large_string(array.type) or pa.types.is_string_view(array.type):
            declared[name] = {"type": str(STRING), "length": len(array), "file": ARRAYS_FILE, "batch": len(strings)}
            strings.append(array.cast(STRING))
        else:
            raise TypeError(
                f"save_artifact: array {name!r} has type {array.type} (nulls: {array.null_count}); "
                "artifacts store integer arrays without nulls and string arrays"
            )
    return as_tensors, strings, declared


def _write_strings(path: Path, strings: list[pa.Array]) -> None:
    schema = pa.schema([pa.field("values", STRING)])
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for array in strings:
            writer.write_batch(pa.record_batch([array], schema=schema))


def save_artifact(
    path: str | Path,
    tensors: Mapping[str, torch.Tensor],
    manifest: Mapping[str, Any],
    arrays: Mapping[str, pa.Array] | None = None,
) -> Path:
    """Write ``tensors``, ``arrays`` and ``manifest`` (JSON-serialisable; keys
    ``format_version``, ``versions``, ``tensors`` and ``arrays`` are filled in here) to
    directory ``path``, replacing an artifact already there. ``arrays`` hold integers without
    nulls or strings (read back by :func:`load_arrays`). Returns ``path``."""
    path = Path(path)
    taken = [k for k in RESERVED_KEYS if k in manifest]
    if taken:
        raise ValueError(f"save_artifact: manifest keys {taken} are written by save_artifact; rename them")
    not_tensors = [k for k, v in tensors.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise TypeError(f"save_artifact: values of {not_tensors} are not tensors")
    stored = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    array_tensors, strings, declared_arrays = _split_arrays(arrays or {}, stored)
    full = {
        "format_version": FORMAT_VERSION,
        "versions": versions(),
        "tensors": {k: {"dtype": _dtype_name(v), "shape": list(v.shape)} for k, v in stored.items()},
        "arrays": declared_arrays,
        **manifest,
    }
    try:
        sections = {key: _digest_section(value) for key, value in full.items()}
    except TypeError as err:
        raise TypeError(f"save_artifact: the manifest must be JSON-serialisable: {err}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp, old = path.with_name(f".{path.name}.tmp-{tag}"), path.with_name(f".{path.name}.old-{tag}")
    tmp.mkdir()
    try:
        # safetensors refuses tensors that share storage: clone views into a larger buffer
        to_file = {**stored, **array_tensors}
        with writing(path / TENSORS_FILE):
            save_file({k: v.clone() if v.untyped_storage().nbytes() != v.nbytes else v for k, v in to_file.items()},
                      str(tmp / TENSORS_FILE))
        if strings:
            with writing(path / ARRAYS_FILE):
                _write_strings(tmp / ARRAYS_FILE, strings)
        files = {name: _digest_file(tmp / name) for name in (TENSORS_FILE, ARRAYS_FILE) if (tmp / name).exists()}
        text = json.dumps({**full, CHECKSUMS: {"files": files, "sections": sections}}, indent=2)
        with writing(path / MANIFEST_FILE):
            (tmp / MANIFEST_FILE).write_text(text)
        if path.exists():
            path.rename(old)
        tmp.rename(path)
    except BaseException:
        remove(tmp)
        if old.exists() and not path.exists():
            old.rename(path)  # put the previous artifact back
        raise
    remove(old)
    return path


def load_artifact(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read the tensors and manifest of an artifact written by :func:`save_artifact`:
    ``(tensors, manifest)``; its arrays come from :func:`load_arrays`.

    A missing file, a manifest that is not JSON or comes from another format version, and a
    tensor missing, extra or of another dtype or shape than the manifest declares are
    ``ValueError``\\ s naming the file and the tensor.
    """
    path = Path(path)
    for name in (MANIFEST_FILE, TENSORS_FILE):
        if not (path / name).is_file():
            raise ArtifactError(f"artifact {path}: {name} is missing; is this a recsys-embed artifact directory?")
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text())
    except json.JSONDecodeError as err:
        raise ArtifactError(f"artifact {path}: {MANIFEST_FILE} is not valid JSON: {err}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("tensors"), dict):
        raise ArtifactError(f"artifact {path}: {MANIFEST_FILE} has no 'tensors' table; it was not written by save_artifact")
    version = manifest.get("format_version")
    writer = manifest.get("versions", {}).get("recsys_embed")
    if isinstance(version, bool):
        version = repr(version)  # JSON true is no version number
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise ArtifactError(
            f"artifact {path}: format_version {version} is newer than this recsys-embed reads ({FORMAT_VERSION}); "
            f"it was written by recsys-embed {writer!r}: upgrade to load it"
        )
    if not isinstance(version, int) or version < 1:
        raise ArtifactError(f"artifact {path}: format_version {version!r} is not one this recsys-embed reads (1 to {FORMAT_VERSION})")
    declared: dict[str, Any] = manifest["tensors"]
    in_file = {name for name, spec in _declared_arrays(path, manifest).items() if spec["file"] == TENSORS_FILE}
    try:
        with safe_open(str(path / TENSORS_FILE), framework="pt") as file:
            keys = set(file.keys())
            missing, extra = sorted((set(declared) | in_file) - keys), sorted(keys - set(declared) - in_file)
            if missing or extra:
                raise ArtifactError(f"artifact {path}: {TENSORS_FILE} lacks tensors {missing} and has undeclared tensors {extra}")
            tensors = {key: file.get_tensor(key) for key in declared}
    except SafetensorError as err:
        raise ArtifactError(f"artifact {path}: {TENSORS_FILE} is not a valid safetensors file: {err}") from None
    for key, spec in declared.items():
        got = {"dtype": _dtype_name(tensors[key]), "shape": list(tensors[key].shape)}
        if got != {"dtype": spec.get("dtype"), "shape": spec.get("shape")}:
            raise ArtifactError(f"artifact {path}: tensor {key!r} is {got} but {MANIFEST_FILE} declares {spec}")
    _verify_checksums(path, manifest, version, TENSORS_FILE)
    for key in declared:
        if tensors[key].is_floating_point():
            bad = int((~torch.isfinite(tensors[key])).sum())
            if bad:
                raise IntegrityError(f"artifact {path}: tensor {key!r} holds {bad} NaN or infinite values; a saved model has finite weights")
    return tensors, manifest


def _digest_file(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _digest_section(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _verify_checksums(path: Path, manifest: Mapping[str, Any], version: int, file: str) -> None:
    """Recompute the checksums recorded at save (see the module docstring) of ``file`` (and,
    for the tensors file, of the manifest's sections); name what differs."""
    sums = manifest.get(CHECKSUMS)
    if sums is None and version < 3:
        return  # formats 1 and 2 recorded none
    well_formed = isinstance(sums, dict) and all(
        isinstance(sums.get(part), dict) and all(isinstance(v, str) for v in sums[part].values()) for part in ("files", "sections")
    )  # fmt: skip
    if not well_formed:
        raise IntegrityError(
            f"artifact {path}: {MANIFEST_FILE} of format {version} has no well-formed {CHECKSUMS!r} "
            "(files and sections, name -> sha256); it was edited after save"
        )
    if file not in sums["files"]:
        raise IntegrityError(f"artifact {path}: {MANIFEST_FILE} records no checksum of {file}; it was edited after save")
    if _digest_file(path / file) != sums["files"][file]:
        raise IntegrityError(f"artifact {path}: {file} differs from the checksum recorded at save; the file was edited or corrupted")
    if file != TENSORS_FILE:
        return
    sections = {key: value for key, value in manifest.items() if key != CHECKSUMS}
    added, removed = sorted(set(sections) - set(sums["sections"])), sorted(set(sums["sections"]) - set(sections))
    if added or removed:
        raise IntegrityError(f"artifact {path}: {MANIFEST_FILE} sections {added} were added and {removed} removed after save")
    for key, value in sections.items():
        if _digest_section(value) != sums["sections"][key]:
            raise IntegrityError(f"artifact {path}: {MANIFEST_FILE} section {key!r} differs from the checksum recorded at save; it was edited")


def _declared_arrays(path: Path, manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The manifest's ``arrays`` table, checked for shape (format 1 artifacts have none)."""
    declared = manifest.get("arrays", {})
    good = isinstance(declared, dict) and all(
        isinstance(spec, dict) and isinstance(spec.get("length"), int) and isinstance(spec.get("type"), str)
        and (spec.get("file") == TENSORS_FILE or (spec.get("file") == ARRAYS_FILE and isinstance(spec.get("batch"), int)))
        for spec in declared.values()
    )  # fmt: skip
    batches = sorted(spec["batch"] for spec in declared.values() if good and spec["file"] == ARRAYS_FILE)
    if not good or batches != list(range(len(batches))):
        raise ArtifactError(
            f"artifact {path}: {MANIFEST_FILE} has a malformed 'arrays' table (expected name -> "
            f"{{type, length, file: {TENSORS_FILE!r} or {ARRAYS_FILE!r} with its batch}})"
        )
    return declared


def load_arrays(path: str | Path, manifest: Mapping[str, Any]) -> dict[str, pa.Array]:
    """The arrays of the artifact at ``path`` whose manifest (from :func:`load_artifact`) is
    ``manifest``: integer arrays read from the safetensors file, string arrays memory-mapped
    from the Arrow IPC file and fully validated (offsets in bounds, UTF-8). A missing file, and
    an array missing or of another type or length than declared, are ``ValueError``\\ s naming
    the file and the array."""
    path = Path(path)
    declared = _declared_arrays(path, manifest)
    out: dict[str, pa.Array] = {}
    with_tensors = [name for name, spec in declared.items() if spec["file"] == TENSORS_FILE]
    if with_tensors:
        try:
            with safe_open(str(path / TENSORS_FILE), framework="numpy") as file:
                out.update({name: pa.array(file.get_tensor(name)) for name in with_tensors})
        except (SafetensorError, OSError, pa.ArrowException) as err:  # e.g. a tensor of 2 dimensions
            raise ArtifactError(f"artifact {path}: {TENSORS_FILE} holds no 1-d arrays {with_tensors}: {err}") from None
    with_strings = {spec["batch"]: name for name, spec in declared.items() if spec["file"] == ARRAYS_FILE}
    if with_strings:
        out.update(_read_strings(path, with_strings))
    for name, spec in declared.items():
        got = {"type": str(out[name].type), "length": len(out[name])}
        if got != {"type": spec["type"], "length": spec["length"]}:
            file = spec["file"]
            raise ArtifactError(f"artifact {path}: array {name!r} in {file} is {got} but {MANIFEST_FILE} declares {spec}")
    if with_strings:
        version = manifest.get("format_version")
        _verify_checksums(path, manifest, version if isinstance(version, int) else FORMAT_VERSION, ARRAYS_FILE)
    return out


def _read_strings(path: Path, names: dict[int, str]) -> dict[str, pa.Array]:
    if not (path / ARRAYS_FILE).is_file():
        raise ArtifactError(f"artifact {path}: {ARRAYS_FILE} is missing; {MANIFEST_FILE} declares string arrays {sorted(names.values())} in it")
    try:
        reader = pa.ipc.open_file(pa.memory_map(str(path / ARRAYS_FILE)))
        if reader.schema != pa.schema([pa.field("values", STRING)]) or reader.num_record_batches != len(names):
            raise ArtifactError(
                f"artifact {path}: {ARRAYS_FILE} holds {reader.num_record_batches} batches of {reader.schema.types}; "
                f"{MANIFEST_FILE} declares {len(names)} batches of one {STRING} column"
            )
        out = {}
        for batch, name in names.items():
            array = reader.get_batch(batch).column(0)
            array.validate(full=True)
            out[name] = array
        return out
    except (pa.ArrowException, OSError, IndexError) as err:
        raise ArtifactError(f"artifact {path}: {ARRAYS_FILE} is not a valid Arrow IPC file of string arrays: {err}") from None

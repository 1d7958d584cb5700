"""File-to-file batch jobs (``score``, ``recommend``): inputs, the output directory and its
manifest, resume, and the local engine.

One output per input file: ``OUT/<the input's path below the inputs' common folder>``, written
as ``.<name>.tmp-<pid>`` and renamed when complete, so a file under its final name is always
whole (names starting with ``.`` or ``_`` are skipped by Parquet readers). After each rename
the manifest ``OUT/_manifest.json`` (replaced atomically) records the input's path, size,
mtime, row count, the model fingerprint and the job settings.

Resume rules (``resume=True``): an input is skipped when its manifest entry matches its path,
size and mtime, the model fingerprint and settings, and its output is still there with the
recorded size; anything else is redone. Leftover temporary files of a killed run are removed.
Without ``resume`` a non-empty output directory is an error.

A job (:class:`FileJob`) says which columns it reads, checks a file's schema, and turns one
file into output record batches; the engines (:func:`run_local`, ``score_ray.run_ray``) only
move files.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from recsys_embed.pipelines.sources import file_format, resolve_files

MANIFEST = "_manifest.json"
MANIFEST_FORMAT = "recsys-embed-batch-manifest"
READ_ERRORS = (ValueError, OSError, pa.ArrowException)


class SchemaMismatch(ValueError):
    """The input's columns do not fit the model: every missing or mistyped column, one message."""


class FileJob(Protocol):
    """What an engine runs: one Parquet file in, one Parquet file out."""

    fingerprint: str  # the model's
    settings: dict[str, Any]  # what else changes the output (recorded in the manifest)
    columns: list[str]  # the input columns read

    def check(self, schema: pa.Schema) -> list[str]:
        """Problems of an input schema (missing or mistyped columns), empty when it fits."""

    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        """The output schema for an input schema (written as is for an empty input)."""

    def outputs(self, path: Path, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """The output batches of one input file, in input order."""

    def output_rows(self, item: InputFile) -> int | None:
        """The output rows of an input file when known before running (one per input row)."""

    def ray_dataset(self, paths: list[str], options: Any, batch_rows: int) -> Any:
        """A Ray Data dataset of the output rows of ``paths`` in input order, each tagged with its
        input ``path`` (``options``: ``score_ray.RayOptions``)."""


@dataclass
class InputFile:
    """An input Parquet file with what its footer says (``error`` when it cannot be read)."""

    path: Path
    name: str  # output path relative to the output directory
    size: int
    mtime_ns: int
    rows: int = 0
    schema: pa.Schema | None = None
    error: str | None = None

    def entry(self, job: FileJob, output_size: int) -> dict[str, Any]:
        return {"input": str(self.path), "size": self.size, "mtime_ns": self.mtime_ns, "rows": self.rows,
                "model": job.fingerprint, "settings": job.settings, "output_size": output_size}


def input_files(source: str | os.PathLike[str]) -> list[InputFile]:
    """The Parquet files of a file, directory or glob, with their footers read (a file whose
    footer cannot be read gets ``error`` set, so the other files still run). No file at all
    is a ``ValueError``."""
    paths = [p.resolve() for p in resolve_files(source)]
    other = [str(p) for p in paths if file_format(p) != "parquet"]
    if other:
        raise ValueError(f"batch jobs read Parquet only; not Parquet: {other[:3]}")
    root = Path(os.path.commonpath([p.parent for p in paths]))
    files = []
    for path in paths:
        stat = path.stat()
        item = InputFile(path, str(path.relative_to(root)), stat.st_size, stat.st_mtime_ns)
        try:
            meta = pq.ParquetFile(path)
            item.rows, item.schema = meta.metadata.num_rows, meta.schema_arrow
        except READ_ERRORS as err:
            item.error = f"not a readable Parquet file (truncated or corrupt?): {err}"
        files.append(item)
    return files


def check_inputs(job: FileJob, files: list[InputFile]) -> None:
    """Raise :class:`SchemaMismatch` naming every readable file whose columns do not fit."""
    by_problem: dict[str, list[str]] = {}
    for item in files:
        if item.schema is not None:
            problems = job.check(item.schema)
            if problems:
                by_problem.setdefault("; ".join(problems), []).append(item.name)
    if by_problem:
        parts = [f"{names[0]}{f' (and {len(names) - 1} more files)' if len(names) > 1 else ''}: {problems}"
                 for problems, names in by_problem.items()]
        raise SchemaMismatch("the input does not fit the model's schema: " + " | ".join(parts))


class OutputDir:
    """The output directory, its manifest and the resume decisions."""

    def __init__(self, root: str | os.PathLike[str], resume: bool) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"output {self.root} is a file; expected a directory")
        if not resume and self.root.exists() and any(self.root.iterdir()):
            raise ValueError(f"output directory {self.root} is not empty; pass --resume (resume=True) to continue "
                             "the run that wrote it, or choose an empty directory")
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.rglob(".*.tmp-*"):  # a killed run's unfinished outputs
            stale.unlink()
        self.entries: dict[str, dict[str, Any]] = {}
        path = self.root / MANIFEST
        if path.exists():
            try:
                data = json.loads(path.read_text())
                assert data.get("format") == MANIFEST_FORMAT
                self.entries = dict(data["files"])
            except (ValueError, AssertionError, KeyError, AttributeError, TypeError):
                raise ValueError(f"{path} is not a manifest written by recsys-embed; remove it to redo every file") from None

    def done(self, item: InputFile, job: FileJob) -> bool:
        """Whether ``item``'s output is complete for this input, model and settings."""
        entry, output = self.entries.get(item.name), self.root / item.name
        return (entry is not None and output.is_file() and entry == item.entry(job, output.stat().st_size))

    def record(self, item: InputFile, job: FileJob) -> None:
        self.entries[item.name] = item.entry(job, (self.root / item.name).stat().st_size)
        tmp = self.root / f".{MANIFEST}.tmp-{os.getpid()}"
        tmp.write_text(json.dumps({"format": MANIFEST_FORMAT, "version": 1, "files": self.entries}, indent=1))
        os.replace(tmp, self.root / MANIFEST)


@dataclass
class FileResult:
    name: str
    status: str  # "written", "skipped" or "failed"
    rows: int = 0  # input rows
    output_rows: int = 0
    error: str | None = None


@dataclass
class RunReport:
    output: Path
    files: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0
    nodes: list[str] = field(default_factory=list)  # Ray node addresses (the Ray engine)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.files)

    @property
    def failed(self) -> list[FileResult]:
        return [r for r in self.files if r.status == "failed"]

    def summary(self) -> str:
        """``N rows in S s (R rows/s) -> M output rows: W files written, K skipped (already done), F failed -> OUT/``."""
        rows = sum(r.rows for r in self.files if r.status == "written")
        out = sum(r.output_rows for r in self.files if r.status == "written")
        line = (f"{rows:,} rows in {self.seconds:.1f} s ({rows / max(self.seconds, 1e-9):,.0f} rows/s) -> {out:,} output rows: "
                f"{self.count('written')} files written, {self.count('skipped')} skipped (already done), "
                f"{self.count('failed')} failed -> {self.output}/")
        return line + (f" on Ray nodes {', '.join(sorted(set(self.nodes)))}" if self.nodes else "")


class FileSink:
    """Writes one input's output under a temporary name; :meth:`commit` renames it and records
    it in the manifest, :meth:`abort` removes it. Advances ``bar`` by input rows."""

    def __init__(self, out: OutputDir, item: InputFile, job: FileJob, bar: tqdm) -> None:
        self.out, self.item, self.job, self.bar = out, item, job, bar
        self.final = out.root / item.name
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.final.with_name(f".{self.final.name}.tmp-{os.getpid()}")
        self.writer: pq.ParquetWriter | None = None
        self.rows = self.counted = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.tmp, batch.schema, write_page_checksum=True)
        self.writer.write_batch(batch)
        self.rows += batch.num_rows
        step = min(batch.num_rows, self.item.rows - self.counted)  # output rows never outnumber input rows
        self.counted += step
        self.bar.update(step)

    def commit(self) -> FileResult:
        if self.writer is None:  # an input without rows: an empty output with the schema
            assert self.item.schema is not None
            self.writer = pq.ParquetWriter(self.tmp, self.job.output_schema(self.item.schema), write_page_checksum=True)
        self.writer.close()
        os.replace(self.tmp, self.final)
        self.out.record(self.item, self.job)
        self.bar.update(self.item.rows - self.counted)
        return FileResult(self.item.name, "written", self.item.rows, self.rows)

    def abort(self, error: str) -> FileResult:
        if self.writer is not None:
            self.writer.close()
        self.tmp.unlink(missing_ok=True)
        named = error if str(self.item.path) in error else f"{self.item.path}: {error}"
        return FileResult(self.item.name, "failed", error=named)


def plan(job: FileJob, source: str | os.PathLike[str], output: str | os.PathLike[str], resume: bool
         ) -> tuple[OutputDir, list[InputFile], list[FileResult]]:
    """Resolve and check the inputs, open the output: ``(out, files to run, skipped or unreadable)``."""
    files = input_files(source)
    check_inputs(job, files)
    out = OutputDir(output, resume)
    todo, results = [], []
    for item in files:
        if item.error is not None:
            results.append(FileResult(item.name, "failed", error=f"{item.path}: {item.error}"))
        elif resume and out.done(item, job):
            results.append(FileResult(item.name, "skipped", item.rows))
        else:
            todo.append(item)
    return out, todo, results


def progress_bar(todo: list[InputFile], progress: bool) -> tqdm:
    return tqdm(total=sum(f.rows for f in todo), unit="row", unit_scale=True, desc="rows", disable=not progress, dynamic_ncols=True)


def run_local(job: FileJob, source: str | os.PathLike[str], output: str | os.PathLike[str], resume: bool = False,
              batch_rows: int = 8192, progress: bool = True) -> RunReport:
    """Run ``job`` over every input file in order, one output file each (see the module docstring)."""
    start = time.perf_counter()
    out, todo, results = plan(job, source, output, resume)
    with progress_bar(todo, progress) as bar:
        for item in todo:
            sink = FileSink(out, item, job, bar)
            try:
                for batch in job.outputs(item.path, batch_rows):
                    sink.write(batch)
                results.append(sink.commit())
            except READ_ERRORS as err:
                results.append(sink.abort(str(err).strip().splitlines()[0]))
            except BaseException:
                sink.abort("interrupted")
                raise
    return RunReport(out.root, sorted(results, key=lambda r: r.name), time.perf_counter() - start)

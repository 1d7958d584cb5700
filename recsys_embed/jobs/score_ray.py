"""The Ray Data engine of the batch jobs (``pip install recsys-embed[ray]``).

``score``: ``ray.data.read_parquet(files, columns, include_paths=True)`` ->
``map_batches(ScorerActor, compute=ActorPoolStrategy(size=actors), num_cpus=actor_cpus, batch_format="pyarrow")``
(``concurrency=`` is deprecated since Ray 2.51);
each actor loads the artifact once and runs torch with ``actor_cpus`` threads. ``recommend``
hands whole files to :class:`FileActor` s (a user's history needs all of the file's events).
Ray's ``write_parquet`` names files by uuid, so the driver writes instead: with
``preserve_order`` each file's rows come back in file order, and the driver cuts them by
their ``path`` column into one output per input file (:class:`PathSinks`), through the same
temporary-name, manifest and resume rules as the local engine
(:mod:`recsys_embed.jobs.score_files`). Scores equal the local engine's up to float32
rounding: a Ray batch may join rows of two files, which changes a batch's padded history
length and so the order of a few float sums.

Traps handled here: Ray Data waits forever when the actors hold every CPU (the read tasks need
one), so ``actors * actor_cpus <= num_cpus - 1`` is checked before anything starts; a local
instance starts in this process bound to 127.0.0.1 (never the machine's network address),
without dashboard or usage stats. With ``address`` the job joins an existing cluster instead,
whose workers must see the input files and the artifact at the same paths (shared storage);
only the driver writes the outputs.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from recsys_embed.jobs.score_files import FileJob, FileResult, FileSink, InputFile, OutputDir, RunReport, plan, progress_bar

OBJECT_STORE_BYTES = 1 << 30  # of a local instance


@dataclass
class RayOptions:
    """``address``: an existing cluster (``"auto"``, ``"ray://head:10001"``), or None for a
    local instance in this process with ``num_cpus`` CPUs (default: all of this machine's).
    ``actors`` scorer actors of ``actor_cpus`` CPUs (and torch threads) each."""

    address: str | None = None
    num_cpus: int | None = None
    actors: int = 1
    actor_cpus: int = 1

    def check_local(self) -> None:
        """:meth:`check` against the local instance's CPUs (nothing to check before joining a cluster)."""
        if self.address is None:
            self.check(self.num_cpus or os.cpu_count() or 1)

    def check(self, num_cpus: int) -> None:
        """Refuse actors that would leave Ray Data no CPU for its read tasks (it would hang)."""
        if self.actors < 1 or self.actor_cpus < 1:
            raise ValueError(f"actors and actor_cpus must be >= 1, got {self.actors} and {self.actor_cpus}")
        if self.actors * self.actor_cpus > num_cpus - 1:
            raise ValueError(
                f"{self.actors} actors x {self.actor_cpus} CPUs = {self.actors * self.actor_cpus} CPUs leave none of the "
                f"{num_cpus} for reading (Ray Data would wait forever); keep actors x actor_cpus <= {num_cpus - 1}"
            )


@contextmanager
def ray_session(options: RayOptions) -> Iterator[list[str]]:
    """Join ``options.address``, use the Ray already initialised in this process, or start a
    local instance on 127.0.0.1 (shut down on exit). Yields the alive nodes' addresses."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if options.address is None:  # else Ray resolves 127.0.0.1 to the machine's network address
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray
    import ray.data

    started = not ray.is_initialized()
    if started and options.address:
        ray.init(address=options.address, logging_level=logging.WARNING, log_to_driver=False)
    elif started:
        options.check_local()
        ray.init(num_cpus=options.num_cpus or os.cpu_count() or 1, include_dashboard=False, _node_ip_address="127.0.0.1", object_store_memory=OBJECT_STORE_BYTES,
                 logging_level=logging.WARNING, log_to_driver=False)  # fmt: skip
    try:
        options.check(int(ray.cluster_resources().get("CPU", 0)))
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        yield [node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"]]
    finally:
        if started:
            ray.shutdown()


def _quiet_torch(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)


class ScorerActor:
    """Ray Data callable class: builds the score job once (``make_job()``: loads the artifact),
    scores pyarrow batches that carry a ``path`` column."""

    def __init__(self, make_job: Callable[[], Any], threads: int) -> None:
        _quiet_torch(threads)
        self.job = make_job()

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = self.job.output(batch, self.job.scorer.score_table(batch))
        return pa.Table.from_batches([rows]).add_column(0, "path", batch.column("path"))


class FileActor:
    """Ray Data callable class: runs a whole-file job (``make_job()``) on batches of file paths."""

    def __init__(self, make_job: Callable[[], FileJob], threads: int, batch_rows: int) -> None:
        _quiet_torch(threads)
        self.job, self.batch_rows = make_job(), batch_rows

    def __call__(self, batch: pa.Table) -> pa.Table:
        parts = []
        for path in batch.column("path").to_pylist():
            for rows in self.job.outputs(Path(path), self.batch_rows):
                parts.append(pa.Table.from_batches([rows]).add_column(0, "path", pa.array([path] * rows.num_rows, pa.string())))
        return pa.concat_tables(parts) if parts else pa.table({"path": pa.array([], pa.string())})


class PathSinks:
    """The driver's writer: output rows arrive tagged with their input path, each file's rows in
    order (``preserve_order``), files possibly interleaved. A file is committed when its
    expected output rows (``job.output_rows``) are all written, or, when that count is unknown
    (a whole-file job, whose rows arrive together), when another file's rows or the end come."""

    def __init__(self, out: OutputDir, todo: list[InputFile], job: FileJob, bar: tqdm) -> None:
        self.out, self.job, self.bar = out, job, bar
        self.pending = {str(item.path): item for item in todo}
        self.open: dict[str, FileSink] = {}
        self.results: list[FileResult] = []

    def feed(self, rows: pa.Table) -> None:
        if not rows.num_rows:
            return
        runs = pc.run_end_encode(rows.column("path").combine_chunks())
        start = 0
        for path, end in zip(runs.values.to_pylist(), runs.run_ends.to_pylist()):
            for other in [p for p in self.open if p != path and self.job.output_rows(self.pending[p]) is None]:
                self._commit(other)
            if path not in self.open:
                if path not in self.pending:
                    raise RuntimeError(f"Ray Data returned rows of {path} after its output was complete")
                self.open[path] = FileSink(self.out, self.pending[path], self.job, self.bar)
            sink = self.open[path]
            for batch in rows.slice(start, end - start).drop_columns(["path"]).to_batches():
                sink.write(batch)
            if sink.rows == self.job.output_rows(sink.item):
                self._commit(path)
            start = end

    def _commit(self, path: str) -> None:
        self.results.append(self.open.pop(path).commit())
        del self.pending[path]

    def finish(self) -> list[FileResult]:
        """Commit what is complete; a file short of its expected rows failed."""
        for path, item in list(self.pending.items()):
            expected = self.job.output_rows(item)
            sink = self.open.get(path) or FileSink(self.out, item, self.job, self.bar)
            if expected is None or sink.rows == expected:
                self.open[path] = sink
                self._commit(path)
            else:
                self.results.append(sink.abort(f"Ray Data returned {sink.rows} of its {expected} rows"))
                self.open.pop(path, None)
        return self.results

    def fail(self, error: str) -> list[FileResult]:
        """Every file not yet committed failed with ``error``."""
        for path, item in self.pending.items():
            sink = self.open.pop(path, None)
            self.results.append(sink.abort(error) if sink else FileResult(item.name, "failed", error=f"{item.path}: {error}"))
        return self.results


def run_ray(job: FileJob, source: str | os.PathLike[str], output: str | os.PathLike[str], options: RayOptions,
            resume: bool = False, batch_rows: int = 8192, progress: bool = True) -> RunReport:
    """``run_local``'s job on Ray Data (see the module docstring); same outputs, same manifest."""
    start = time.perf_counter()
    options.check_local()  # before anything starts
    out, todo, results = plan(job, source, output, resume)
    report = RunReport(out.root)
    if todo:
        with ray_session(options) as report.nodes, progress_bar(todo, progress) as bar:
            sinks = PathSinks(out, todo, job, bar)
            try:
                dataset = job.ray_dataset([str(item.path) for item in todo], options, batch_rows)
                for rows in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
                    sinks.feed(rows)
                results += sinks.finish()
            except Exception as err:  # a failed Ray task: the files not yet written are reported failed
                results += sinks.fail(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)
    report.files, report.seconds = sorted(results, key=lambda r: r.name), time.perf_counter() - start
    return report

"""Save, load and lookup-build time and size of a model artifact whose pipeline has large
vocabularies: format 2 (vocabularies as arrays) against format 1 (inline JSON lists).

The pipeline has an integer table group (``item_id``, ``--ints`` values, default 4M) and a
string one (``user_id``, ``--strings`` values, default 1M; 40% of them longer than 8 bytes,
some non-ASCII); its fitted state is built directly from those arrays (no fit), the model is
an MLP on multiplexed tables (65,536 x 8 rows: small, so the vocabularies dominate).

* **format 2** (this library): ``save_model`` / ``load_model``: integer vocabularies are
  safetensors tensors, string ones an Arrow IPC file, the manifest JSON keeps the rest.
* **format 1** (recsys-embed up to commit e3dc132): :func:`save_format_1` writes the artifact
  as that version's ``save_model`` did (vocabularies as ``to_pylist()`` lists inside the
  ``json.dumps(indent=2)`` manifest, same tensors); it is read by today's ``load_model``,
  whose format 1 path is that version's (``json.loads``, then ``pa.array(list)`` per vocabulary).

Per round, in a fresh random order, each format is saved, loaded (``load_model``: manifest,
tensors, vocabularies, model) and made ready to score (``pipeline.encoder()``: the id lookup
hash tables, built from the arrays). Wall clock and process CPU time (user + system), medians;
ratios and the plot use CPU time, which a shared machine distorts far less than the wall clock.
Writes ``benchmarks/results/artifact_load.json`` and ``.png``.

    python benchmarks/artifact_load.py [--ints 4000000] [--strings 1000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from safetensors.torch import save_file

from recsys_embed.artifacts import MANIFEST_FILE, TENSORS_FILE, versions
from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.jobs.builders import build_model, build_tables
from recsys_embed.jobs.model_io import load_model, save_model
from recsys_embed.jobs.ranking_model import RankingModel
from recsys_embed.pipelines import FittedState, Pipeline, TableState
from recsys_embed.tables import TableOptimizer

RESULTS = Path(__file__).resolve().parent / "results"
LAYOUT = {"name": "multiplexed", "rows": 65_536, "chunk_dim": 8, "probes": 2}
MODEL = {"name": "mlp"}
FORMATS = ("format_1", "format_2")


def vocabularies(ints: int, strings: int, seed: int = 0) -> tuple[pa.Array, pa.Array]:
    """``ints`` distinct int64 values spread over the int64 range and ``strings`` distinct
    strings, 60% of at most 8 bytes, the rest longer, every 7th with a non-ASCII letter."""
    rng = np.random.default_rng(seed)
    values = np.unique(rng.integers(-(2**62), 2**62, int(ints * 1.01) + 16))[:ints]
    rng.shuffle(values)
    names = [f"u{i:x}" if i % 5 < 3 else f"user-{i:08d}" + ("é" if i % 7 == 0 else "") for i in range(strings)]
    return pa.array(values), pa.array(names, pa.large_string())


def model_pipeline(ints: int, strings: int) -> tuple[Pipeline, RankingModel]:
    schema = Schema([FeatureSpec("item_id", embedding_dim=8), FeatureSpec("user_id", embedding_dim=8)], label="label")
    item, user = vocabularies(ints, strings)
    state = FittedState(schema.fingerprint(), {
        "item_id": TableState("vocabulary", "int", vocabulary=item),
        "user_id": TableState("vocabulary", "str", vocabulary=user),
    }, rows=ints + strings)  # fmt: skip
    pipeline = Pipeline(schema, state)
    tables = build_tables(LAYOUT, schema, pipeline.num_embeddings, TableOptimizer("rowwise_adagrad", lr=0.01))
    return pipeline, RankingModel(tables, build_model(MODEL, tables.shapes(0), schema))


def save_format_1(path: Path, pipeline: Pipeline, model: RankingModel, layout: dict[str, Any], model_spec: dict[str, Any]) -> Path:
    """Write ``pipeline`` + ``model`` as a format 1 artifact, as recsys-embed's ``save_model``
    did up to commit e3dc132: the same tensors, vocabularies inline in the manifest."""
    table_tensors, table_config = model.tables.export_state()
    tensors = {f"tables.{k}": v for k, v in table_tensors.items()}
    tensors.update({f"model.{k}": v for k, v in model.model.state_dict().items()})
    arrays, config = pipeline.export_state()
    for name, table in config["state"]["tables"].items():
        if f"vocabulary.{name}" in arrays:  # vocabulary tables have no seed: the key order is format 1's
            table["vocabulary"] = arrays[f"vocabulary.{name}"].to_pylist()
    config["state"]["format_version"] = 1
    stored = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    manifest = {
        "format_version": 1,
        "versions": versions(),
        "tensors": {k: {"dtype": str(v.dtype).removeprefix("torch."), "shape": list(v.shape)} for k, v in stored.items()},
        "pipeline": config,
        "layout": dict(layout),
        "layout_state": table_config,
        "model": dict(model_spec),
    }
    text = json.dumps(manifest, indent=2)
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.clone() if v.untyped_storage().nbytes() != v.nbytes else v for k, v in stored.items()}, str(path / TENSORS_FILE))
    (path / MANIFEST_FILE).write_text(text)
    return path


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def measure(ints: int, strings: int, rounds: int, work: Path, seed: int = 0) -> dict[str, Any]:
    pipeline, model = model_pipeline(ints, strings)
    savers = {
        "format_1": lambda path: save_format_1(path, pipeline, model, LAYOUT, MODEL),
        "format_2": lambda path: save_model(path, pipeline, model, LAYOUT, MODEL),
    }
    runs: dict[str, dict[str, list[float]]] = {f: {} for f in FORMATS}
    sizes: dict[str, dict[str, int]] = {}
    order = list(FORMATS)
    rng = random.Random(seed)
    for _ in range(rounds):
        rng.shuffle(order)
        for fmt in order:
            path = work / fmt
            shutil.rmtree(path, ignore_errors=True)
            loaded = None
            steps = {
                "save": lambda: savers[fmt](path),
                "load": lambda: load_model(path),
                "ready": lambda: loaded.pipeline.encoder(labels=False),  # type: ignore[union-attr]
            }
            for step, fn in steps.items():
                out, wall, cpu = timed(fn)
                loaded = out if step == "load" else loaded
                runs[fmt].setdefault(f"{step}_wall_s", []).append(wall)
                runs[fmt].setdefault(f"{step}_cpu_s", []).append(cpu)
            assert loaded is not None and loaded.pipeline.state == pipeline.state, f"{fmt}: the loaded state differs"
            sizes[fmt] = {p.name: p.stat().st_size for p in sorted(path.iterdir())}
    formats = {
        fmt: {
            **{k: statistics.median(v) for k, v in runs[fmt].items()},
            "runs": runs[fmt],
            "files": sizes[fmt],
            "bytes": sum(sizes[fmt].values()),
        }
        for fmt in FORMATS
    }
    ratios = {
        f"format_1 / format_2 {step} {clock}": formats["format_1"][f"{step}_{clock}_s"] / formats["format_2"][f"{step}_{clock}_s"]
        for step in ("save", "load", "ready") for clock in ("cpu", "wall")
    }
    ratios["format_1 / format_2 bytes"] = formats["format_1"]["bytes"] / formats["format_2"]["bytes"]
    return {"formats": formats, "ratios": ratios}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = ("save", "load", "ready")
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for i, fmt in enumerate(FORMATS):
        values = [result["formats"][fmt][f"{s}_cpu_s"] for s in steps]
        bars = ax.barh([y + 0.4 * i for y in range(len(steps))], values, height=0.4, label=fmt)
        ax.bar_label(bars, fmt="%.2f s")
    ax.set_yticks([y + 0.2 for y in range(len(steps))], steps)
    c = result["config"]
    ax.set_xlabel("median CPU seconds (user + system), lower is better")
    ax.set_title(f"model artifact, {c['ints']:,} int + {c['strings']:,} string vocabulary entries")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ints", type=int, default=4_000_000, help="int vocabulary entries")
    parser.add_argument("--strings", type=int, default=1_000_000, help="string vocabulary entries")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "artifact_load.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as work:
        result = measure(args.ints, args.strings, args.rounds, Path(work))
    result["config"] = {
        **{k: getattr(args, k) for k in ("ints", "strings", "rounds", "threads")},
        "layout": LAYOUT, "model": MODEL, "cpus": os.cpu_count(), "python": platform.python_version(), **versions(),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    plot(result, args.out.with_suffix(".png"))
    for fmt in FORMATS:
        f = result["formats"][fmt]
        times = "  ".join(f"{step} {f[f'{step}_cpu_s']:.2f} s CPU ({f[f'{step}_wall_s']:.2f} s wall)" for step in ("save", "load", "ready"))
        print(f"{fmt}: {times}  {f['bytes'] / 2**20:.1f} MiB")
    print("  ".join(f"{k} {v:.1f}x" for k, v in result["ratios"].items()))
    return result


if __name__ == "__main__":
    main()

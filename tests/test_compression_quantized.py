"""Post-training row-wise quantization (``recsys_embed.compression.quantized``): error bounds
against the fp32 rows per bits, the kernel's traps (fp32 output, CPU device, padded dims, the
fp16 scale and bias of each int row), exact memory, artifact round trips, the ``quantize`` CLI
through ``evaluate`` and ``score``, and bad input."""

from __future__ import annotations

import doctest
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
import torch

from recsys_embed.compression import CompressedTables, QuantizedTables, quantize, quantized as quantized_module
from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.tables import MultiplexedConfig, MultiplexedTables, PerFeatureTables, kjt_from_ids, layout_class

from hostile import train_small

CliMain = Callable[..., subprocess.CompletedProcess]  # the cli_main fixture (conftest.py)
ROWS = 50
EPS16 = 2.0**-11  # fp16's relative rounding


def item_schema(dim: int = 16) -> Schema:
    return Schema([
        FeatureSpec("item_id", embedding_dim=dim),
        FeatureSpec("hist", kind="sequence", table="item_id", max_len=3, embedding_dim=dim),
        FeatureSpec("user_id", embedding_dim=8),
    ])  # fmt: skip


def trained(dim: int = 16, **kwargs: object) -> PerFeatureTables:
    torch.manual_seed(0)
    tables = PerFeatureTables(item_schema(dim), {"item_id": ROWS, "user_id": 7}, **kwargs)  # type: ignore[arg-type]
    with torch.no_grad():
        for weight in tables.kernel.weights():
            weight.copy_(torch.randn_like(weight) * torch.rand(weight.shape[0], 1) * 3)  # rows of different ranges
    return tables


def batch() -> object:
    hist = torch.tensor([[1, 2, 3], [49, 0, 0], [0, 0, 0]])
    return kjt_from_ids({"item_id": torch.tensor([0, 17, 49]), "hist": hist, "user_id": torch.tensor([6, 0, 3])}, padding_id=0)


def bound(rows: torch.Tensor, bits: int) -> torch.Tensor:
    """Per row, the largest error row-wise quantization may make: half a step plus fp16's rounding of scale and bias."""
    if bits == 16:
        return rows.abs().amax(1) * EPS16 + 1e-7
    low, high = rows.amin(1), rows.amax(1)
    return (high - low) / (2**bits - 1) / 2 + (low.abs() + (high - low)) * EPS16 + 1e-6


@pytest.mark.parametrize("bits", [16, 8, 4, 2])
def test_every_row_lies_within_the_error_bound_of_its_bits(bits: int) -> None:
    tables = trained()
    quantized = quantize(tables, bits)
    fp32 = tables.table_vectors("item_id")
    served = quantized(kjt_from_ids({"item_id": torch.arange(ROWS), "hist": torch.zeros(ROWS, 3, dtype=torch.long),
                                     "user_id": torch.zeros(ROWS, dtype=torch.long)}, padding_id=0)).pooled["item_id"]  # fmt: skip
    error = (served - fp32).abs().amax(1)
    assert bool((error <= bound(fp32, bits)).all()), (error - bound(fp32, bits)).max()
    assert error.max() > 0  # it did quantize
    assert torch.equal(quantized.table_vectors("item_id"), served)


def test_outputs_are_the_source_embeddings_pooled_and_sequences_in_fp32_on_the_cpu() -> None:
    tables = trained()
    quantized = quantize(tables, 8)
    source, out = tables(batch()), quantized(batch())
    assert quantized.kernel.tbe.current_device == torch.device("cpu")
    assert set(out.pooled) == set(source.pooled) and set(out.sequences) == {"hist"}
    for name, value in [*out.pooled.items(), *out.sequences.items()]:
        assert value.dtype == torch.float32 and value.shape == (source.pooled | source.sequences)[name].shape
    assert torch.equal(out.masks["hist"], source.masks["hist"])
    assert torch.allclose(out.sequences["hist"], source.sequences["hist"], atol=0.05)
    assert quantized.shapes(2) == tables.shapes(2)


def test_pooled_sequences_and_multiplexed_tables_are_served_too() -> None:
    pooled = trained(pool_sequences=True)
    assert torch.allclose(quantize(pooled, 16)(batch()).pooled["hist"], pooled(batch()).pooled["hist"], atol=1e-2)
    torch.manual_seed(0)
    mux = MultiplexedTables(item_schema(), MultiplexedConfig(rows=64, chunk_dim=8, probes=1, table_probes={"item_id": 2}))
    out, source = quantize(mux, 8)(batch()), mux(batch())
    assert torch.allclose(out.pooled["item_id"], source.pooled["item_id"], atol=1e-3)
    assert quantize(mux, 8).memory_bytes() == 64 * (8 + 4)  # one shared table: 64 rows of 8 codes + scale/bias


@pytest.mark.parametrize(("bits", "row_bytes"), [(16, 2 * 12), (8, 12 + 4), (4, 6 + 4), (2, 16 // 4 + 4)])
def test_memory_counts_codes_scale_and_bias_and_padding_exactly(bits: int, row_bytes: int) -> None:
    """dim 12: int2 pads to 16 (whole 2-byte code words), the others keep 12; each table of the
    kernel's buffer is rounded up to 128 bytes."""
    quantized = quantize(trained(dim=12), bits)
    kernel = quantized.kernel
    assert kernel.stored_dims == [12 if bits > 2 else 16, 8]
    user_bytes = 2 * 8 if bits == 16 else 8 * bits // 8 + 4

    def aligned(n: int) -> int:
        return -(-n // 128) * 128

    assert quantized.memory_bytes() == aligned(ROWS * row_bytes) + aligned(7 * user_bytes)
    assert quantized.num_parameters() == ROWS * kernel.stored_dims[0] + 7 * 8
    assert quantized(batch()).pooled["item_id"].shape == (3, 12)  # the pad columns are dropped
    assert f"{kernel.row_bytes(0):>9}" in quantized.summary()


@pytest.mark.parametrize("bits", [8, 2])
def test_state_round_trip_gives_identical_outputs_from_uint8_tensors_and_json(bits: int) -> None:
    quantized = quantize(trained(dim=12), bits)
    tensors, config = quantized.export_state()
    assert all(t.dtype == torch.uint8 for t in tensors.values())
    config = json.loads(json.dumps(config))
    copy = layout_class(config["layout"]).from_state(item_schema(12), tensors, config)
    a, b = quantized(batch()), copy(batch())
    assert all(torch.equal(a.pooled[k], b.pooled[k]) for k in a.pooled)
    assert torch.equal(a.sequences["hist"], b.sequences["hist"])
    with pytest.raises(ValueError, match="CPU only"):
        QuantizedTables.from_state(item_schema(12), tensors, config, device="cuda")
    tensors["item_id"] = tensors["item_id"][:, :-1]
    with pytest.raises(ValueError, match="quantized rows: expected uint8 tables of shapes"):
        QuantizedTables.from_state(item_schema(12), tensors, config)


def test_bad_input_is_a_clear_error() -> None:
    tables = trained()
    with pytest.raises(ValueError, match=r"bits must be one of \[2, 4, 8, 16\], got 3"):
        quantize(tables, 3)
    quantized = quantize(tables, 4)
    with pytest.raises(ValueError, match="already quantized"):
        quantize(quantized, 8)
    with pytest.raises(ValueError, match="inference-only"):
        quantized.train()
    assert not quantized.training and quantized.eval() is quantized
    dhe = CompressedTables.from_options(
        Schema([FeatureSpec("item_id", embedding_dim=8)]), {"item_id": ROWS}, {"item_id": {"method": "dhe", "hashes": 16, "budget": 0.5}}
    )
    with pytest.raises(ValueError, match=r"table group\(s\) 'item_id' \(dhe\) use a computed method \(no rows\)"):
        quantize(dhe, 8)
    with pytest.raises(IndexError):
        quantized(kjt_from_ids({"item_id": torch.tensor([ROWS]), "hist": torch.zeros(1, 3, dtype=torch.long),
                                "user_id": torch.tensor([0])}, padding_id=0))  # fmt: skip
    with pytest.raises(RuntimeError, match="idx < num_rows"):  # the kernel's own check, per table
        quantized.kernel(torch.tensor([ROWS, 0, 0, 0, 0]), torch.arange(6))  # 5 slots: item_id, hist x 3, user_id


COMPRESSED = {
    "hashing": {"method": "hashing", "budget": 0.5},
    "qr_mult": {"method": "qr", "combine": "mult", "budget": 0.3},
    "qr_add": {"method": "qr", "combine": "add", "budget": 0.3},
    "double_hashing_sum": {"method": "double_hashing", "combine": "sum", "budget": 0.5},
    "adaptive": {"method": "adaptive", "frequent": 10, "budget": 0.5},
    "mixed_dims": {"method": "mixed_dims", "sizes": [20, 30], "dims": [16, 8]},
    "multiplexed": {"method": "multiplexed", "shared": "pool", "rows": 20, "probes": 2},  # user_id shares the pool
}


def trained_compressed(spec: dict[str, object]) -> CompressedTables:
    """``item_id`` (pooled and a sequence) compressed by ``spec``, ``user_id`` hashed: random rows of different ranges."""
    torch.manual_seed(0)
    user = {"method": "multiplexed", "shared": "pool", "rows": 20, "probes": 1} if spec["method"] == "multiplexed" else {"method": "hashing", "rows": 5}
    tables = CompressedTables.from_options(item_schema(), {"item_id": ROWS, "user_id": 7}, {"item_id": spec, "user_id": user})
    with torch.no_grad():
        for weight in tables.kernel.weights():
            weight.copy_(torch.randn_like(weight) * torch.rand(weight.shape[0], 1) * 3)
        for param in tables.methods.parameters():  # mixed_dims' projections: trained, not the start values
            param.mul_(-2.0)
    return tables


def all_ids() -> object:
    """Every item id pooled, and in the sequence (with padding slots)."""
    hist = torch.stack([torch.arange(ROWS), torch.zeros(ROWS, dtype=torch.long), torch.arange(ROWS).flip(0)], dim=1)
    return kjt_from_ids({"item_id": torch.arange(ROWS), "hist": hist, "user_id": torch.arange(ROWS) % 7}, padding_id=0)


@pytest.mark.parametrize("bits", [16, 8])
@pytest.mark.parametrize("name", sorted(COMPRESSED))
def test_compressed_layouts_of_row_methods_quantize_within_the_row_bounds(name: str, bits: int) -> None:
    """Every kernel row within its bound; the outputs (pooled and sequences, every combine) those of
    the fp32 layout on the dequantized rows; sum-combines within the sum of their rows' bounds."""
    tables = trained_compressed(COMPRESSED[name])
    quantized = quantize(tables, bits)
    for source, served in zip(tables.kernel.weights(), quantized.kernel.weights()):
        assert bool(((served - source).abs().amax(1) <= bound(source, bits)).all())
    with torch.no_grad():
        fp32, out = tables(all_ids()), quantized(all_ids())
    reference = CompressedTables.from_state(item_schema(), *tables.export_state())
    with torch.no_grad():
        for weight, served in zip(reference.kernel.weights(), quantized.kernel.weights()):
            weight.copy_(served)
    expected = reference(all_ids())
    for key in fp32.pooled:
        assert out.pooled[key].dtype == torch.float32
        assert torch.allclose(out.pooled[key], expected.pooled[key], atol=1e-4, rtol=1e-5), key
    assert torch.allclose(out.sequences["hist"], expected.sequences["hist"], atol=1e-4, rtol=1e-5)
    assert torch.equal(out.masks["hist"], fp32.masks["hist"])
    assert (out.pooled["item_id"] - fp32.pooled["item_id"]).abs().max() > 0  # it did quantize
    if name in ("hashing", "qr_add", "double_hashing_sum", "adaptive"):  # the output is the sum of k rows
        reads = len(tables.methods["item_id"].kernel_reads())
        worst = max(float(bound(w, bits).max()) for w in tables.kernel.weights())
        assert float((out.pooled["item_id"] - fp32.pooled["item_id"]).abs().max()) <= reads * worst
        assert float((out.sequences["hist"] - fp32.sequences["hist"]).abs().max()) <= reads * worst
    assert quantized.memory_bytes() < tables.memory_bytes()
    assert quantized.memory_bytes() < sum(w.numel() * 4 for w in tables.kernel.weights()) + sum(
        t.numel() * 4 for t in tables.quantization_tensors().values()
    )
    tensors, config = quantized.export_state()
    config = json.loads(json.dumps(config))
    copy = layout_class(config["layout"]).from_state(item_schema(), tensors, config)
    again = copy(all_ids())
    assert all(torch.equal(out.pooled[k], again.pooled[k]) for k in out.pooled)
    assert torch.equal(out.sequences["hist"], again.sequences["hist"])


def test_compressed_kernels_keep_the_packed_tables_and_pad_int2_rows() -> None:
    """qr's two tables of one dim share a packed fbgemm table (the layout reads rows of it, ``packed=True``);
    table-relative ids read the same rows; dim 12 pads to 16 at int2 and the pad columns are dropped."""
    schema = Schema([FeatureSpec("item_id", embedding_dim=12), FeatureSpec("user_id", embedding_dim=8)])
    torch.manual_seed(0)
    tables = CompressedTables.from_options(schema, {"item_id": ROWS, "user_id": 7},
                                           {"item_id": {"method": "qr", "combine": "add", "budget": 0.3}})  # fmt: skip
    kernel = quantize(tables, 2).kernel
    assert kernel.packed and kernel.physical == [0, 0, 1] and kernel.stored_dims == [16, 16, 8]
    ids = torch.tensor([1 for _ in kernel.slot_tables])
    offsets = torch.arange(ids.numel() + 1)
    rows = ids + torch.tensor([kernel.row_offsets[t] for t in kernel.slot_tables])
    assert torch.equal(kernel(ids, offsets), kernel(rows, offsets, packed=True))
    assert kernel(ids, offsets).shape == (1, 12 + 8)  # qr add: one bag of both rows per item slot
    out = quantize(tables, 2)(kjt_from_ids({"item_id": torch.tensor([3, 49]), "user_id": torch.tensor([0, 6])}))
    with torch.no_grad():
        assert torch.allclose(out.pooled["item_id"], tables(kjt_from_ids({"item_id": torch.tensor([3, 49]), "user_id": torch.tensor([0, 6])})).pooled["item_id"], atol=0.05)


def test_mixed_dims_projections_travel_in_fp32_and_are_the_trained_ones() -> None:
    tables = trained_compressed(COMPRESSED["mixed_dims"])
    quantized = quantize(tables, 8)
    trained_projection = tables.methods["item_id"].projections[0]
    assert torch.equal(quantized.source.methods["item_id"].projections[0], trained_projection)
    tensors, config = quantized.export_state()
    assert config["source_tensors"] == ["method/item_id/projections.0"]
    assert tensors["method/item_id/projections.0"].dtype == torch.float32
    assert quantized.memory_bytes() == quantized.kernel.memory_bytes() + trained_projection.numel() * 4


def test_compressed_layouts_of_computed_methods_are_refused_naming_group_and_method() -> None:
    tables = CompressedTables.from_options(item_schema(), {"item_id": ROWS, "user_id": 7},
                                           {"item_id": {"method": "robe", "budget": 0.5}, "user_id": {"method": "hashing", "rows": 5}})  # fmt: skip
    with pytest.raises(ValueError, match=r"table group\(s\) 'item_id' \(robe\) use a computed method \(no rows\)"):
        quantize(tables, 8)


def test_docstring_example() -> None:
    result = doctest.testmod(quantized_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


@pytest.fixture(scope="module")
def trained_artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny DIN (sequences through the tables) trained on a real synthetic Parquet dataset."""
    root = tmp_path_factory.mktemp("ptq")
    model = train_small(root, 4000, 1024, model={"name": "din", "hidden": [16], "attention_hidden": [8]}, trainer={"lr": 0.003})
    return model, root / "data"


def test_cli_quantize_then_evaluate_and_score(trained_artifact: tuple[Path, Path], tmp_path: Path, cli_main: CliMain) -> None:
    model, data = trained_artifact
    out = cli_main("quantize", "--model", str(model), "--bits", "8", "--output", str(tmp_path / "int8"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert re.search(r"quantized tables to 8 bits: [\d,]+ -> [\d,]+ bytes \(\d+\.\dx smaller\); saved to", out.stdout)
    assert not list(tmp_path.glob(".int8*"))  # the temp name was renamed
    metrics = {}
    for name in ("fp32", "int8"):
        path = model if name == "fp32" else tmp_path / "int8"
        result = cli_main("evaluate", "--model", str(path), "--data", str(data))
        assert result.returncode == 0, result.stderr[-3000:]
        metrics[name] = json.loads(result.stdout.strip().splitlines()[-1])
    assert metrics["int8"]["auc"] == pytest.approx(metrics["fp32"]["auc"], abs=0.002)
    scored = cli_main("score", "--model", str(tmp_path / "int8"), "--input", str(data), "--output", str(tmp_path / "scores"))
    assert scored.returncode == 0, scored.stderr[-3000:]
    scores = pl.read_parquet(sorted((tmp_path / "scores").glob("*.parquet")))["score"]
    assert scores.len() == 4000 and bool(scores.is_between(0, 1).all())
    again = cli_main("quantize", "--model", str(tmp_path / "int8"), "--bits", "4", "--output", str(tmp_path / "twice"))
    assert again.returncode == 2 and "already quantized" in again.stderr
    bad = cli_main("quantize", "--model", str(model), "--bits", "3", "--output", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "must be one of [2, 4, 8, 16]" in bad.stderr and not (tmp_path / "bad").exists()
    same = cli_main("quantize", "--model", str(model), "--bits", "8", "--output", str(model))
    assert same.returncode == 2 and "is the input; keep the fp32 artifact" in same.stderr


def test_python_quantize_model_artifact_round_trip_is_exact_and_inference_only(trained_artifact: tuple[Path, Path], tmp_path: Path) -> None:
    from recsys_embed.jobs.model_io import load_model
    from recsys_embed.jobs.quantize import quantize_model

    model, data = trained_artifact
    report = quantize_model(model, tmp_path / "int4", bits=4)
    assert report.bytes_after < report.bytes_before / 4
    loaded = load_model(tmp_path / "int4")
    manifest = json.loads((tmp_path / "int4" / "manifest.json").read_text())
    assert manifest["layout_state"]["layout"] == "quantized" and manifest["layout_state"]["bits"] == 4
    assert loaded.model.tables.memory_bytes() == report.bytes_after
    batch = next(iter(loaded.pipeline.batches(str(data), batch_size=256)))
    again = load_model(tmp_path / "int4")
    with torch.no_grad():
        assert torch.equal(loaded.model(batch), again.model(batch))
    with pytest.raises(ValueError, match="inference-only"):
        loaded.model.train()


def test_quantize_model_takes_an_artifact_whose_tables_are_compressed_with_qr(tmp_path: Path) -> None:
    from recsys_embed.jobs.model_io import load_model
    from recsys_embed.jobs.quantize import quantize_model

    layout = {"name": "per_feature", "compression": {"item_id": {"method": "qr", "budget": 0.2}}}
    model = train_small(tmp_path, 2000, 500, layout=layout)
    report = quantize_model(model, tmp_path / "int8", bits=8)
    assert report.bytes_after < report.bytes_before
    manifest = json.loads((tmp_path / "int8" / "manifest.json").read_text())
    assert manifest["layout_state"]["layout"] == "quantized" and manifest["layout_state"]["source"]["layout"] == "compressed"
    assert manifest["layout_state"]["source"]["methods"]["item_id"]["method"] == "qr"
    fp32, int8, again = load_model(model), load_model(tmp_path / "int8"), load_model(tmp_path / "int8")
    batch = next(iter(fp32.pipeline.batches(str(tmp_path / "data"), batch_size=256)))
    with torch.no_grad():
        assert torch.equal(int8.model(batch), again.model(batch))
        assert torch.allclose(int8.model(batch), fp32.model(batch), atol=0.02)


def test_quantize_subprocess_entry_point(trained_artifact: tuple[Path, Path], tmp_path: Path) -> None:
    model, _ = trained_artifact
    result = subprocess.run([sys.executable, "-m", "recsys_embed.jobs.cli", "quantize", "--model", str(model), "--bits", "2",
                             "--output", str(tmp_path / "int2")], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "quantized tables to 2 bits" in result.stdout and (tmp_path / "int2" / "manifest.json").exists()


def test_the_readme_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    text = (Path(__file__).parents[1] / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "quantize(tables, bits=8)" in b)
    exec(compile(block, "README.md", "exec"), {})  # noqa: S102
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"20096 bytes, was \d+", lines[0]) and lines[1] == "tensor(True)"


def test_a_quantized_sequential_model_recommends_through_the_recommend_job(tmp_path: Path) -> None:
    """BERT4Rec's item table (its tied output layer reads ``table_vectors``) served in int8."""
    from scoring_data import seq_artifact

    from recsys_embed.jobs.quantize import quantize_model
    from recsys_embed.jobs.recommend import RecommendJob
    from recsys_embed.jobs.score_files import run_local

    events, model = seq_artifact(tmp_path)
    quantize_model(model, tmp_path / "int8", bits=8)
    tops = {}
    for path in (model, tmp_path / "int8"):
        report = run_local(RecommendJob.from_artifact(path, k=5), events, tmp_path / f"out-{path.name}", batch_rows=50, progress=False)
        assert report.count("written") == 2 and not report.failed
        tops[path.name] = pl.read_parquet(sorted((tmp_path / f"out-{path.name}").glob("*.parquet")))["items"].to_list()
    same = sum(a == b for a, b in zip(tops["model"], tops["int8"])) / len(tops["model"])
    assert same >= 0.9, same

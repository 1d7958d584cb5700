"""FM, DeepFM and DCN-v2 (and AutoInt's residual): shapes, gradients, the math against explicit
sums, learning a pairwise interaction a linear model cannot, config errors, artifacts, the CLI
and the README example."""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from hostile import SCHEMA, impressions, write_config
from test_models_ctr import one_thread, scramble_masked, train, xor_sample  # noqa: F401 (one_thread: a fixture)

from recsys_embed.errors import ConfigError
from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.jobs.builders import MODELS, build_model, build_tables, layout_for_model, validate_specs
from recsys_embed.jobs.model_io import load_model, save_model
from recsys_embed.jobs.ranking_model import RankingModel
from recsys_embed.models import FM, AutoInt, AutoIntConfig, DeepFM, DeepFMConfig
from recsys_embed.models.layers import CrossLayer, MixtureCrossLayer, fm_pairwise
from recsys_embed.pipelines import Pipeline
from recsys_embed.tables import TableOptimizer
from recsys_embed.tables.base import Embeddings, EmbeddingShapes

SHAPES = EmbeddingShapes(pooled={"user_id": 4, "item_id": 4}, sequences={"hist_item_id": (5, 4)}, num_dense=2)
SPECS = {
    "fm": {"name": "fm"},
    "deepfm": {"name": "deepfm", "dnn": [16, 8]},
    "dcn_v2-full-stacked": {"name": "dcn_v2", "cross_layers": 2, "dnn": [16]},
    "dcn_v2-full-parallel": {"name": "dcn_v2", "cross_layers": 2, "dnn": [16], "structure": "parallel"},
    "dcn_v2-low_rank-stacked": {"name": "dcn_v2", "cross_layers": 2, "low_rank": 3, "dnn": [16]},
    "dcn_v2-experts-parallel": {"name": "dcn_v2", "cross_layers": 2, "low_rank": 3, "experts": 3, "structure": "parallel", "dnn": [16]},
}
LINEAR = {"name": "dcn_v2", "cross_layers": 0, "dnn": []}  # logistic regression over the flat input
FIXTURE = Path(__file__).parent / "data" / "autoint_before_residual"


def embeddings(batch: int = 7, seed: int = 0, shapes: EmbeddingShapes = SHAPES) -> tuple[Embeddings, torch.Tensor]:
    """Random embeddings of ``shapes`` (leaves that require grad); row 0 has an empty history."""
    g = torch.Generator().manual_seed(seed)
    emb = Embeddings()
    for name, dim in shapes.pooled.items():
        emb.pooled[name] = torch.randn(batch, dim, generator=g).requires_grad_()
    for name, (length, dim) in shapes.sequences.items():
        emb.sequences[name] = torch.randn(batch, length, dim, generator=g).requires_grad_()
        lengths = torch.randint(0, length + 1, (batch,), generator=g)
        lengths[0] = 0
        emb.masks[name] = torch.arange(length)[None, :] < lengths[:, None]
    return emb, torch.randn(batch, shapes.num_dense, generator=g)


def build(spec: dict, shapes: EmbeddingShapes = SHAPES, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(dict(spec), shapes)


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS)
def test_logits_shape_and_masked_positions_do_not_matter(spec: dict) -> None:
    emb, dense = embeddings()
    model = build(spec).eval()
    out = model(emb, dense)
    assert out.shape == (7,) and torch.isfinite(out).all()
    torch.testing.assert_close(model(scramble_masked(emb), dense), out)


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS)
def test_gradients_reach_every_parameter_and_every_real_embedding(spec: dict) -> None:
    emb, dense = embeddings()
    model = build(spec)
    model(emb, dense).square().sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    for name, tensor in emb.pooled.items():
        assert (tensor.grad.abs().sum(1) > 0).all(), name
    for name, tensor in emb.sequences.items():
        reached = tensor.grad.abs().sum(-1) > 0
        assert torch.equal(reached, emb.masks[name]), name  # every real position, no padding


def test_fm_pairwise_is_the_sum_over_pairs_of_fields() -> None:
    fields = torch.randn(3, 6, 5, dtype=torch.float64)
    pairs = sum((fields[:, i] * fields[:, j]).sum(-1) for i in range(6) for j in range(i + 1, 6))
    torch.testing.assert_close(fm_pairwise(fields), pairs, rtol=1e-12, atol=1e-12)


def test_fm_is_its_first_order_term_plus_the_pairwise_term_of_its_fields() -> None:
    emb, dense = embeddings()
    model = FM(SHAPES).eval()
    fields = model.fields(emb, dense)
    assert fields.shape == (7, 3 + 2, 4)
    torch.testing.assert_close(fields[:, 3:], dense[..., None] * model.numeric)  # value x learned vector
    flat = torch.cat([emb.pooled["user_id"], emb.pooled["item_id"], fields[:, 2], dense], dim=1)
    pairs = sum((fields[:, i] * fields[:, j]).sum(-1) for i in range(5) for j in range(i + 1, 5))
    torch.testing.assert_close(model(emb, dense), model.linear(flat).squeeze(-1) + pairs)


def test_deepfm_is_fm_plus_its_mlp_on_the_same_inputs() -> None:
    emb, dense = embeddings()
    fm = FM(SHAPES).eval()
    deepfm = DeepFM(SHAPES, DeepFMConfig(dnn=(8,))).eval()
    deepfm.fm.load_state_dict(fm.state_dict())
    torch.testing.assert_close(deepfm(emb, dense), fm(emb, dense) + deepfm.dnn(emb, dense))


def test_cross_layers_follow_the_paper() -> None:
    """Eqs. 1-2 of Wang et al. 2021 written out, expert by expert."""
    torch.manual_seed(1)
    x0, x = torch.randn(4, 6), torch.randn(4, 6)
    full = CrossLayer(6)
    torch.testing.assert_close(full(x0, x), x0 * (x @ full.linear.weight.T + full.linear.bias) + x)
    for experts in (1, 3):
        layer = MixtureCrossLayer(6, rank=2, experts=experts)
        torch.nn.init.normal_(layer.bias)
        crossed = [
            x0 * (torch.tanh(torch.tanh(x @ layer.down[k]) @ layer.middle[k]) @ layer.up[k] + layer.bias)
            for k in range(experts)
        ]
        gates = torch.softmax(layer.gate(x), -1) if experts > 1 else torch.ones(4, 1)
        expected = sum(gates[:, k : k + 1] * crossed[k] for k in range(experts)) + x
        torch.testing.assert_close(layer(x0, x), expected)
        assert (layer.gate is None) == (experts == 1)  # one expert: no gate to learn


def test_dcn_structures_wire_cross_and_deep_as_named() -> None:
    emb, dense = embeddings()
    stacked, parallel = build(SPECS["dcn_v2-full-stacked"]).eval(), build(SPECS["dcn_v2-full-parallel"]).eval()
    x0 = stacked.inputs(emb, dense)
    torch.testing.assert_close(stacked(emb, dense), stacked.output(stacked.deep(stacked.cross(x0))).squeeze(-1))
    both = torch.cat([parallel.cross(x0), parallel.deep(x0)], dim=1)
    torch.testing.assert_close(parallel(emb, dense), parallel.output(both).squeeze(-1))


# --- learning: real fused tables + model on a pure pairwise target (click iff a + b is odd) ---

XOR_SCHEMA = Schema(features=[FeatureSpec(name, embedding_dim=8) for name in ("a", "b", "noise")])
XOR_ROWS = {"a": 12, "b": 12, "noise": 12}


def xor_loss(spec: dict) -> tuple[float, float]:
    return train(XOR_SCHEMA, XOR_ROWS, lambda shapes: build_model(dict(spec), shapes), xor_sample, steps=250, lr=0.02)


@pytest.fixture(scope="module")
def linear_xor_loss() -> Iterator[float]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield xor_loss(LINEAR)[1]
    torch.set_num_threads(threads)


CROSS_ONLY = {"name": "dcn_v2", "cross_layers": 1, "dnn": []}  # the cross layer alone: x_0 * (W x_0 + b) + x_0


@pytest.mark.parametrize("spec", [*SPECS.values(), CROSS_ONLY], ids=[*SPECS, "dcn_v2-cross-only"])
def test_models_learn_a_pairwise_interaction_a_linear_model_cannot(spec: dict, linear_xor_loss: float, one_thread: None) -> None:
    before, after = xor_loss(spec)
    assert linear_xor_loss > 0.6, linear_xor_loss  # the control stays at chance
    assert before > 0.65 and after < 0.05, (before, after)


# --- configs ---


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"name": "fm", "dnn": [8]}, r"model: unknown key\(s\) \['dnn'\]"),
        ({"name": "deepfm", "dnn": "big"}, r"model\.dnn: expected a list"),
        ({"name": "deepfm", "dnn": []}, r"model: DeepFMConfig needs dnn sizes > 0"),
        ({"name": "dcn_v2", "low_rank": 2.5}, r"model\.low_rank: 2\.5 does not fit"),
        ({"name": "dcn_v2", "cross_layers": "3"}, r"model\.cross_layers: expected int"),
        ({"name": "dcn_v2", "structure": "serial"}, r"model: structure must be one of \('stacked', 'parallel'\)"),
        ({"name": "dcn_v2", "experts": 4}, r"model: experts: 4 needs low_rank"),
        ({"name": "dcn_v2", "ranks": 4}, r"model: unknown key\(s\) \['ranks'\]"),
        ({"name": "autoint", "residual": "none"}, r"model: residual must be one of \('projection', 'identity'\)"),
    ],
)
def test_config_errors_name_the_key(model: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_specs({"name": "per_feature"}, model)


def test_fm_refuses_features_of_different_dims_naming_them() -> None:
    shapes = EmbeddingShapes(pooled={"user_id": 6, "item_id": 4}, num_dense=1)
    for name in ("fm", "deepfm"):
        with pytest.raises(ValueError, match=r"FM needs every pooled and sequence feature to have one embedding dim.*user_id: 6, item_id: 4"):
            build({"name": name}, shapes)
    assert build(SPECS["dcn_v2-full-stacked"], shapes)(*embeddings(shapes=shapes)).shape == (7,)  # DCN-v2 reads them flat


def test_the_demo_offers_every_ctr_model(cli_main: Callable) -> None:
    error = cli_main("demo", "--model", "nope").stderr
    assert all(f"'{name}'" in error for name in MODELS), error


# --- artifacts and the CLI ---


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Pipeline]:
    data = tmp_path_factory.mktemp("fm") / "data.parquet"
    pq.write_table(impressions(rows=96), data)
    return data, Pipeline(Schema.from_dict(SCHEMA)).fit(data)


def save_and_reload(spec: dict, fitted: tuple[Path, Pipeline], path: Path) -> tuple[RankingModel, RankingModel, dict]:
    data, pipeline = fitted
    torch.manual_seed(0)
    layout = layout_for_model({"name": "per_feature"}, spec)
    tables = build_tables(layout, pipeline.schema, pipeline.num_embeddings, TableOptimizer("sgd", lr=0.1))
    model = RankingModel(tables, build_model(dict(spec), tables.shapes(len(pipeline.schema.dense_features)), pipeline.schema))
    loaded = load_model(save_model(path, pipeline, model, layout, spec), task="ctr")
    return model, loaded.model, loaded.manifest


def scores(model: RankingModel, data: Path, pipeline: Pipeline) -> torch.Tensor:
    return torch.from_numpy(model.predict(pipeline.batches(data, batch_size=32))[0])


@pytest.mark.parametrize("spec", [*SPECS.values(), {"name": "autoint", "field_dim": 4, "head_dim": 4}], ids=[*SPECS, "autoint"])
def test_an_artifact_round_trip_predicts_identically(spec: dict, fitted: tuple[Path, Pipeline], tmp_path: Path) -> None:
    model, loaded, manifest = save_and_reload(spec, fitted, tmp_path / "model")
    assert torch.equal(scores(loaded, *fitted), scores(model, *fitted))
    if spec["name"] == "autoint":  # a changed default is written out, never left to the loader
        assert manifest["model"]["residual"] == "projection"


def test_a_deepfm_yaml_config_trains_through_the_cli(cli_main: Callable, tmp_path: Path) -> None:
    pq.write_table(impressions(rows=300), tmp_path / "train.parquet")
    config = write_config(tmp_path / "run.yaml", tmp_path / "train.parquet", tmp_path / "run", model={"name": "deepfm", "dnn": [8]})
    result = cli_main("train", "--config", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((tmp_path / "run" / "model" / "manifest.json").read_text())
    assert manifest["model"]["name"] == "deepfm" and manifest["layout_state"]["pool_sequences"] is True
    assert load_model(tmp_path / "run" / "model").model.model.__class__ is DeepFM


# --- AutoInt's residual ---


def test_autoint_projection_residual_with_identity_weights_is_the_identity_residual() -> None:
    shapes = EmbeddingShapes(pooled={"user_id": 4, "item_id": 6}, num_dense=1)
    emb, dense = embeddings(shapes=shapes)
    config = AutoIntConfig(field_dim=4, num_layers=2, num_heads=1, head_dim=4)  # 4 -> 4 -> 4: no width change
    torch.manual_seed(0)
    identity = AutoInt(shapes, replace(config, residual="identity")).eval()
    projection = AutoInt(shapes, config).eval()
    missing, unexpected = projection.load_state_dict(identity.state_dict(), strict=False)
    assert sorted(missing) == ["interacting.0.residual.weight", "interacting.1.residual.weight"] and not unexpected
    assert not torch.allclose(projection(emb, dense), identity(emb, dense))  # W_res starts Xavier, not I
    with torch.no_grad():
        for layer in projection.interacting:
            layer.residual.weight.copy_(torch.eye(4))
    torch.testing.assert_close(projection(emb, dense), identity(emb, dense))


def test_an_autoint_artifact_of_the_version_before_the_option_loads_as_identity(tmp_path: Path) -> None:
    """tests/data/autoint_before_residual: AutoInt+ (2 layers 4 -> 4) saved by commit 7cd70de,
    with its scores on data.parquet at save."""
    saved = json.loads((FIXTURE / "scores.json").read_text())
    loaded = load_model(FIXTURE / "model")
    assert "residual" not in json.loads((FIXTURE / "model" / "manifest.json").read_text())["model"]
    assert loaded.manifest["model"]["residual"] == "identity"
    assert all(isinstance(layer.residual, torch.nn.Identity) for layer in loaded.model.model.interacting)
    data = FIXTURE / "data.parquet"
    torch.testing.assert_close(scores(loaded.model, data, loaded.pipeline), torch.tensor(saved, dtype=torch.float32))
    resaved = save_model(tmp_path / "model", loaded.pipeline, loaded.model, loaded.manifest["layout"], loaded.manifest["model"])
    assert json.loads((resaved / "manifest.json").read_text())["model"]["residual"] == "identity"
    assert torch.equal(scores(load_model(resaved).model, data, loaded.pipeline), scores(loaded.model, data, loaded.pipeline))


# --- README ---


def readme_block(marker: str) -> str:
    """The README's python code block that contains ``marker``."""
    text = (Path(__file__).parents[1] / "README.md").read_text()
    return next(textwrap.dedent(block) for block in re.findall(r"```python\n(.*?)```", text, re.S) if marker in block)


def test_the_readme_example_of_the_fm_family_runs(capsys: pytest.CaptureFixture[str]) -> None:
    exec(readme_block("DCNv2Config"), {})  # noqa: S102
    assert re.fullmatch(r"(torch\.Size\(\[5\]\)\n){3}", capsys.readouterr().out)

"""The synthetic data generators: determinism, schema, the history rule, the click model, errors."""

from __future__ import annotations

import doctest
import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys_embed.pipelines.synthetic import click_model as synthetic_click_model
from recsys_embed.pipelines.synthetic import ctr as synthetic_ctr
from recsys_embed.pipelines.synthetic import output as synthetic_output
from recsys_embed.pipelines.synthetic import sampling as synthetic_sampling
from recsys_embed.pipelines.synthetic import seq as synthetic_seq
from recsys_embed.pipelines.synthetic.ctr import CTR_ARROW_SCHEMA, MAX_HISTORY, ctr_schema, oracle_auc, write_ctr
from recsys_embed.pipelines.synthetic.output import ParquetParts
from recsys_embed.pipelines.synthetic.seq import SEQ_ARROW_SCHEMA, SequenceModel, write_sequences

CTR_ROWS = 4_000


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def ctr(tmp_path_factory: pytest.TempPathFactory) -> tuple[synthetic_ctr.CtrSummary, pa.Table]:
    out = tmp_path_factory.mktemp("ctr") / "data"
    summary = write_ctr(out, rows=CTR_ROWS, seed=3, row_group_size=1_500, progress=False)
    return summary, pq.read_table(out)


@pytest.mark.parametrize(
    "module", [synthetic_ctr, synthetic_click_model, synthetic_seq, synthetic_output, synthetic_sampling]
)
def test_docstring_examples(module: object) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert result.attempted > 0 and result.failed == 0


def test_ctr_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    a = write_ctr(tmp_path / "a", rows=1_200, seed=7, row_group_size=500, progress=False)
    write_ctr(tmp_path / "b", rows=1_200, seed=7, row_group_size=500, progress=False)
    write_ctr(tmp_path / "c", rows=1_200, seed=8, row_group_size=500, progress=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    assert [f.name for f in a.files] == ["part-00000.parquet"]
    meta = pq.ParquetFile(a.files[0]).metadata
    assert meta.num_row_groups == 3 and [meta.row_group(i).num_rows for i in range(3)] == [500, 500, 200]
    assert _entries(tmp_path) == ["a", "b", "c"]  # no temporary siblings left


def test_ctr_schema_and_dtypes(ctr: tuple[synthetic_ctr.CtrSummary, pa.Table]) -> None:
    summary, table = ctr
    assert table.schema.equals(CTR_ARROW_SCHEMA, check_metadata=False)
    assert table.num_rows == summary.rows == CTR_ROWS
    assert table.schema.field("hist_item_id").type == pa.list_(pa.int64())
    assert b"recsys_embed.synthetic" in pq.ParquetFile(summary.files[0]).schema_arrow.metadata
    assert table.column("user_id").null_count == 0 and table.column("hist_item_id").null_count == 0


def test_ctr_value_ranges(ctr: tuple[synthetic_ctr.CtrSummary, pa.Table]) -> None:
    _, table = ctr
    col = {name: table.column(name).to_numpy() for name in CTR_ARROW_SCHEMA.names if not name.startswith("hist_")}
    assert set(np.unique(col["label"])) == {0, 1}
    assert ((col["p_true"] > 0) & (col["p_true"] < 1)).all()
    assert ((col["hour"] >= 0) & (col["hour"] <= 23)).all()
    assert (col["hour"] == (col["timestamp"] // 3600) % 24).all()
    assert (np.diff(col["timestamp"]) >= 0).all()
    assert set(col["device"]) <= {"android", "ios", "web"} and set(col["user_gender"]) <= {"F", "M", "U"}
    assert set(col["user_age"]) <= {18, 25, 35, 45, 55, 65}
    assert (col["price"] > 0).all() and (col["item_clicks"] >= 0).all() and (col["user_activity"] >= 1).all()
    for name in ("user_id", "item_id", "item_category", "item_brand", "user_city"):
        assert col[name].min() >= 1, name
    # each item has one category and one brand; users keep their demographics
    for key, attrs in (("item_id", ("item_category", "item_brand")), ("user_id", ("user_age", "user_gender"))):
        for attr in attrs:
            pairs = set(zip(col[key].tolist(), col[attr].tolist()))
            assert len({k for k, _ in pairs}) == len(pairs), (key, attr)
    # the numeric features are skewed (mean well above median)
    for name in ("price", "item_clicks", "user_activity"):
        assert col[name].mean() > 1.2 * np.median(col[name]), name


def test_ctr_history_rule_row_by_row(ctr: tuple[synthetic_ctr.CtrSummary, pa.Table]) -> None:
    _, table = ctr
    users = table.column("user_id").to_pylist()
    items = table.column("item_id").to_pylist()
    labels = table.column("label").to_pylist()
    cats = table.column("item_category").to_pylist()
    hists = table.column("hist_item_id").to_pylist()
    hist_cats = table.column("hist_item_category").to_pylist()
    category_of = dict(zip(items, cats))
    expected: dict[int, list[int]] = {}
    window_slid: dict[int, bool] = {}
    checked = slides = 0
    for user, item, label, hist, hist_cat in zip(users, items, labels, hists, hist_cats):
        assert len(hist) <= MAX_HISTORY and len(hist_cat) == len(hist)
        assert all(category_of.get(h, c) == c for h, c in zip(hist, hist_cat))
        if user in expected:
            assert hist == expected[user], f"user {user}: history breaks the rule"
            checked += 1
            slides += window_slid[user]
        expected[user] = (hist + [item] if label else hist)[-MAX_HISTORY:]
        window_slid[user] = bool(label) and len(hist) == MAX_HISTORY
    assert checked > 1_000 and slides > 0  # the oldest item left a full 50-item window


def test_ctr_labels_follow_p_true(ctr: tuple[synthetic_ctr.CtrSummary, pa.Table]) -> None:
    summary, table = ctr
    p = table.column("p_true").to_numpy().astype(np.float64)
    y = table.column("label").to_numpy()
    assert abs(y.mean() - p.mean()) < 4 * np.sqrt((p * (1 - p)).sum()) / len(p)
    assert 0.08 < summary.positive_rate < 0.3 and summary.positive_rate == pytest.approx(y.mean())
    assert summary.oracle_auc == pytest.approx(oracle_auc(summary.path), abs=1e-4)
    assert 0.7 < summary.oracle_auc < 0.9
    assert summary.users == len(np.unique(table.column("user_id").to_numpy()))
    assert summary.items == len(np.unique(table.column("item_id").to_numpy()))
    # the interest term: clicks go to items of categories already in the history
    hist_cats = table.column("hist_item_category").to_pylist()
    in_history = np.array([c in h for c, h in zip(table.column("item_category").to_pylist(), hist_cats)])
    assert p[in_history].mean() > 1.5 * p[~in_history].mean()


def test_oracle_auc_of_a_hand_made_case(tmp_path: Path) -> None:
    part = pa.table({"p_true": pa.array([0.1, 0.4, 0.35, 0.8], pa.float32()), "label": pa.array([0, 0, 1, 1], pa.int8())})
    pq.write_table(part.slice(0, 2), tmp_path / "part-00000.parquet")
    pq.write_table(part.slice(2), tmp_path / "part-00001.parquet")
    pq.write_table(part, tmp_path.parent / f"{tmp_path.name}.parquet")
    assert oracle_auc(tmp_path) == pytest.approx(0.75)
    assert oracle_auc(tmp_path.parent / f"{tmp_path.name}.parquet") == pytest.approx(0.75)
    with pytest.raises(ValueError, match="no such file"):
        oracle_auc(tmp_path / "missing")
    pq.write_table(pa.table({"score": [0.5]}), tmp_path / "part-00002.parquet")
    with pytest.raises(ValueError, match="part-00002.parquet: expected columns 'p_true' and 'label'"):
        oracle_auc(tmp_path)


def test_ctr_schema_names_only_columns_of_the_data() -> None:
    schema = ctr_schema(embedding_dim=8)
    columns = set(CTR_ARROW_SCHEMA.names)
    assert set(schema.source_columns) <= columns
    assert "p_true" not in schema.source_columns and "timestamp" not in schema.source_columns
    assert schema.label == "label" and schema.group == "user_id"
    assert schema["hist_item_id"].table == "item_id" and schema["hist_item_id"].max_len == MAX_HISTORY
    assert schema["hist_item_category"].table == "item_category"
    assert {f.name for f in schema.dense_features} == {"price", "item_clicks", "user_activity"}
    assert all(f.embedding_dim == 8 for f in schema.sparse_features)
    assert len(schema.sparse_features) + len(schema.dense_features) == len(columns) - 3  # - label, p_true, timestamp


@pytest.mark.parametrize("rows", [0, -5, 2.5, True])
def test_ctr_bad_row_count(tmp_path: Path, rows: object) -> None:
    with pytest.raises(ValueError, match="rows must be a positive integer"):
        write_ctr(tmp_path / "out", rows=rows, progress=False)  # type: ignore[arg-type]
    assert _entries(tmp_path) == []


def test_ctr_bad_row_group_size(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="row_group_size must be > 0"):
        write_ctr(tmp_path / "out", rows=10, row_group_size=0, progress=False)
    assert _entries(tmp_path) == []


def test_ctr_unwritable_output(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="not writable"):
        write_ctr(blocker / "sub" / "out", rows=10, progress=False)
    with pytest.raises(ValueError, match="not a directory"):
        write_ctr(blocker, rows=10, progress=False)
    assert _entries(tmp_path) == ["a_file"] and blocker.read_text() == "x"


def test_ctr_non_empty_output_needs_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    with pytest.raises(ValueError, match="not empty.*overwrite"):
        write_ctr(out, rows=10, progress=False)
    assert _entries(out) == ["keep.txt"]
    summary = write_ctr(out, rows=10, overwrite=True, progress=False)
    assert _entries(out) == ["part-00000.parquet"] and summary.rows == 10
    assert _entries(tmp_path) == ["out"]


def test_ctr_creates_missing_parents(tmp_path: Path) -> None:
    summary = write_ctr(tmp_path / "x" / "y" / "out", rows=10, progress=False)
    assert summary.path == (tmp_path / "x" / "y" / "out").absolute()
    assert _entries(tmp_path / "x" / "y") == ["out"]


def test_parts_row_groups_and_files_do_not_depend_on_write_chunks(tmp_path: Path) -> None:
    schema = pa.schema([("x", pa.int64())])
    layouts = []
    for name, chunk in (("a", 1), ("b", 7), ("c", 100)):
        with ParquetParts(tmp_path / name, schema, row_group_size=4, rows_per_file=10) as parts:
            for lo in range(0, 23, chunk):
                parts.write(pa.table({"x": np.arange(lo, min(lo + chunk, 23))}, schema=schema))
        layouts.append([[g.num_rows for g in _groups(f)] for f in parts.files])
        assert pq.read_table(tmp_path / name).column("x").to_pylist() == list(range(23))
    assert layouts[0] == layouts[1] == layouts[2] == [[4, 4, 2], [4, 4, 2], [3]]
    assert _digest(tmp_path / "a") == _digest(tmp_path / "c")


def _groups(path: Path) -> list[pq.RowGroupMetaData]:
    meta = pq.ParquetFile(path).metadata
    return [meta.row_group(i) for i in range(meta.num_row_groups)]


def test_parts_error_inside_leaves_nothing(tmp_path: Path) -> None:
    schema = pa.schema([("x", pa.int64())])
    with pytest.raises(RuntimeError), ParquetParts(tmp_path / "new" / "out", schema, row_group_size=2) as parts:
        parts.write(pa.table({"x": [1, 2, 3]}, schema=schema))
        raise RuntimeError("interrupted")
    assert _entries(tmp_path) == []
    old = tmp_path / "old"
    old.mkdir()
    (old / "keep.txt").write_text("old")
    with pytest.raises(RuntimeError), ParquetParts(old, schema, overwrite=True) as parts:
        parts.write(pa.table({"x": [1]}, schema=schema))
        raise RuntimeError("interrupted")
    assert _entries(tmp_path) == ["old"] and _entries(old) == ["keep.txt"]
    with pytest.raises(TypeError, match="differs from the output schema"), ParquetParts(tmp_path / "t", schema) as parts:
        parts.write(pa.table({"y": [1.0]}))
    assert _entries(tmp_path) == ["old"]


def test_power_law_ranks_follow_the_exponent() -> None:
    rng = np.random.default_rng(0)
    ranks = synthetic_sampling.power_law_ranks(rng, 1_000, 1.0, size=200_000)
    counts = np.bincount(ranks, minlength=1_000)
    assert counts[0] / counts[9] == pytest.approx(10 / 1, rel=0.35)  # ~ (r + 1) ** -1, continuous
    per_draw = synthetic_sampling.power_law_ranks(rng, np.array([1, 2, 50]), 0.8)
    assert per_draw[0] == 0 and 0 <= per_draw[1] < 2 and 0 <= per_draw[2] < 50


@pytest.fixture(scope="module")
def seq(tmp_path_factory: pytest.TempPathFactory) -> tuple[synthetic_seq.SeqSummary, pa.Table]:
    out = tmp_path_factory.mktemp("seq") / "data"
    summary = write_sequences(out, users=500, seed=2, progress=False)
    return summary, pq.read_table(out)


def test_sequences_same_seed_same_bytes(tmp_path: Path) -> None:
    write_sequences(tmp_path / "a", users=120, seed=5, progress=False)
    write_sequences(tmp_path / "b", users=120, seed=5, progress=False)
    write_sequences(tmp_path / "c", users=120, seed=6, progress=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")


def test_sequences_order_lengths_and_uniqueness(seq: tuple[synthetic_seq.SeqSummary, pa.Table]) -> None:
    summary, table = seq
    assert table.schema.equals(SEQ_ARROW_SCHEMA, check_metadata=False)
    user = table.column("user_id").to_numpy()
    item = table.column("item_id").to_numpy()
    ts = table.column("timestamp").to_numpy()
    assert summary.rows == table.num_rows and summary.users == 500
    assert (np.diff(user) >= 0).all() and set(np.unique(user)) == set(range(1, 501))
    same_user = user[1:] == user[:-1]
    assert (np.diff(ts)[same_user] > 0).all()  # strictly increasing per user
    lengths = np.bincount(user)[1:]
    model = SequenceModel()
    assert lengths.min() >= model.min_len and lengths.max() <= model.max_len and lengths.std() > 5
    assert len(np.unique(user * (item.max() + 1) + item)) == len(item)  # no user repeats an item
    assert summary.items == len(np.unique(item))


def test_sequences_carry_next_item_signal(seq: tuple[synthetic_seq.SeqSummary, pa.Table]) -> None:
    """HR@10 of the next item: the previous item's top-10 successors beat the top-10 popular items."""
    _, table = seq
    user = table.column("user_id").to_numpy()
    item = table.column("item_id").to_numpy()
    same = user[1:] == user[:-1]
    prev, nxt = item[:-1][same].tolist(), item[1:][same].tolist()
    half = len(prev) // 2
    popular = set(np.argsort(-np.bincount(nxt[:half]), kind="stable")[:10].tolist())
    successors: dict[int, dict[int, int]] = {}
    for a, b in zip(prev[:half], nxt[:half]):
        successors.setdefault(a, {}).setdefault(b, 0)
        successors[a][b] += 1
    top = {a: set(sorted(c, key=lambda b: (-c[b], b))[:10]) for a, c in successors.items()}
    popularity_hr = np.mean([b in popular for b in nxt[half:]])
    markov_hr = np.mean([b in top.get(a, ()) for a, b in zip(prev[half:], nxt[half:])])
    assert markov_hr > 3 * popularity_hr


@pytest.mark.parametrize("users", [0, -1, 1.5])
def test_sequences_bad_input(tmp_path: Path, users: object) -> None:
    with pytest.raises(ValueError, match="users must be a positive integer"):
        write_sequences(tmp_path / "out", users=users, progress=False)  # type: ignore[arg-type]
    out = tmp_path / "full"
    out.mkdir()
    (out / "x").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        write_sequences(out, users=10, progress=False)
    assert _entries(tmp_path) == ["full"] and _entries(out) == ["x"]

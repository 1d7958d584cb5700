"""Readers of public dataset formats, on small fixtures written in the real formats (quirks included)."""

from __future__ import annotations

import datetime as dt
import doctest
import gzip
import importlib
import json
import random
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys_embed.features import FeatureKind, NumericTransform, Schema
from recsys_embed.pipelines.derived import behaviour_histories, history_schema, leave_one_out, sequence_schema, user_sequences
from recsys_embed.pipelines.readers import (
    amazon_events,
    avazu_schema,
    criteo_schema,
    movielens_ctr,
    movielens_schema,
    read_amazon_metadata,
    read_avazu,
    read_criteo,
    read_movielens,
    read_taobao,
)

READER_MODULES = ["readers.amazon", "readers.avazu", "readers.criteo", "readers.libfm", "derived.histories", "readers.movielens",
                  "derived.output", "derived.sequences", "readers.taobao"]


def write(path: Path, text: str, newline: str = "\n", final_newline: bool = True) -> Path:
    """Write lines of ``text`` with the given line ending, optionally without the last one."""
    body = newline.join(text.strip("\n").split("\n"))
    path.write_bytes((body + (newline if final_newline else "")).encode())
    return path


def criteo_line(label: str | None, ints: list[str], cats: list[str]) -> str:
    assert len(ints) == 13 and len(cats) == 26
    return "\t".join(([label] if label is not None else []) + ints + cats)


INTS = ["1", "-1", "", "0", "1382", "4", "15", "2", "181", "1", "2", "", "2"]
CATS = ["68fd1e64", "80e26c9b", "", "7e0ccccf"] + [""] * 21 + ["e5ba7672"]


# ---------------------------------------------------------------- doctests (the runnable examples)

@pytest.mark.parametrize("module", READER_MODULES)
def test_docstring_examples_run(module: str) -> None:
    result = doctest.testmod(importlib.import_module(f"recsys_embed.pipelines.{module}"))
    assert result.attempted > 0 and result.failed == 0


# ---------------------------------------------------------------- Criteo

def test_criteo_types_empty_fields_negative_i2_crlf_and_missing_final_newline(tmp_path: Path) -> None:
    rows = [criteo_line("0", INTS, CATS), criteo_line("1", [""] * 13, [""] * 26), criteo_line("1", INTS, CATS)]
    path = write(tmp_path / "train.txt", "\n".join(rows), newline="\r\n", final_newline=False)
    frame = read_criteo(path).collect()
    assert frame.columns == ["label"] + [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
    assert frame.schema["label"] == pl.Int8
    assert all(frame.schema[f"I{i}"] == pl.Int64 for i in range(1, 14))
    assert all(frame.schema[f"C{i}"] == pl.String for i in range(1, 27))
    assert frame["label"].to_list() == [0, 1, 1]
    assert frame["I2"].to_list() == [-1, None, -1]
    assert frame["I3"].null_count() == 3
    assert frame["C1"].to_list() == ["68fd1e64", None, "68fd1e64"]
    assert frame["C26"].to_list() == ["e5ba7672", None, "e5ba7672"]  # no '\r' left on the last field


def test_criteo_test_set_has_no_label(tmp_path: Path) -> None:
    path = write(tmp_path / "test.txt", criteo_line(None, INTS, CATS))
    frame = read_criteo(path, has_label=False).collect()
    assert frame.width == 39 and "label" not in frame.columns
    assert frame["I1"].to_list() == [1]
    with pytest.raises(ValueError, match=r"line 1 has 39 column\(s\).*expected 40"):
        read_criteo(path)  # the test file read as if it had labels


@pytest.mark.parametrize(
    "bad_line, message",
    [
        (criteo_line("1", INTS, CATS)[:-9], r"line 3 has 39 column\(s\) separated by '\\t', expected 40"),
        (criteo_line("1", INTS, CATS) + "\textra", r"line 3 has 41 column\(s\) separated by '\\t', expected 40"),
        ("", r"line 3 has 1 column\(s\) separated by '\\t' \(it is blank\)"),
        (criteo_line("yes", INTS, CATS), r"line 3, column 'label': expected an integer \(Int8\), got 'yes'"),
        (criteo_line("", INTS, CATS), r"line 3, column 'label': expected an integer"),
        (criteo_line("1", ["3.5"] + INTS[1:], CATS), r"line 3, column 'I1': expected an integer \(Int64\), got '3.5'"),
    ],
)
def test_criteo_bad_lines_name_file_line_and_expectation(tmp_path: Path, bad_line: str, message: str) -> None:
    good = criteo_line("1", INTS, CATS)
    path = write(tmp_path / "day_0", "\n".join([good, good, bad_line, good]) + "\n")
    with pytest.raises(ValueError, match=message) as info:
        read_criteo(path)
    assert str(path) in str(info.value)


def test_criteo_gzip_file(tmp_path: Path) -> None:
    path = tmp_path / "day_0.gz"
    good = criteo_line("1", INTS, CATS)
    with gzip.open(path, "wt") as f:
        f.write(good + "\n" + good + "\n")
    assert read_criteo(path).collect()["I2"].to_list() == [-1, -1]
    with gzip.open(path, "wt") as f:
        f.write(good + "\n" + good[:20] + "\n")
    with pytest.raises(ValueError, match=r"day_0.gz: line 2 has 9 column"):
        read_criteo(path)


def test_criteo_empty_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("")
    with pytest.raises(ValueError, match="no data lines"):
        read_criteo(path)


def test_criteo_schema_handles_negative_i2_and_both_id_strategies(tmp_path: Path) -> None:
    path = write(tmp_path / "train.txt", criteo_line("1", INTS, CATS))
    columns = set(read_criteo(path).collect_schema().names())
    schema = criteo_schema()
    assert set(schema.source_columns) <= columns and schema.label == "label"
    assert schema["I2"].transform is NumericTransform.BUCKETIZE and schema["I2"].is_sparse
    assert all(schema[f"I{i}"].transform is NumericTransform.LOG1P_STANDARDIZE for i in (1, *range(3, 14)))
    assert schema["C1"].min_count == 10
    hashed = criteo_schema(categorical_ids="hashing", hash_buckets=1000, numeric="bucketize")
    assert {hashed[f"C{i}"].salt for i in range(1, 27)} == {f"C{i}" for i in range(1, 27)}
    assert all(hashed[f"I{i}"].transform is NumericTransform.BUCKETIZE for i in range(1, 14))
    assert Schema.from_json(hashed.to_json()) == hashed
    with pytest.raises(ValueError, match="categorical_ids must be"):
        criteo_schema(categorical_ids="onehot")  # type: ignore[arg-type]


# ---------------------------------------------------------------- Avazu

AVAZU_HEADER = (
    "id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,app_domain,app_category,"
    "device_id,device_ip,device_model,device_type,device_conn_type,C14,C15,C16,C17,C18,C19,C20,C21"
)
AVAZU_TAIL = "1005,0,1fbe01fe,f3845767,28905ebd,ecad2386,7801e8d9,07d7df22,a99f214a,ddd2926e,44956a24,1,2,15706,320,50,1722,0,35,-1,79"


def test_avazu_parses_hour_renames_click_and_handles_crlf_and_bom(tmp_path: Path) -> None:
    rows = [
        f"1000009418151094273,0,14102100,{AVAZU_TAIL}",
        f"10000169349117863715,1,14102623,{AVAZU_TAIL}",  # id above the Int64 range
    ]
    text = "\ufeff" + "\n".join([AVAZU_HEADER, *rows])  # a byte-order mark, as Windows tools write
    frame = read_avazu(write(tmp_path / "train.csv", text, newline="\r\n", final_newline=False)).collect()
    assert frame.columns[:5] == ["label", "id", "timestamp", "hour_of_day", "weekday"]
    assert frame["label"].dtype == pl.Int8 and frame["label"].to_list() == [0, 1]
    assert frame["id"].to_list() == ["1000009418151094273", "10000169349117863715"]
    assert frame["timestamp"].to_list() == [dt.datetime(2014, 10, 21, 0), dt.datetime(2014, 10, 26, 23)]
    assert frame["hour_of_day"].to_list() == [0, 23]
    assert frame["weekday"].to_list() == [2, 7]  # Tuesday, Sunday
    assert frame.schema["C14"] == pl.Int64 and frame.schema["site_id"] == pl.String
    assert frame["C21"].to_list() == [79, 79]
    assert set(avazu_schema().source_columns) <= set(frame.columns)


def test_avazu_test_set_without_click_and_reordered_columns(tmp_path: Path) -> None:
    names = AVAZU_HEADER.split(",")
    values = f"1000009418151094273,0,14102100,{AVAZU_TAIL}".split(",")
    keep = [i for i, n in enumerate(names) if n != "click"][::-1]  # no click, columns reversed
    path = write(tmp_path / "test.csv", ",".join(names[i] for i in keep) + "\n" + ",".join(values[i] for i in keep))
    frame = read_avazu(path).collect()
    assert "label" not in frame.columns
    assert frame.row(0, named=True)["site_domain"] == "f3845767" and frame["hour_of_day"].to_list() == [0]


@pytest.mark.parametrize(
    "row, message",
    [
        (f"1,0,14102100,{AVAZU_TAIL},9", r"line 3 has 25 column\(s\) separated by ',', expected 24"),
        (f"1,0,14103224,{AVAZU_TAIL}", r"line 3, column 'hour': expected YYMMDDHH"),
        (f"1,no,14102100,{AVAZU_TAIL}", r"line 3, column 'click': expected an integer"),
    ],
)
def test_avazu_bad_rows(tmp_path: Path, row: str, message: str) -> None:
    path = write(tmp_path / "train.csv", "\n".join([AVAZU_HEADER, f"1,0,14102100,{AVAZU_TAIL}", row]))
    with pytest.raises(ValueError, match=message) as info:
        read_avazu(path)
    assert str(path) in str(info.value)


def test_avazu_header_missing_a_column(tmp_path: Path) -> None:
    path = write(tmp_path / "train.csv", AVAZU_HEADER.replace("hour,", "") + "\n")
    with pytest.raises(ValueError, match=r"train.csv: the header \(line 1\).*missing \['hour'\]"):
        read_avazu(path)


# ---------------------------------------------------------------- MovieLens

ML1M = "1::1193::5::978300760\n1::661::3::978302109\n2::914::1::978299000\n1::3408::4::978300275"
ML100K = "196\t242\t3\t881250949\n186\t302\t4\t891717742\n22\t377\t1\t878887116"


@pytest.mark.parametrize("name, text", [("ratings.dat", ML1M), ("ml-1m.txt", ML1M), ("u.data", ML100K), ("u1.base", ML100K)])
def test_movielens_detects_format_by_name_or_content(tmp_path: Path, name: str, text: str) -> None:
    frame = read_movielens(write(tmp_path / name, text, newline="\r\n", final_newline=False)).collect()
    assert frame.schema == pl.Schema(
        {"user_id": pl.Int64, "item_id": pl.Int64, "rating": pl.Int8, "timestamp": pl.Datetime("us")}
    )
    first = [int(v) for v in text.split("\n")[0].replace("::", "\t").split("\t")]
    assert frame.row(0) == (first[0], first[1], first[2], dt.datetime(1970, 1, 1) + dt.timedelta(seconds=first[3]))
    assert frame.height == len(text.split("\n"))


def test_movielens_ctr_label_rule(tmp_path: Path) -> None:
    frame = movielens_ctr(write(tmp_path / "ratings.dat", ML1M)).collect()
    assert frame.select("item_id", "rating", "label").rows() == [(1193, 5, 1), (914, 1, 0), (3408, 4, 1)]
    assert frame["label"].dtype == pl.Int8
    assert set(movielens_schema().source_columns) <= set(frame.columns)


@pytest.mark.parametrize(
    "text, message",
    [
        (ML1M + "\n5::10::x::978300760", r"line 5, column 'rating': expected an integer \(Int8\), got 'x'"),
        (ML1M + "\n5::10::4", r"line 5 has 3 column\(s\) separated by '::', expected 4"),
        ("1;2;3;4\n", r"fits none of the read_movielens variants tried \(separator='::', header=False;.*pass separator="),
        ("1,2,3,4\n", r"the header \(line 1\) lacks column\(s\) \['user_id', 'item_id', 'rating', 'timestamp'\].*columns="),
    ],
)
def test_movielens_bad_input(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "ratings.txt", text)
    with pytest.raises(ValueError, match=message) as info:
        read_movielens(path)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------- Amazon and Taobao

def amazon_fixture(folder: Path) -> tuple[Path, Path]:
    reviews = [
        {"reviewerID": "U2", "asin": "B3", "overall": 4.0, "unixReviewTime": 300, "reviewText": "ok", "helpful": [0, 0]},
        {"reviewerID": "U1", "asin": "B2", "overall": 5.0, "unixReviewTime": 200, "summary": "great"},
        {"reviewerID": "U1", "asin": "B1", "overall": 3.0, "unixReviewTime": 100},
        {"reviewerID": "U1", "asin": "B3", "overall": 2.0, "unixReviewTime": 200},
        {"reviewerID": "U2", "asin": "B1", "overall": 1.0, "unixReviewTime": 100},
        {"reviewerID": "U3", "asin": "B4", "overall": 5.0, "unixReviewTime": 50},
    ]
    metadata = [
        {"asin": "B1", "categories": [["Electronics", "Computers"], ["Electronics", "Cables"]]},  # 2014 strict JSON
        {"asin": "B2", "category": ["Electronics", "Audio", "Headphones"], "main_cat": "All Electronics"},  # 2018
        {"asin": "B2", "category": ["Books"]},  # listed twice: first line wins
        {"asin": "B3", "title": "no category"},
    ]
    review_path = write(folder / "reviews_Electronics_5.json", "\n".join(json.dumps(r) for r in reviews) + "\n\n", "\r\n")
    meta_path = write(folder / "meta_Electronics.json", "\n".join(json.dumps(m) for m in metadata))
    return review_path, meta_path


def test_amazon_reviews_and_metadata(tmp_path: Path) -> None:
    reviews, metadata = amazon_fixture(tmp_path)
    events = amazon_events(reviews, metadata).collect()
    assert events.columns == ["user_id", "item_id", "rating", "timestamp", "item_category"]
    assert events.height == 6 and events["rating"].dtype == pl.Float32
    category = dict(zip(events["item_id"], events["item_category"]))
    assert category == {"B1": "Cables", "B2": "Headphones", "B3": None, "B4": None}
    assert read_amazon_metadata(metadata).collect().height == 4


def test_amazon_rejects_python_literal_metadata_and_bad_ratings(tmp_path: Path) -> None:
    meta = write(tmp_path / "meta.json", json.dumps({"asin": "B1"}) + "\n" + str({"asin": "B2", "categories": [["x"]]}))
    with pytest.raises(ValueError, match=r"meta.json: line 2, field 'asin'.*JSON object"):
        read_amazon_metadata(meta)
    reviews = write(tmp_path / "reviews.json", json.dumps({"reviewerID": "U", "asin": "B", "overall": "five", "unixReviewTime": 1}))
    with pytest.raises(ValueError, match=r"reviews.json: line 1, field 'overall': expected a number"):
        amazon_events(reviews)


TAOBAO = """1,2268318,2520377,pv,1511544070
1,2333346,2520771,pv,1511561733
1,2268318,2520377,pv,1511544070
1,2576651,149192,cart,1511572885
100,2268318,2520377,buy,1511544070"""


def test_taobao_reads_behaviours(tmp_path: Path) -> None:
    frame = read_taobao(write(tmp_path / "UserBehavior.csv", TAOBAO, final_newline=False)).collect()
    assert frame.columns == ["user_id", "item_id", "item_category", "behavior", "timestamp"]
    assert frame["behavior"].dtype == pl.Enum(["pv", "buy", "cart", "fav"])
    assert frame["behavior"].to_list() == ["pv", "pv", "pv", "cart", "buy"]
    assert frame["timestamp"][0] == dt.datetime(2017, 11, 24, 17, 21, 10)


def test_taobao_unknown_behaviour(tmp_path: Path) -> None:
    path = write(tmp_path / "UserBehavior.csv", TAOBAO + "\n1,2,3,like,4")
    with pytest.raises(ValueError, match=r"line 6, column 'behavior': expected one of \['pv', 'buy', 'cart', 'fav'\], got 'like'"):
        read_taobao(path)


# ---------------------------------------------------------------- behaviour histories

def random_events(seed: int, users: int = 25, items: int = 30, events: int = 400) -> pl.DataFrame:
    """Unsorted events with many same-timestamp ties and exact duplicates; category = item // 5."""
    rng = random.Random(seed)
    rows = []
    for _ in range(events):
        user, item, ts = rng.randrange(users), int(rng.paretovariate(1.2)) % items, rng.randrange(12)
        rows.append((user, item, item // 5, ts))
        if rng.random() < 0.1:
            rows.append((user, item, item // 5, ts))  # exact duplicate
    rng.shuffle(rows)
    return pl.DataFrame(rows, schema=["user_id", "item_id", "item_category", "timestamp"], orient="row")


def reference_positives(events: pl.DataFrame, max_len: int, min_history: int) -> list[tuple]:
    """The impression rows by plain Python: history = the user's distinct events strictly earlier in time."""
    by_user: dict[int, list[tuple[int, int, int]]] = {}
    for user, item, cat, ts in sorted(set(events.rows())):
        by_user.setdefault(user, []).append((ts, item, cat))
    out = []
    for user in sorted(by_user):
        seq = sorted(by_user[user])
        for ts, item, cat in seq:
            earlier = [(i, c) for t, i, c in seq if t < ts][-max_len:]
            if len(earlier) >= min_history:
                out.append((user, item, cat, ts, [i for i, _ in earlier], [c for _, c in earlier]))
    return out


def test_histories_match_a_reference_and_never_look_ahead(tmp_path: Path) -> None:
    events = random_events(0)
    out = behaviour_histories(events.lazy(), tmp_path / "hist", max_len=3, negatives=0, min_history=1).collect()
    assert out.columns == ["user_id", "item_id", "item_category", "timestamp", "hist_item_id", "hist_item_category", "label"]
    assert out["label"].unique().to_list() == [1] and out["label"].dtype == pl.Int8
    assert out.rows() == [(*r, 1) for r in reference_positives(events, max_len=3, min_history=1)]
    assert out["hist_item_id"].list.len().max() == 3
    no_min = behaviour_histories(events.lazy(), tmp_path / "all", max_len=50, negatives=0, min_history=0).collect()
    assert no_min.height == events.unique().height  # every distinct event is a target once


def test_histories_negatives_are_unseen_popular_items_with_the_positives_history(tmp_path: Path) -> None:
    events = random_events(1)
    out = behaviour_histories(events.lazy(), tmp_path / "hist", max_len=5, negatives=3, seed=7).collect()
    positives = out.filter(pl.col("label") == 1)
    negatives = out.filter(pl.col("label") == 0)
    assert negatives.height == 3 * positives.height
    labels = out["label"].to_list()
    assert labels == [1, 0, 0, 0] * positives.height  # each positive followed by its negatives
    seen = set(zip(events["user_id"], events["item_id"]))
    assert not any((u, i) in seen for u, i in zip(negatives["user_id"], negatives["item_id"]))
    shared = ["user_id", "timestamp", "hist_item_id", "hist_item_category"]
    assert out.select(shared).gather(np.repeat(np.arange(0, out.height, 4), 4)).equals(out.select(shared))
    assert (negatives["item_category"] == negatives["item_id"] // 5).all()


def test_histories_deterministic_under_seed_and_independent_of_partitions(tmp_path: Path) -> None:
    events = random_events(2).lazy()
    one = behaviour_histories(events, tmp_path / "a", negatives=2, seed=3).collect()
    again = behaviour_histories(events, tmp_path / "b", negatives=2, seed=3).collect()
    split = behaviour_histories(events, tmp_path / "c", negatives=2, seed=3, partitions=4).collect()
    other = behaviour_histories(events, tmp_path / "d", negatives=2, seed=4).collect()
    assert one.equals(again)
    assert len(list((tmp_path / "c").glob("part-*.parquet"))) > 1
    keys = ["user_id", "timestamp", "item_id", "label"]
    assert one.sort(keys, maintain_order=True).equals(split.sort(keys, maintain_order=True))
    assert not one["item_id"].equals(other["item_id"])
    assert one.filter(pl.col("label") == 1).equals(other.filter(pl.col("label") == 1))


def test_negatives_follow_item_popularity(tmp_path: Path) -> None:
    # 200 users with two distinct events each on items 0..1; items 2..7 have popularity 1:2:4:8:16:32
    rows = [(u, u % 2, 0) for u in range(200)] + [(u, 1 - u % 2, 1) for u in range(200)]
    rows += [(1000 + k, item, 0) for item in range(2, 8) for k in range(2 ** (item - 2))]
    events = pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp"], orient="row")
    out = behaviour_histories(events.lazy(), tmp_path / "h", negatives=20, category=None).collect()
    drawn = out.filter((pl.col("label") == 0) & (pl.col("user_id") < 1000))["item_id"]
    freq = np.array([(drawn == i).sum() for i in range(2, 8)]) / len(drawn)
    expected = np.array([1, 2, 4, 8, 16, 32]) / 63  # items 0 and 1 are seen by every such user
    assert drawn.len() == 200 * 20 and np.abs(freq - expected).max() < 0.03, freq


def test_histories_with_string_ids_from_amazon(tmp_path: Path) -> None:
    reviews, metadata = amazon_fixture(tmp_path)
    out = behaviour_histories(amazon_events(reviews, metadata), tmp_path / "hist", negatives=1).collect()
    positives = out.filter(pl.col("label") == 1).select("user_id", "item_id", "hist_item_id", "hist_item_category")
    # U1: B1@100, then B2 and B3 tie at 200 (ordered by item id, neither sees the other); U2: B1@100, B3@300
    assert positives.rows() == [
        ("U1", "B2", ["B1"], ["Cables"]),
        ("U1", "B3", ["B1"], ["Cables"]),
        ("U2", "B3", ["B1"], ["Cables"]),
    ]
    assert set(out.filter(pl.col("label") == 0)["item_id"]) <= {"B2", "B4"}
    assert set(history_schema().source_columns) <= set(out.columns)


def test_histories_user_who_saw_every_item_and_atomic_output(tmp_path: Path) -> None:
    events = pl.LazyFrame({"user_id": [1, 1, 2], "item_id": [10, 11, 10], "timestamp": [1, 2, 1]})
    with pytest.raises(ValueError, match="user 1 interacted with every item"):
        behaviour_histories(events, tmp_path / "h", category=None)
    assert list(tmp_path.iterdir()) == []  # no half-written output, no temporary folder left
    behaviour_histories(events, tmp_path / "h", category=None, negatives=0)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        behaviour_histories(events, tmp_path / "h", category=None, negatives=0)
    again = behaviour_histories(events, tmp_path / "h", category=None, negatives=0, max_len=1, overwrite=True)
    assert again.collect()["hist_item_id"].to_list() == [[10]]
    assert [p.name for p in tmp_path.iterdir()] == ["h"]


def test_histories_argument_errors(tmp_path: Path) -> None:
    events = pl.LazyFrame({"user_id": [1], "item_id": [2], "timestamp": [3]})
    with pytest.raises(ValueError, match=r"no column 'item_category'.*category=None"):
        behaviour_histories(events, tmp_path / "h")
    with pytest.raises(ValueError, match="max_len must be >= 1"):
        behaviour_histories(events, tmp_path / "h", category=None, max_len=0)


def test_taobao_histories_end_to_end(tmp_path: Path) -> None:
    path = write(tmp_path / "UserBehavior.csv", TAOBAO + "\n100,2333346,2520771,pv,1511561733\n7,1,1,pv,1")
    clicks = read_taobao(path).filter(pl.col("behavior") == "pv")
    out = behaviour_histories(clicks, tmp_path / "hist", negatives=1).collect()
    positives = out.filter(pl.col("label") == 1)
    assert positives.select("user_id", "item_id", "hist_item_id", "hist_item_category").rows() == [
        (1, 2333346, [2268318], [2520377]),  # the duplicate pv counts once
    ]
    assert out.filter(pl.col("label") == 0)["item_id"].to_list() == [1]  # the only item user 1 never viewed


# ---------------------------------------------------------------- BERT4Rec sequences

def test_user_sequences_sort_ties_duplicates_and_min_length(tmp_path: Path) -> None:
    text = "\n".join(
        ["3::30::4::50", "3::10::4::10", "3::20::4::10", "3::20::4::10", "3::40::4::60", "3::10::5::70",  # user 3
         "4::1::4::1", "4::2::4::2"]  # user 4: too short
    )
    sequences = user_sequences(read_movielens(write(tmp_path / "ratings.dat", text)), min_length=3)
    assert sequences.rows() == [(3, [10, 20, 30, 40, 10])]  # tie at t=10 by item id; duplicate once; repeat kept
    assert sequences.schema == pl.Schema({"user_id": pl.Int64, "items": pl.List(pl.Int64)})


def test_leave_one_out_protocol() -> None:
    sequences = pl.DataFrame({"user_id": [1, 2], "items": [[5, 6, 7, 8, 9], [1, 2, 3]]})
    train, valid, test = leave_one_out(sequences)
    assert train.rows() == [(1, [5, 6, 7]), (2, [1])]
    assert valid.rows() == [(1, [5, 6, 7], 8), (2, [1], 2)]
    assert test.rows() == [(1, [5, 6, 7, 8], 9), (2, [1, 2], 3)]
    with pytest.raises(ValueError, match=r"'user_id': 3.*fewer than 3 items"):
        leave_one_out(pl.DataFrame({"user_id": [3], "items": [[1, 2]]}))
    schema = sequence_schema(max_len=20)
    assert schema["items"].kind is FeatureKind.SEQUENCE and schema.label is None
    assert set(schema.source_columns) <= set(train.columns)

"""The layouts users have of each public format, read by the same readers (files written here)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from recsys_embed.pipelines.readers import amazon_events, avazu_schema, read_amazon_reviews, read_avazu, read_criteo, read_movielens

CRITEO_NAMES = ["label", *(f"I{i}" for i in range(1, 14)), *(f"C{i}" for i in range(1, 27))]
CRITEO_ROW = ["1", "5", "-1", *[""] * 11, "68fd1e64", *[""] * 24, "e5ba7672"]


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_criteo_tsv_and_csv_with_header_read_alike(tmp_path: Path) -> None:
    tsv = read_criteo(write(tmp_path / "train.txt", ["\t".join(CRITEO_ROW)] * 2)).collect()
    csv = read_criteo(write(tmp_path / "sample.csv", [",".join(CRITEO_NAMES)] + [",".join(CRITEO_ROW)] * 2)).collect()
    assert csv.equals(tsv) and csv.columns == CRITEO_NAMES
    assert csv.row(0)[:3] == (1, 5, -1) and csv["C26"].to_list() == ["e5ba7672"] * 2


def test_criteo_header_in_another_order_and_without_label(tmp_path: Path) -> None:
    names, row = CRITEO_NAMES[1:][::-1], CRITEO_ROW[1:][::-1]
    frame = read_criteo(write(tmp_path / "test.csv", [",".join(names), ",".join(row)])).collect()
    assert frame.columns == CRITEO_NAMES[1:] and frame["I1"].to_list() == [5]


def test_criteo_other_separators_are_passed_as_options(tmp_path: Path) -> None:
    path = write(tmp_path / "train.ssv", [";".join(CRITEO_ROW)])
    with pytest.raises(ValueError, match=r"train.ssv: line 1 .* fits none of the read_criteo variants tried "
                                         r"\(separator='\\t', header=False; separator=',', header=True.*pass separator="):
        read_criteo(path)
    assert read_criteo(path, separator=";").collect()["I2"].to_list() == [-1]
    headed = write(tmp_path / "headed.tsv", ["\t".join(CRITEO_NAMES), "\t".join(CRITEO_ROW)])
    assert read_criteo(headed).collect().height == 1
    with pytest.raises(ValueError, match=r"line 1, column 'label': expected an integer.*read as separator='\\t', header=False"):
        read_criteo(headed, header=False)


def test_criteo_csv_errors_name_line_and_variant(tmp_path: Path) -> None:
    path = write(tmp_path / "s.csv", [",".join(CRITEO_NAMES), ",".join(CRITEO_ROW), ",".join(CRITEO_ROW[:-1])])
    with pytest.raises(ValueError, match=r"s.csv: line 3 has 39 column\(s\) separated by ','.*read as separator=',', header=True"):
        read_criteo(path)
    bad_header = write(tmp_path / "h.csv", [",".join(["label", "I1", "X"] + CRITEO_NAMES[3:]), ",".join(CRITEO_ROW)])
    with pytest.raises(ValueError, match=r"h.csv: the header \(line 1\) does not name the Criteo columns: missing \['I2'\], unknown \['X'\]"):
        read_criteo(bad_header)


def test_avazu_pre_encoded(tmp_path: Path) -> None:
    path = write(tmp_path / "avazu_x4.csv", ["label,feat_1,feat_2,feat_3", "1,5,6,7", "0,7,,9"])
    frame = read_avazu(path).collect()
    assert frame.columns == ["label", "feat_1", "feat_2", "feat_3"] and frame["label"].dtype == pl.Int8
    assert frame.rows() == [(1, "5", "6", "7"), (0, "7", None, "9")]
    schema = avazu_schema(columns=["feat_1", "feat_2", "feat_3"], min_count=1)
    assert schema.source_columns == ["feat_1", "feat_2", "feat_3", "label"]
    bad = write(tmp_path / "bad.csv", ["label,feat_1", "1,5", "2,6"])
    with pytest.raises(ValueError, match=r"bad.csv: line 3, column 'label': expected 0 or 1, got '2'"):
        read_avazu(bad)
    other = write(tmp_path / "other.csv", ["y,feat_1", "1,5"])
    with pytest.raises(ValueError, match=r"does not name the Avazu columns.*or, pre-encoded, a header 'label,feat_1"):
        read_avazu(other)


ML_ROWS = [("1", "1193", "5", "978300760"), ("2", "661", "3", "978302109")]


@pytest.mark.parametrize(
    "name, lines",
    [
        ("ratings.dat", ["::".join(r) for r in ML_ROWS]),
        ("u.data", ["\t".join(r) for r in ML_ROWS]),
        ("ratings.csv", ["userId,movieId,rating,timestamp"] + [",".join(r) for r in ML_ROWS]),
        ("ml1m.tsv", ["user_id\tmovie_id\trating\ttimestamp"] + ["\t".join(r) for r in ML_ROWS]),
        ("merged.csv", ["user_id,movie_id,rating,timestamp,title,genres"]
         + [",".join(r) + ',"Title, The (1995)",Drama|Comedy' for r in ML_ROWS]),
    ],
)
def test_movielens_variants_read_alike(tmp_path: Path, name: str, lines: list[str]) -> None:
    frame = read_movielens(write(tmp_path / name, lines)).collect()
    assert frame.select("user_id", "item_id").rows() == [(1, 1193), (2, 661)]
    assert frame["rating"].cast(pl.Float64).to_list() == [5.0, 3.0]
    assert frame["timestamp"][0] == dt.datetime(2000, 12, 31, 22, 12, 40)
    if name == "merged.csv":
        assert frame["genres"].to_list() == ["Drama|Comedy"] * 2 and frame["title"][0] == "Title, The (1995)"


def test_movielens_csv_column_names_and_half_stars(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", ["uid,mid,stars,timestamp", "1,31,2.5,1260759144"])
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['user_id', 'item_id', 'rating'\].*pass columns="):
        read_movielens(path)
    frame = read_movielens(path, columns={"user_id": "uid", "item_id": "mid", "rating": "stars"}).collect()
    assert frame.row(0)[:3] == (1, 31, 2.5)
    bad = write(tmp_path / "bad.csv", ["userId,movieId,rating,timestamp", "1,31,2.5,1260759144", "1,x,2,1"])
    with pytest.raises(ValueError, match=r"bad.csv: line 3, column 'item_id': expected an integer \(Int64\), got 'x'"):
        read_movielens(bad)


def test_amazon_din_csv(tmp_path: Path) -> None:
    path = write(tmp_path / "electronics.csv", ["user_id,item_id,time,cate_id", "0,13179,1400457600,Cables", "0,171,1400544000,"])
    frame = read_amazon_reviews(path).collect()
    assert frame.columns == ["user_id", "item_id", "rating", "timestamp", "item_category"]
    assert frame.row(0) == ("0", "13179", None, dt.datetime(2014, 5, 19), "Cables")
    assert frame["item_category"].to_list() == ["Cables", None]
    assert amazon_events(path).collect().equals(frame)
    with pytest.raises(ValueError, match="already has item categories"):
        amazon_events(path, tmp_path / "meta.json")
    renamed = write(tmp_path / "r.tsv", ["uid\tiid\tts", "u1\ti1\t5"])
    assert read_amazon_reviews(renamed, separator="\t", columns={"user_id": "uid", "item_id": "iid", "timestamp": "ts"}).collect().row(0) == (
        "u1", "i1", None, dt.datetime(1970, 1, 1, 0, 0, 5))
    bad = write(tmp_path / "bad.csv", ["user_id,item_id,time", "0,1,yesterday"])
    with pytest.raises(ValueError, match=r"bad.csv: line 2, column 'timestamp': expected an integer \(Int64\), got 'yesterday'"):
        read_amazon_reviews(bad)


def test_readme_readers_example_runs(tmp_path: Path) -> None:
    text = (Path(__file__).parents[1] / "README.md").read_text()
    section = text[text.index("## Public datasets"):]
    code = section[section.index("```python\n") + len("```python\n"):]
    code = code[: code.index("```")]
    full = ",".join(["1", *(str(i) for i in range(13)), *(f"{i:08x}" for i in range(26))])
    criteo_csv = write(tmp_path / "sample.csv", [",".join(CRITEO_NAMES)] + [full] * 3)
    libfm_file = write(tmp_path / "frappe.libfm", ["1 0:1 5:1", "-1 1:1 6:1", "-1 0:1 6:1", "1 1:1 5:1"])
    namespace = {"criteo_csv": criteo_csv, "libfm_file": libfm_file, "out_dir": tmp_path / "splits"}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["pipeline"].state.tables["field_1"].size == 2
    assert sorted(p.name for p in (tmp_path / "splits").iterdir()) == ["train", "valid"]

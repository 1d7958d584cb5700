"""The schema: JSON/YAML/TOML files, validation with clear errors, the fingerprint."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

from recsys_embed import features
from recsys_embed.features import FeatureSpec, Schema

YAML = """
label: click
group: user_id
features:
  - {name: user_id, ids: hashing, hash_buckets: 1000}
  - {name: item_id, embedding_dim: 8, min_count: 2}
  - name: hist_item_id
    kind: sequence
    table: item_id
    max_len: 20
    delimiter: "|"
    embedding_dim: 8
    min_count: 2
  - {name: price, kind: numeric, transform: log1p_standardize, fill_value: 0}
"""

TOML = """
label = "click"
group = "user_id"

[[features]]
name = "user_id"
ids = "hashing"
hash_buckets = 1000

[[features]]
name = "item_id"
embedding_dim = 8
min_count = 2

[[features]]
name = "hist_item_id"
kind = "sequence"
table = "item_id"
max_len = 20
delimiter = "|"
embedding_dim = 8
min_count = 2

[[features]]
name = "price"
kind = "numeric"
transform = "log1p_standardize"
fill_value = 0
"""


def expected_schema() -> Schema:
    return Schema(
        features=[
            FeatureSpec("user_id", ids="hashing", hash_buckets=1000),
            FeatureSpec("item_id", embedding_dim=8, min_count=2),
            FeatureSpec("hist_item_id", kind="sequence", table="item_id", max_len=20, delimiter="|", embedding_dim=8, min_count=2),
            FeatureSpec("price", kind="numeric", transform="log1p_standardize"),
        ],
        label="click",
        group="user_id",
    )


def test_module_doctests() -> None:
    assert doctest.testmod(features).failed == 0


@pytest.mark.parametrize("suffix,text", [(".yaml", YAML), (".yml", YAML), (".toml", TOML)])
def test_yaml_and_toml_files_load_to_the_same_schema(tmp_path: Path, suffix: str, text: str) -> None:
    path = tmp_path / f"schema{suffix}"
    path.write_text(text)
    schema = Schema.load(path)
    assert schema == expected_schema()
    assert schema["hist_item_id"].salt == "item_id"  # default salt: the table group


def test_save_round_trips_json_and_yaml(tmp_path: Path) -> None:
    schema = expected_schema()
    for name in ("s.json", "s.yaml"):
        assert Schema.load(schema.save(tmp_path / name)) == schema
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json", "s.yaml"]  # no temp files left
    with pytest.raises(ValueError, match="can write .json, .yaml"):
        schema.save(tmp_path / "s.toml")


@pytest.mark.parametrize(
    "text,error,message",
    [
        ("features:\n  - {name: a, embeding_dim: 8}\n", ValueError, r"features\[0\]: feature 'a': unknown key\(s\) \['embeding_dim'\]"),
        ("features:\n  - {name: a, embedding_dim: '8'}\n", TypeError, r"feature 'a': embedding_dim must be int, got '8' \(str\)"),
        ("features:\n  - {name: a, kind: sequense}\n", ValueError, r"kind='sequense' is not one of"),
        ("features:\n  - {name: a, kind: sequence}\n", ValueError, r"set max_len > 0"),
        ("features:\n  - {name: a, max_len: 5}\n", ValueError, r"max_len and delimiter are for sequence features"),
        ("features:\n  - {name: a, hash_buckets: 10}\n", ValueError, r"set ids='hashing'"),
        ("features:\n  - {name: a, min_count: true}\n", TypeError, r"min_count must be int"),
        ("features: {name: a}\n", ValueError, r"'features' must be a list"),
        ("- a\n- b\n", ValueError, r"must be a mapping"),
        ("features: [a: 1\n", ValueError, r"invalid YAML"),
    ],
)
def test_bad_schema_files_name_the_file_feature_and_expectation(tmp_path: Path, text: str, error: type, message: str) -> None:
    path = tmp_path / "schema.yaml"
    path.write_text(text)
    with pytest.raises(error, match=message) as info:
        Schema.load(path)
    assert str(path) in str(info.value)


def test_load_rejects_unknown_suffix_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown suffix '\.ini'"):
        Schema.load(tmp_path / "schema.ini")
    with pytest.raises(ValueError, match="cannot read it"):
        Schema.load(tmp_path / "missing.yaml")
    (tmp_path / "bad.toml").write_text("label = \n")
    with pytest.raises(ValueError, match="invalid TOML"):
        Schema.load(tmp_path / "bad.toml")


def test_toml_empty_label_means_no_label() -> None:
    schema = Schema.from_toml('label = ""\n[[features]]\nname = "a"\n')
    assert schema.label is None and schema.group is None


def test_a_table_group_shares_one_id_space() -> None:
    with pytest.raises(ValueError, match=r"differ in salt \('a' vs 'other'\)"):
        Schema([FeatureSpec("a", ids="hashing", hash_buckets=10),
                FeatureSpec("h", kind="sequence", table="a", max_len=3, ids="hashing", hash_buckets=10, salt="other")])  # fmt: skip
    with pytest.raises(ValueError, match=r"differ in min_count \(5 vs 1\)"):
        Schema([FeatureSpec("a", min_count=5), FeatureSpec("h", kind="sequence", table="a", max_len=3)])
    with pytest.raises(ValueError, match="bucketized numeric feature needs a table of its own"):
        Schema([FeatureSpec("a"), FeatureSpec("x", kind="numeric", transform="bucketize", num_buckets=4, table="a")])


def test_fingerprint_ignores_embedding_dims_only() -> None:
    base = expected_schema()
    wider = Schema.from_dict(base.to_dict())
    for spec in wider.features:
        spec.embedding_dim = 32
    assert wider.fingerprint() == base.fingerprint()
    longer = Schema.from_dict(base.to_dict())
    longer["hist_item_id"].max_len = 30
    assert longer.fingerprint() != base.fingerprint()
    assert len(base.fingerprint()) == 64

"""A feature's stated dtype gives the same ids from Parquet integers and CSV strings; fitting
warns when a vocabulary sends most values to OOV; AUC of one class warns."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys_embed import metrics
from recsys_embed.errors import UndefinedMetricWarning, VocabularyCoverageWarning
from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.pipelines import Pipeline


def ids(pipeline: Pipeline, source: Path) -> list[int]:
    return [i for batch in pipeline.transform(source, labels=False) for i in batch.column(0).to_pylist()]


@pytest.fixture
def zips(tmp_path: Path) -> tuple[Path, Path]:
    pq.write_table(pa.table({"zip": [2139, 2139, 94110, 10001]}), tmp_path / "zips.parquet")
    (tmp_path / "zips.csv").write_text("zip\n2139\n02139-4307\n94110\n")
    return tmp_path / "zips.parquet", tmp_path / "zips.csv"


def test_string_dtype_gives_one_id_space_in_both_directions(zips: tuple[Path, Path]) -> None:
    parquet, csv = zips
    schema = Schema([FeatureSpec("zip", dtype="string")], label=None)
    on_parquet = Pipeline(schema).fit(parquet)
    assert ids(on_parquet, parquet) == [2, 2, 4, 3]  # 2139 twice; then 10001 < 94110
    assert ids(on_parquet, csv) == [2, 1, 4]  # the hyphenated zip: OOV
    on_csv = Pipeline(schema).fit(csv)
    assert ids(on_csv, csv) == [3, 2, 4]
    assert ids(on_csv, parquet) == [3, 3, 4, 1]  # 10001: OOV
    with pytest.raises(ValueError, match=r"zips.csv: column 'zip', row 1: value '02139-4307' is not an int64 integer"):
        ids(Pipeline(Schema([FeatureSpec("zip")], label=None)).fit(parquet), csv)  # unset: the Parquet ints decide


def test_int_dtype_and_bad_dtypes(zips: tuple[Path, Path], tmp_path: Path) -> None:
    (tmp_path / "ints.csv").write_text("zip\n007\n7\n94110\n")
    pipeline = Pipeline(Schema([FeatureSpec("zip", dtype="int")], label=None)).fit(tmp_path / "ints.csv")
    assert ids(pipeline, tmp_path / "ints.csv") == [2, 2, 3]
    with pytest.raises(ValueError, match=r"feature 'zip': dtype='text'; expected one of \['int', 'string'\]"):
        FeatureSpec("zip", dtype="text")
    with pytest.raises(ValueError, match=r"dtype='string'; expected .* on a categorical or sequence feature"):
        FeatureSpec("price", kind="numeric", dtype="string")
    with pytest.raises(ValueError, match=r"share table 'zip' but differ in dtype"):
        Schema([FeatureSpec("zip", dtype="string"), FeatureSpec("hist_zip", kind="sequence", max_len=3, table="zip")])
    spec = FeatureSpec("zip", dtype="string")
    assert FeatureSpec.from_dict(spec.to_dict()) == spec and "dtype" not in FeatureSpec("zip").to_dict()


def test_fitting_warns_when_a_vocabulary_keeps_few_values(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pq.write_table(pa.table({"c": rng.integers(0, 80, 115), "d": np.zeros(115, np.int64)}), tmp_path / "s.parquet")
    schema = Schema([FeatureSpec("c", min_count=10), FeatureSpec("d", min_count=10)], label=None)
    with pytest.warns(VocabularyCoverageWarning, match=r"table group 'c': its vocabulary \(0 values seen >= min_count=10 "
                                                       r"times\) keeps 0.0% of the 115 values fitted on \(below 50%\)") as record:
        Pipeline(schema).fit(tmp_path / "s.parquet")
    assert len(record) == 1  # 'd' keeps all
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Pipeline(schema).fit(tmp_path / "s.parquet", min_coverage=0.0)
        Pipeline(Schema([FeatureSpec("c")], label=None)).fit(tmp_path / "s.parquet")


def test_auc_of_one_class_warns() -> None:
    with pytest.warns(UndefinedMetricWarning, match="AUC is undefined: the 3 labels evaluated are all negative"):
        assert np.isnan(metrics.auc(np.array([0.1, 0.2, 0.3]), np.zeros(3)))

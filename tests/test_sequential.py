"""The sequential job: item vocabulary, leave-one-out without leaks, learning beyond popularity,
artifact round trip, run configs, MovieLens end to end, and the example script."""

from __future__ import annotations

import doctest
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import load_file

import recsys_embed.jobs.sequential
from recsys_embed.checkpoint import load_state
from recsys_embed.models import BERT4Rec, BERT4RecConfig
from recsys_embed.jobs.sequential import (
    ItemIndex,
    SequentialConfig,
    SequentialReport,
    evaluate_next_item,
    fit_popularity,
    load_sequential,
    sequential_run_config,
    split_sequences,
    train_sequential,
    train_sequential_from_config,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_bert4rec.py"
TINY_MODEL = BERT4RecConfig(max_len=10, dim=32, num_layers=1, num_heads=2, dropout=0.0)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models: one intra-op thread is many times faster on the shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def cycle_events(users: int = 160, length: int = 9, items: int = 30, seed: int = 0) -> pl.DataFrame:
    """Every user walks the cycle of ``items`` raw ids 100, 101, ... from a random start: the
    next item is the successor of the last one, while all items are about equally popular."""
    start = np.random.default_rng(seed).integers(0, items, users)
    walk = (start[:, None] + np.arange(length)[None, :]) % items + 100
    rows = np.random.default_rng(seed + 1).permutation(users * length)  # file order is not time order
    return pl.DataFrame({
        "user_id": np.repeat(np.arange(users), length)[rows],
        "item_id": walk.ravel()[rows],
        "timestamp": np.tile(np.arange(length) * 60, users)[rows],
    })


@pytest.fixture(scope="module")
def cycle_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[SequentialReport, Path]:
    run_dir = tmp_path_factory.mktemp("cycle")
    config = SequentialConfig(TINY_MODEL, epochs=8, batch_size=8, lr=3e-3, progress=False)
    return train_sequential(cycle_events(), config, run_dir), run_dir


def test_item_index_round_trip() -> None:
    index = ItemIndex.from_values(pl.Series([907, 15, None, 907, 3]))
    assert index.to_json() == [3, 15, 907] and len(index) == 3
    ids = index.encode([907, 3, 42, 15])
    assert ids.tolist() == [3, 1, 0, 2]  # 42 is unknown: 0
    assert index.decode(ids[ids > 0]) == [907, 3, 15]
    again = ItemIndex.from_json(json.loads(json.dumps(index.to_json())))
    assert again.encode(pl.Series([15, 907], dtype=pl.Int32)).tolist() == [2, 3]
    names = ItemIndex.from_values(pl.Series(["b", "a", "c"]))
    assert names.decode(names.encode(["c", "a"])) == ["c", "a"]
    with pytest.raises(IndexError, match=r"\[1, 3\]"):
        index.decode([0])
    with pytest.raises(TypeError, match="String"):
        index.encode(["a"])


def test_leave_one_out_never_puts_held_out_items_into_training_inputs() -> None:
    events = cycle_events(users=40, length=6)
    # each user's last two events get items no other event has (valid 500+u, test 900+u)
    last = pl.col("timestamp") == pl.col("timestamp").max().over("user_id")
    second = pl.col("timestamp") == pl.col("timestamp").max().over("user_id") - 60
    events = events.with_columns(
        pl.when(last).then(900 + pl.col("user_id"))
        .when(second).then(500 + pl.col("user_id"))
        .otherwise("item_id")
        .alias("item_id")
    )
    splits = split_sequences(events, min_length=3)
    train_raw = set(splits.items.decode(splits.train.items))
    assert train_raw and max(train_raw) < 500
    assert set(splits.items.decode(splits.valid.targets)) == {500 + u for u in range(40)}
    assert set(splits.items.decode(splits.test.targets)) == {900 + u for u in range(40)}
    assert max(splits.items.decode(splits.valid.histories.items)) < 500  # validation inputs = training inputs
    test_inputs = splits.items.decode(splits.test.histories.items)
    assert max(test_inputs) < 900 and {500 + u for u in range(40)} <= set(test_inputs)
    # per user, in time order although the frame is shuffled: train = all but the last two items
    user0 = events.filter(pl.col("user_id") == 0).sort("timestamp")["item_id"].to_list()
    first = splits.train.padded(np.array([0]))[0]
    assert splits.items.decode(first[first > 0]) == user0[:-2]
    counts = fit_popularity(splits.train, len(splits.items)).counts
    held_out = splits.items.encode(list(range(500, 540)) + list(range(900, 940)))
    assert counts[held_out].sum() == 0 and counts.sum() == len(splits.train.items)


def test_bert4rec_beats_popularity_on_a_strongly_sequential_dataset(cycle_run: tuple[SequentialReport, Path]) -> None:
    report, run_dir = cycle_run
    assert report.test["ndcg@10"] > 2 * report.popularity_test["ndcg@10"], report.summary()
    assert report.test["hr@10"] > 0.8 and report.popularity_test["hr@10"] < 0.6
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 8 and metrics["test"] == report.test
    assert metrics["popularity"]["test"] == report.popularity_test and metrics["data"]["items"] == 30
    assert (run_dir / "training_curves.png").stat().st_size > 1000
    summary = report.summary()
    assert summary.startswith(f"test NDCG@10 {report.test['ndcg@10']:.4f} (popularity ")
    assert "HR@10" in summary and "seq/s" in summary and summary.endswith(f"saved to {run_dir}/")


def test_artifact_round_trip_gives_identical_recommendations(cycle_run: tuple[SequentialReport, Path]) -> None:
    report, run_dir = cycle_run
    loaded = load_sequential(run_dir / "model")
    histories = [[100, 101, 102], [128, 129], [5, 110], [], [115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125]]
    expected = report.recommender.recommend_batch(histories, k=5)
    assert loaded.recommend_batch(histories, k=5) == expected
    assert loaded.recommend([100, 101, 102], k=5) == expected[0]
    assert 103 in expected[0]  # the cycle's successor
    assert 110 not in expected[2] and len(expected[2]) == 5  # history excluded, unknown raw id 5 skipped
    everything = loaded.recommend([100, 101], k=1000)
    assert len(everything) == 28 and set(everything) == set(range(102, 130))
    manifest = json.loads((run_dir / "model" / "manifest.json").read_text())
    assert manifest["items"] == list(range(100, 130)) and manifest["model"]["name"] == "bert4rec"


def test_loading_refuses_an_artifact_of_another_task(cycle_run: tuple[SequentialReport, Path], tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(cycle_run[1] / "model", copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "task": "ctr"}))
    with pytest.raises(ValueError, match="task is 'ctr', not a 'sequential' model"):
        load_sequential(copy)


def test_sampled_negatives_rank_among_target_and_negatives_only() -> None:
    splits = split_sequences(cycle_events(users=30, length=6), min_length=5)
    popularity = fit_popularity(splits.train, len(splits.items))
    for sampling in ("uniform", "popularity"):
        config = SequentialConfig(TINY_MODEL, negatives=4, negative_sampling=sampling, ks=(1, 5))
        first = evaluate_next_item(popularity.score_next, splits.test, config, popularity)
        assert first["hr@5"] == 1.0 and first["hr@1"] < 1.0  # 5 candidates in all
        assert evaluate_next_item(popularity.score_next, splits.test, config, popularity) == first
    full = evaluate_next_item(popularity.score_next, splits.test, SequentialConfig(TINY_MODEL, ks=(5,)), popularity)
    assert full["hr@5"] < 0.6
    with pytest.raises(ValueError, match="items left to sample"):
        evaluate_next_item(popularity.score_next, splits.test, SequentialConfig(TINY_MODEL, negatives=40), popularity)


def test_bad_config_keys_and_values_are_named() -> None:
    good = {"task": "sequential", "data": {"events": "x", "format": "movielens"}, "model": {"dim": 32}, "trainer": {"epochs": 2}}
    run, config = sequential_run_config(good, "run.yaml")
    assert config.epochs == 2 and config.model.dim == 32 and run.data.format == "movielens"
    cases = {
        "run.yaml.trainer: unknown key(s) ['lrr']": {**good, "trainer": {"lrr": 0.1}},
        "run.yaml.model: unknown key(s) ['layers']": {**good, "model": {"layers": 3}},
        "run.yaml: unknown key(s) ['schema']": {**good, "schema": "x"},
        "run.yaml.task: expected 'sequential'": {**good, "task": "ctr"},
        "run.yaml.data.format: expected one of": {**good, "data": {"events": "x", "format": "csv"}},
        "run.yaml.trainer.epochs: expected int": {**good, "trainer": {"epochs": "two"}},
        "run.yaml.trainer: mask_prob must lie in": {**good, "trainer": {"mask_prob": 1.5}},
        "run.yaml.model: BERT4Rec dim 30 must be divisible": {**good, "model": {"dim": 30, "num_heads": 4}},
        "run.yaml.trainer: unknown key(s) ['model']; expected some of ['batch_size',": {**good, "trainer": {"model": {}}},
        "run.yaml: missing required key(s) ['data']": {"task": "sequential"},
        "run.yaml: model.num_items is counted from the data by the sequential job; leave it out (got 5)":
            {**good, "model": {"num_items": 5}},
    }
    for message, mapping in cases.items():
        with pytest.raises(ValueError, match=re.escape(message)):
            sequential_run_config(mapping, "run.yaml")
    with pytest.raises(ValueError, match="run.yaml.data.events: .*missing does not exist"):
        train_sequential_from_config({**good, "data": {"events": "missing"}}, "run.yaml")
    with pytest.raises(ValueError, match="min_length must be >= 3"):
        SequentialConfig(min_length=2)
    assert SequentialConfig(model={"dim": 16, "num_heads": 4}).model == BERT4RecConfig(dim=16, num_heads=4)
    with pytest.raises(ValueError, match=re.escape("num_items is not set; build the model from config.with_items")):
        BERT4Rec(BERT4RecConfig(dim=16))


def test_movielens_u_data_end_to_end_through_a_run_config(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    lines = []
    for user in range(1, 41):
        start = int(rng.integers(0, 25))
        for step in range(7):  # users rate movies 1001, 1002, ... in a cycle; user 40 has too few ratings
            if user < 40 or step < 2:
                lines.append(f"{user}\t{1001 + (start + step) % 25}\t{1 + step % 5}\t{880000000 + 3600 * step + user}")
    (tmp_path / "ml").mkdir()
    rng.shuffle(lines)
    (tmp_path / "ml" / "u.data").write_text("\n".join(lines) + "\n")
    mapping = {
        "task": "sequential",
        "data": {"events": "ml/u.data", "format": "movielens"},
        "model": {"max_len": 8, "dim": 16, "num_layers": 1, "dropout": 0.0},
        "trainer": {"epochs": 2, "batch_size": 16, "min_length": 5, "ks": [5, 10], "progress": False},
        "run_dir": str(tmp_path / "run"),
    }
    report = train_sequential_from_config(mapping, "ml.yaml", base_dir=tmp_path)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data"] == {"users": 39, "items": 25, "train_items": 39 * 5}
    assert set(report.test) == {"hr@5", "hr@10", "ndcg@5", "ndcg@10", "mrr@5", "mrr@10"}
    assert 0.0 <= report.test["ndcg@10"] <= 1.0 and report.popularity_test["hr@10"] > 0
    recommender = load_sequential(tmp_path / "run" / "model")
    top = recommender.recommend([1001, 1002, 1003], k=3)
    assert len(top) == 3 and set(top) <= set(range(1004, 1026))


def test_docstring_examples() -> None:
    result = doctest.testmod(recsys_embed.jobs.sequential, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 5 and result.failed == 0


def test_example_script_trains_and_prints_the_summary(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, str(EXAMPLE), "--users", "300", "--epochs", "2", "--run-dir", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert "test NDCG@10 " in run.stdout and "(popularity " in run.stdout and "saved to " in run.stdout
    assert "recommended after " in run.stdout and (tmp_path / "run" / "model" / "manifest.json").is_file()


RESUME_SCRIPT = Path(__file__).with_name("sequential_resume_script.py")


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model" / "tensors.safetensors"))


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    """A run killed mid-epoch and resumed from its checkpoint trains the remaining steps only
    and ends with the same weights, optimizer state and metrics as a run never stopped."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight = subprocess.run([sys.executable, str(RESUME_SCRIPT), str(tmp_path / "straight")],
                              capture_output=True, text=True, timeout=300, env=env)
    assert straight.returncode == 0, straight.stderr[-2000:]
    total = len(straight.stdout.splitlines())
    assert total == 60  # 3 epochs of 20 steps

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(RESUME_SCRIPT), str(killed)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:  # epoch 2, a step after the mid-epoch checkpoint of step 27
        if line.strip() == "step 29":
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "model").exists()
    state = load_state(killed / "checkpoint")
    assert state["epoch"] == 1 and 0 < state["batch_index"] < 20 and state["result"]["steps"] == 20 + state["batch_index"]

    resumed = subprocess.run([sys.executable, str(RESUME_SCRIPT), str(killed), "--resume"],
                             capture_output=True, text=True, timeout=300, env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert len(resumed.stdout.splitlines()) == total - state["result"]["steps"]  # trained steps are not replayed
    last = {name: load_state(run / "checkpoint") for name, run in (("straight", tmp_path / "straight"), ("resumed", killed))}
    assert last["straight"]["epoch"] == last["resumed"]["epoch"] == 3
    for key in ("model", "optimizer", "masking"):  # the last epoch's weights, AdamW state, Cloze generator
        flat = {name: dict(_flatten(state[key])) for name, state in last.items()}
        assert flat["straight"].keys() == flat["resumed"].keys()
        for name, value in flat["straight"].items():
            assert torch.equal(value, flat["resumed"][name]) if isinstance(value, torch.Tensor) else value == flat["resumed"][name], f"{key}.{name}"
    a, b = _tensors(tmp_path / "straight"), _tensors(killed)  # the saved best-validation model
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    metrics = {name: json.loads((run / "metrics.json").read_text()) for name, run in (("a", tmp_path / "straight"), ("b", killed))}
    for key in ("epochs", "best", "test", "steps", "sequences"):
        assert metrics["a"][key] == metrics["b"][key], key


def _flatten(tree: object, prefix: str = "") -> Iterator[tuple[str, object]]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _flatten(value, f"{prefix}.{key}")
    elif isinstance(tree, (list, tuple)):
        for index, value in enumerate(tree):
            yield from _flatten(value, f"{prefix}.{index}")
    else:
        yield prefix, tree

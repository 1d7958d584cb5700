"""The sequential job: pipeline item ids, leave-one-out without leaks, learning beyond popularity,
per_feature and multiplexed item tables, artifact round trip, run configs, MovieLens end to end,
resume after SIGKILL, the example script, and the retrieval form (query and item vectors) of
each model."""

from __future__ import annotations

import dataclasses
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
from recsys_embed.features import FIRST_VALUE_ID, OOV_ID
from recsys_embed.jobs.builders import build_sequential_model
from recsys_embed.jobs.next_item_model import NextItemModel, RankingProtocol, evaluate_next_item
from recsys_embed.models import BERT4RecConfig, Popularity, SASRecConfig
from recsys_embed.pipelines.derived import sequence_schema
from recsys_embed.tables import PerFeatureTables
from recsys_embed.jobs.sequential import (
    FEATURE,
    SequentialConfig,
    SequentialReport,
    encode_histories,
    item_lookup,
    load_sequential,
    sequence_data,
    sequential_run_config,
    train_sequential,
    train_sequential_from_config,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_sequential.py"
TINY_MODEL = BERT4RecConfig(max_len=10, dim=32, num_layers=1, num_heads=2, dropout=0.0)
TINY_SASREC = SASRecConfig(max_len=10, dim=32, num_layers=1, num_heads=2, dropout=0.0)


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


def random_next_item(config: BERT4RecConfig | SASRecConfig, rows: int = 40, seed: int = 0) -> NextItemModel:
    """An untrained next-item model over ``rows`` random item rows (random output biases where the model has them), in eval mode."""
    torch.manual_seed(seed)
    schema = sequence_schema(max_len=config.sequence_len, embedding_dim=config.dim)
    model = NextItemModel(PerFeatureTables(schema, {"items": rows}), build_sequential_model(config, rows), schema, "items")
    if hasattr(model.model, "output_bias"):
        torch.nn.init.normal_(model.model.output_bias.data)
    return model.eval()


def decode(data, ids: torch.Tensor | np.ndarray) -> list:
    """Raw item ids of pipeline ids (2.. values of the item vocabulary)."""
    vocabulary = data.pipeline.state.tables[FEATURE].vocabulary
    return vocabulary.take(np.asarray(ids) - 2).to_pylist()


def test_item_ids_come_from_the_fitted_pipeline() -> None:
    data = sequence_data(cycle_events(users=40, length=6), TINY_MODEL, min_length=3)
    vocabulary = data.pipeline.state.tables[FEATURE].vocabulary.to_pylist()
    assert sorted(vocabulary) == list(range(100, 130)) and data.pipeline.num_embeddings == {FEATURE: 32}
    lookup = item_lookup(data.pipeline)
    values, lengths = encode_histories(lookup, pl.Series([[907, 100, None], [], [129]]))
    assert lengths.tolist() == [2, 0, 1] and values[0] == OOV_ID and decode(data, values[1:]) == [100, 129]
    strings = sequence_data(cycle_events(users=40, length=6).with_columns(pl.col("item_id").cast(pl.String)), TINY_MODEL, 3)
    ids, _ = encode_histories(item_lookup(strings.pipeline), pl.Series([["101", "zzz"]]))
    assert decode(strings, ids[:1]) == ["101"] and ids[1] == OOV_ID


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
    data = sequence_data(events, TINY_MODEL, min_length=3)
    train_raw = set(data.train[FEATURE].explode().to_list())
    assert train_raw and max(train_raw) < 500
    assert set(decode(data, data.valid.targets)) == {500 + u for u in range(40)}
    assert set(decode(data, data.test.targets)) == {900 + u for u in range(40)}
    assert max(decode(data, data.valid.values)) < 500  # validation inputs = training inputs
    test_inputs = decode(data, data.test.values)
    assert max(test_inputs) < 900 and {500 + u for u in range(40)} <= set(test_inputs)
    # per user, in time order although the frame is shuffled: train = all but the last two items
    user0 = events.filter(pl.col("user_id") == 0).sort("timestamp")["item_id"].to_list()
    assert data.train.filter(pl.col("user_id") == 0)[FEATURE].to_list() == [user0[:-2]]
    # the vocabulary holds every item, held-out ones included; the training data reads none of them
    lookup = item_lookup(data.pipeline)
    rows = data.pipeline.num_embeddings[FEATURE]
    counts = Popularity(rows).fit(encode_histories(lookup, data.train[FEATURE])[0]).counts
    held_out, _ = encode_histories(lookup, pl.Series([list(range(500, 540)) + list(range(900, 940))]))
    assert (held_out >= 2).all() and counts[held_out].sum() == 0 and counts.sum() == data.train[FEATURE].list.len().sum()


def test_bert4rec_beats_popularity_on_a_strongly_sequential_dataset(cycle_run: tuple[SequentialReport, Path]) -> None:
    report, run_dir = cycle_run
    assert report.test["ndcg@10"] > 2 * report.popularity_test["ndcg@10"], report.summary()
    assert report.test["hr@10"] > 0.8 and report.popularity_test["hr@10"] < 0.6
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(metrics["evaluations"]) == 8 and metrics["test"] == report.test and metrics["steps"] == 8 * 20
    assert metrics["model"] == "bert4rec" and metrics["protocol"]["description"] == "full ranking, history excluded"
    assert all(e["seconds"] > 0 and e["rss_mb"] > 0 for e in metrics["evaluations"]) and metrics["peak_rss_mb"] > 0
    assert metrics["popularity"]["test"] == report.popularity_test and metrics["data"]["items"] == 30
    assert (run_dir / "training_curves.png").stat().st_size > 1000
    summary = report.summary()
    assert summary.startswith(f"bert4rec test NDCG@10 {report.test['ndcg@10']:.4f} (popularity ")
    assert "HR@10" in summary and "[full ranking, history excluded]" in summary and "rows/s" in summary
    assert "kept step" in summary and "skipped" not in summary and summary.endswith(f"saved to {run_dir}/")


def test_artifact_round_trip_gives_identical_recommendations(cycle_run: tuple[SequentialReport, Path]) -> None:
    report, run_dir = cycle_run
    loaded = load_sequential(run_dir / "model")
    histories = [[100, 101, 102], [128, 129], [5, 110], [], [115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125]]
    expected, scores = report.recommender.recommend(histories, k=5)
    assert loaded.recommend(histories, k=5) == (expected, scores)
    assert all(a >= b for row in scores for a, b in zip(row, row[1:]))  # best first
    assert 103 in expected[0]  # the cycle's successor
    assert 110 not in expected[2] and len(expected[2]) == 5  # history excluded; unknown raw id 5 reads the OOV row
    kept, _ = loaded.recommend([[100, 101]], k=5, exclude_history=False)
    assert len(kept[0]) == 5
    everything, _ = loaded.recommend([[100, 101]], k=1000)
    assert len(everything[0]) == 28 and set(everything[0]) == set(range(102, 130))
    with pytest.raises(ValueError, match="vocabulary's type int64"):
        loaded.recommend([["a"]])
    manifest = json.loads((run_dir / "model" / "manifest.json").read_text())
    assert manifest["task"] == "sequential" and manifest["model"]["name"] == "bert4rec"
    assert manifest["layout"] == {"name": "per_feature"} and manifest["task_settings"] == {"feature": "items", "exclude_history": True}


def test_loading_refuses_an_artifact_of_another_task(cycle_run: tuple[SequentialReport, Path], tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(cycle_run[1] / "model", copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "task": "ctr"}))
    with pytest.raises(ValueError, match="manifest.json section 'task' differs from the checksum recorded at save; it was edited"):
        load_sequential(copy)
    # a format-2 manifest carries no checksums: the task check itself is reached
    manifest = {**{k: v for k, v in manifest.items() if k != "checksums"}, "format_version": 2}
    (copy / "manifest.json").write_text(json.dumps({**manifest, "task": "ctr"}))
    with pytest.raises(ValueError, match="task is 'ctr', not a 'sequential' model"):
        load_sequential(copy)
    old = {"task": "sequential", "model": manifest["model"], "items": list(range(100, 130))}  # an artifact of the earlier job
    (copy / "manifest.json").write_text(json.dumps({**{k: v for k, v in manifest.items() if k != "pipeline"}, **old}))
    with pytest.raises(ValueError, match="earlier version"):
        load_sequential(copy)


def test_multiplexed_item_table_trains_and_round_trips(tmp_path: Path) -> None:
    layout = {"name": "multiplexed", "rows": 64, "chunk_dim": 16, "probes": 2}
    config = SequentialConfig(TINY_MODEL, layout=layout, epochs=2, batch_size=16, lr=3e-3, progress=False)
    report = train_sequential(cycle_events(users=80), config, tmp_path)
    assert report.test["hr@10"] > 0 and (tmp_path / "model" / "manifest.json").is_file()
    loaded = load_sequential(tmp_path / "model")
    assert loaded.recommend([[100, 101]], k=3) == report.recommender.recommend([[100, 101]], k=3)
    with pytest.raises(ValueError, match="vectors are 16 wide but model.dim is 32"):
        train_sequential(cycle_events(users=20), dataclasses.replace(config, layout={**layout, "probes": 1}), tmp_path / "x")


def test_sampled_negatives_rank_among_target_and_negatives_only() -> None:
    data = sequence_data(cycle_events(users=30, length=6), TINY_MODEL, min_length=5)
    rows = data.pipeline.num_embeddings[FEATURE]
    popularity = Popularity(rows).fit(encode_histories(item_lookup(data.pipeline), data.train[FEATURE])[0])
    score = lambda _, lengths: popularity.score_next(lengths.numel())  # noqa: E731
    for sampling in ("uniform", "popularity"):
        protocol = RankingProtocol(ks=(1, 5), negatives=4, negative_sampling=sampling)
        first = evaluate_next_item(score, data.test, protocol, rows, popularity.counts)
        assert first["hr@5"] == 1.0 and first["hr@1"] < 1.0  # 5 candidates in all
        assert evaluate_next_item(score, data.test, protocol, rows, popularity.counts) == first
    full = evaluate_next_item(score, data.test, RankingProtocol(ks=(5,)), rows)
    assert full["hr@5"] < 0.6
    with pytest.raises(ValueError, match="items left to sample"):
        evaluate_next_item(score, data.test, RankingProtocol(negatives=40), rows)


def test_bad_config_keys_and_values_are_named() -> None:
    good = {"task": "sequential", "data": {"events": "x", "format": "movielens"}, "model": {"name": "bert4rec", "dim": 32},
            "trainer": {"epochs": 2}}
    run, config = sequential_run_config(good, "run.yaml")
    assert config.epochs == 2 and config.model.dim == 32 and run.data.format == "movielens"
    cases = {
        "run.yaml.trainer: unknown key(s) ['lrr']": {**good, "trainer": {"lrr": 0.1}},
        "run.yaml.model: unknown key(s) ['layers']": {**good, "model": {"name": "sasrec", "layers": 3}},
        "run.yaml.model.name: required, one of ['bert4rec', 'sasrec']": {**good, "model": {"dim": 32}},
        "run.yaml.model.name='gru4rec' is not one of ['bert4rec', 'sasrec']": {**good, "model": {"name": "gru4rec"}},
        "run.yaml: unknown key(s) ['schema']": {**good, "schema": "x"},
        "run.yaml.task: expected 'sequential'": {**good, "task": "ctr"},
        "run.yaml.data.format: expected one of": {**good, "data": {"events": "x", "format": "csv"}},
        "run.yaml.trainer.epochs: expected int": {**good, "trainer": {"epochs": "two"}},
        "mask_prob is BERT4Rec's: it goes under model": {**good, "trainer": {"mask_prob": 0.3}},
        "run.yaml.model: BERT4Rec mask_prob must lie in": {**good, "model": {"name": "bert4rec", "mask_prob": 1.5}},
        "run.yaml.model: BERT4Rec dim 30 must be divisible": {**good, "model": {"name": "bert4rec", "dim": 30, "num_heads": 4}},
        "run.yaml.model: SASRec negatives must be >= 0": {**good, "model": {"name": "sasrec", "negatives": -1}},
        "run.yaml.trainer: trainer.eval_every must be >= 0": {**good, "trainer": {"eval_every": -1}},
        "run.yaml.trainer: trainer.max_seconds must be a finite number >= 0": {**good, "trainer": {"max_seconds": -5}},
        "run.yaml.trainer: unknown key(s) ['layout', 'model']; expected some of ['batch_size',": {**good, "trainer": {"model": {}, "layout": {}}},
        "run.yaml: missing required key(s) ['data']": {"task": "sequential"},
        "run.yaml.model: unknown key(s) ['num_items']": {**good, "model": {"name": "bert4rec", "num_items": 5}},
        "run.yaml.table_optimizer: table optimizer 'nope' is not one of": {**good, "table_optimizer": {"name": "nope"}},
        "run.yaml.trainer: negative_sampling must be one of": {**good, "trainer": {"negative_sampling": "zipf"}},
    }
    for message, mapping in cases.items():
        with pytest.raises(ValueError, match=re.escape(message)):
            sequential_run_config(mapping, "run.yaml")
    with pytest.raises(ValueError, match="run.yaml.data.events: .*missing does not exist"):
        train_sequential_from_config({**good, "data": {"events": "missing"}}, "run.yaml")
    with pytest.raises(ValueError, match="min_length must be >= 3"):
        SequentialConfig(min_length=2)
    assert SequentialConfig(model={"name": "bert4rec", "dim": 16, "num_heads": 4}).model == BERT4RecConfig(dim=16, num_heads=4)
    assert SequentialConfig().model == SASRecConfig() and SequentialConfig(model={"name": "sasrec", "dim": 32}).model.dim == 32
    run, config = sequential_run_config({**good, "layout": {"name": "multiplexed", "rows": 100}, "table_optimizer": {"name": "sgd", "lr": 0.1}})
    assert config.layout["name"] == "multiplexed" and config.table_optimizer.name == "sgd" and config.model.dim == 32


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
        "model": {"name": "sasrec", "max_len": 8, "dim": 16, "num_layers": 1, "dropout": 0.0},
        "trainer": {"epochs": 2, "batch_size": 16, "min_length": 5, "ks": [5, 10], "progress": False, "checkpoints": False},
        "run_dir": str(tmp_path / "run"),
    }
    report = train_sequential_from_config(mapping, "ml.yaml", base_dir=tmp_path)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data"] == {"users": 39, "skipped_users": 1, "items": 25, "train_items": 39 * 5, "train_rows": 39,
                               "train_items_in_rows": 39 * 5}
    assert metrics["model"] == "sasrec" and not (tmp_path / "run" / "checkpoint").exists()
    assert "1 users skipped (fewer than min_length events)" in report.summary()
    assert set(report.test) == {"hr@5", "hr@10", "ndcg@5", "ndcg@10", "mrr@5", "mrr@10"}
    assert 0.0 <= report.test["ndcg@10"] <= 1.0 and report.popularity_test["hr@10"] > 0
    recommender = load_sequential(tmp_path / "run" / "model")
    (top,), _ = recommender.recommend([[1001, 1002, 1003]], k=3)
    assert len(top) == 3 and set(top) <= set(range(1004, 1026))


def test_docstring_examples() -> None:
    result = doctest.testmod(recsys_embed.jobs.sequential, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 5 and result.failed == 0


def test_example_script_trains_and_prints_the_summary(tmp_path: Path) -> None:
    """Both ways the example runs, at the same time: SASRec on synthetic sequences, BERT4Rec on
    a one-user-per-line file."""
    lines = tmp_path / "seq.txt"
    lines.write_text("\n".join(" ".join(map(str, [u, *((u + np.arange(9)) % 30 + 1)])) for u in range(1, 201)) + "\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["--minutes", "0.3", "--eval-every", "10"]
    runs = [subprocess.Popen([sys.executable, str(EXAMPLE), *args, *common, "--run-dir", str(tmp_path / name)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for name, args in (("synthetic", ["--users", "300"]), ("lines", ["--data", str(lines), "--model", "bert4rec"]))]  # fmt: skip
    for run, model in zip(runs, ("sasrec", "bert4rec")):
        out, err = run.communicate(timeout=180)
        assert run.returncode == 0, err[-2000:]
        assert f"{model} test NDCG@10 " in out and "(popularity " in out and "saved to " in out and "recommended after " in out
        width = 65 if model == "bert4rec" else 64  # BERT4Rec's rows carry its output bias
        assert re.search(rf"retrieval rows \(\d+, {width}\); binary codes 8 bytes an item \(fp32: {4 * width}\)", out), out


RESUME_SCRIPT = Path(__file__).with_name("sequential_resume_script.py")


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model" / "tensors.safetensors"))


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    """A run killed mid-epoch and resumed from its checkpoint trains the remaining steps only
    and ends with the same weights, optimizer state and metrics as a run never stopped."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # the uninterrupted run and the one to kill are independent: they run at the same time
    straight = subprocess.Popen([sys.executable, str(RESUME_SCRIPT), str(tmp_path / "straight")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(RESUME_SCRIPT), str(killed)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:  # epoch 2, a step after the mid-epoch checkpoint of step 27
        if line.strip() == "step 29":
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"

    straight_stdout, straight_stderr = straight.communicate(timeout=300)
    assert straight.returncode == 0, straight_stderr[-2000:]
    total = len(straight_stdout.splitlines())
    assert total == 60  # 3 epochs of 20 steps
    assert not (killed / "model").exists()
    state = load_state(killed / "checkpoint")
    assert state["epoch"] == 1 and 0 < state["batch_index"] < 20 and state["result"]["steps"] == 20 + state["batch_index"]

    resumed = subprocess.run([sys.executable, str(RESUME_SCRIPT), str(killed), "--resume"],
                             capture_output=True, text=True, timeout=300, env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert len(resumed.stdout.splitlines()) == total - state["result"]["steps"]  # trained steps are not replayed
    last = {name: load_state(run / "checkpoint") for name, run in (("straight", tmp_path / "straight"), ("resumed", killed))}
    assert last["straight"]["epoch"] == last["resumed"]["epoch"] == 3
    for key in ("model", "optimizer", "rng"):  # the last epoch's weights (table and optimizer state too), AdamW state, RNG
        flat = {name: dict(_flatten(state[key])) for name, state in last.items()}
        assert flat["straight"].keys() == flat["resumed"].keys()
        for name, value in flat["straight"].items():
            assert torch.equal(value, flat["resumed"][name]) if isinstance(value, torch.Tensor) else value == flat["resumed"][name], f"{key}.{name}"
    a, b = _tensors(tmp_path / "straight"), _tensors(killed)  # the saved best-validation model
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    metrics = {name: json.loads((run / "metrics.json").read_text()) for name, run in (("a", tmp_path / "straight"), ("b", killed))}
    timing = ("seconds", "rss_mb")  # of this process: the only fields that differ
    for key in ("evaluations", "best", "test", "steps", "samples"):
        assert _without(metrics["a"][key], timing) == _without(metrics["b"][key], timing), key


def _without(tree: object, keys: tuple[str, ...]) -> object:
    if isinstance(tree, dict):
        return {k: _without(v, keys) for k, v in tree.items() if k not in keys}
    return [_without(v, keys) for v in tree] if isinstance(tree, list) else tree


def _flatten(tree: object, prefix: str = "") -> Iterator[tuple[str, object]]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _flatten(value, f"{prefix}.{key}")
    elif isinstance(tree, (list, tuple)):
        for index, value in enumerate(tree):
            yield from _flatten(value, f"{prefix}.{index}")
    else:
        yield prefix, tree


@pytest.mark.parametrize(("config", "extra"), [(TINY_MODEL, 1), (TINY_SASREC, 0)], ids=["bert4rec", "sasrec"])
def test_query_vectors_times_retrieval_vectors_are_the_next_item_scores(config: BERT4RecConfig | SASRecConfig, extra: int) -> None:
    model = random_next_item(config)
    lengths = torch.tensor([3, 0, 14, 1, 10])  # 14 > max_len: the most recent 10 are read
    values = torch.randint(FIRST_VALUE_ID, model.rows, (int(lengths.sum()),), generator=torch.Generator().manual_seed(1))
    queries, items = model.query_vectors(values, lengths), model.retrieval_vectors()
    assert queries.shape == (5, config.dim + extra) and items.shape == (model.rows, config.dim + extra)
    scores = model.score_next(values, lengths)
    assert torch.isneginf(scores[:, :FIRST_VALUE_ID]).all()
    torch.testing.assert_close(queries @ items.T[:, FIRST_VALUE_ID:], scores[:, FIRST_VALUE_ID:])
    if extra:  # BERT4Rec: [t, 1] . [e_i, b_i], the output bias as the last column
        assert (queries[:, -1] == 1).all() and torch.equal(items[:, -1], model.model.output_bias.detach())
    assert torch.equal(items[:, : config.dim], model.item_vectors().detach())  # SASRec: the table itself

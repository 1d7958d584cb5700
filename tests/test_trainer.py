"""Trainer: learning, reports, resume after a real kill reaching identical weights, and DIN's
mini-batch aware L2 through the fused table optimizer."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_embed.batch import Batch
from recsys_embed.checkpoint import load_state
from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.models import MLP, MLPConfig
from recsys_embed.jobs.ranking_model import RankingModel
from recsys_embed.tables import MultiplexedConfig, MultiplexedTables, PerFeatureTables, PrunedTables, TableOptimizer
from recsys_embed.jobs.trainer import Trainer, TrainerConfig, dense_optimizer

SCRIPT = Path(__file__).with_name("resume_script.py")


def _run(run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(run_dir), *extra], capture_output=True, text=True, timeout=300)


def test_resume_after_kill_matches_uninterrupted_run(tmp_path: Path) -> None:
    # the uninterrupted run and the one to kill are independent: they run at the same time
    straight = subprocess.Popen([sys.executable, str(SCRIPT), str(tmp_path / "straight")], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(killed_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:  # kill while epoch 2 is being drawn, after a mid-epoch checkpoint
        if line.strip() == "batch 1 17":
            proc.kill()
            break
    proc.wait(timeout=60)
    assert proc.returncode != 0, "the run finished before it could be killed"

    _, straight_stderr = straight.communicate(timeout=300)
    assert straight.returncode == 0, straight_stderr[-2000:]
    metrics = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert len(metrics["evaluations"]) == 3 and metrics["evaluations"][-1]["auc"] > 0.6
    assert (tmp_path / "straight" / "training_curves.png").stat().st_size > 1000
    assert not (killed_dir / "final.safetensors").exists()
    state = load_state(killed_dir / "checkpoint")
    assert state["epoch"] == 1 and state["batch_index"] > 0  # a mid-epoch checkpoint

    resumed = _run(killed_dir, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    first_batch = resumed.stdout.splitlines()[0]
    assert first_batch == "batch 1 0"  # the interrupted epoch is replayed, trained batches skipped
    a = load_file(str(tmp_path / "straight" / "final.safetensors"))
    b = load_file(str(killed_dir / "final.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{key} differs after resume")


def test_resume_without_checkpoint_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import resume_script  # in process: an error message needs no new process importing torch

    monkeypatch.setattr(sys, "argv", [str(SCRIPT), str(tmp_path / "nothing"), "--resume"])
    with pytest.raises(FileNotFoundError, match="checkpoint does not exist"):
        resume_script.main()


@pytest.mark.parametrize("kwargs, message", [({"metric": "accuracy"}, "trainer.metric"), ({"epochs": 0}, "epochs")])
def test_bad_trainer_config(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainerConfig(**kwargs)



# ---- mini-batch aware L2 ---------------------------------------------------------------------
MBA_SCHEMA = Schema([
    FeatureSpec("a", embedding_dim=8),
    FeatureSpec("b", embedding_dim=4),
    FeatureSpec("hist_a", kind="sequence", table="a", max_len=4, embedding_dim=8),
    FeatureSpec("x", kind="numeric"),
])
ROWS = {"a": 30, "b": 10}


def _mba_batches() -> list[Batch]:
    """Three small batches; ``a`` and ``hist_a`` read the rows of table ``a``; some bags of
    ``hist_a`` are empty, and no id is 0 or 1 (those rows are never read)."""
    g = torch.Generator().manual_seed(5)
    batches = []
    for _ in range(3):
        a, b = torch.randint(2, 30, (16,), generator=g), torch.randint(2, 10, (16,), generator=g)
        lengths = torch.randint(0, 5, (16,), generator=g)
        hist = torch.randint(2, 30, (int(lengths.sum()),), generator=g)
        ones = torch.ones(16, dtype=torch.int64)
        kjt = KeyedJaggedTensor.from_lengths_sync(["a", "b", "hist_a"], torch.cat([a, b, hist]), torch.cat([ones, ones, lengths]))
        batches.append(Batch(kjt, torch.randn(16, 1, generator=g), (a % 2).float()))
    return batches


def _layout(name: str, lr: float) -> nn.Module:
    if name == "per_feature":
        return PerFeatureTables(MBA_SCHEMA, ROWS, TableOptimizer("sgd", lr=lr))
    # 24 shared rows of width 4, 2 probes for table a: a, hist_a and b collide on shared rows
    config = MultiplexedConfig(rows=24, chunk_dim=4, table_probes={"a": 2})
    return MultiplexedTables(MBA_SCHEMA, config, TableOptimizer("sgd", lr=lr))


def _row_list(tables: nn.Module) -> list[torch.Tensor]:
    """Every row's weights, in layout-row order (per-feature: table a's rows, then b's)."""
    if isinstance(tables, MultiplexedTables):
        return list(tables.table_weights()["shared"].detach().clone())
    weights = tables.table_weights()
    return [row.clone() for table in ("a", "b") for row in weights[table].detach()]


def _lookups(tables: nn.Module, batch: Batch) -> list[int]:
    """Every (feature, id, probe) lookup of ``batch`` as a layout row, counted by hand."""
    rows = []
    for name, jt in batch.sparse.to_dict().items():
        if isinstance(tables, MultiplexedTables):
            rows += tables.rows_for(name, jt.values()).reshape(-1).tolist()
        else:
            rows += (jt.values() + (ROWS["a"] if name == "b" else 0)).tolist()
    return rows


def _one_step(layout: str, mba_l2: float, lr: float) -> tuple[RankingModel, list[torch.Tensor], list[torch.Tensor]]:
    torch.manual_seed(0)
    tables = _layout(layout, lr)
    model = RankingModel(tables, MLP(tables.shapes(1), MLPConfig(hidden=(8,), dropout=0.0)))
    before = _row_list(tables)
    Trainer(model, TrainerConfig(mba_l2=mba_l2, max_steps=1, progress=False)).fit(_mba_batches())
    return model, before, _row_list(tables)


@pytest.mark.parametrize("layout", ["per_feature", "multiplexed"])
def test_mini_batch_aware_l2_step_moves_only_the_batch_rows_by_the_sgd_amount(layout: str) -> None:
    """One fused-SGD step with and without the penalty from the same weights: the difference is
    -lr * 2 * lambda * w_j / n_j on each row j the batch reads (once, however often it is read;
    n_j counted over all three batches), and nothing elsewhere."""
    lr, mba_l2 = 0.5, 0.3
    plain, before, without = _one_step(layout, 0.0, lr)
    model, before_again, with_l2 = _one_step(layout, mba_l2, lr)
    counts = Counter(row for batch in _mba_batches() for row in _lookups(model.tables, batch))
    expected_counts = torch.zeros(len(before), dtype=torch.int64)
    expected_counts[list(counts)] = torch.tensor(list(counts.values()))
    assert torch.equal(model.row_frequencies, expected_counts)
    read = set(_lookups(model.tables, _mba_batches()[0]))
    assert 0 < len(read) < len(before)
    for j, (w, w0, w_plain, w_l2) in enumerate(zip(before, before_again, without, with_l2)):
        assert torch.equal(w, w0)
        if j in read:
            torch.testing.assert_close(w_l2 - w_plain, -lr * 2 * mba_l2 * w / counts[j], rtol=0, atol=2e-7)
            assert not torch.equal(w_l2, w_plain)
        else:
            assert torch.equal(w_l2, w) and torch.equal(w_plain, w), f"row {j} was not in the batch but changed"
    # the penalty reaches the table rows only: the dense model took the same Adam step
    for key, value in plain.model.state_dict().items():
        assert torch.equal(value, model.model.state_dict()[key]), key


def test_mini_batch_aware_l2_refuses_a_pruned_layout_and_a_negative_weight() -> None:
    tables = PrunedTables(MBA_SCHEMA, ROWS)
    model = RankingModel(tables, MLP(tables.shapes(1), MLPConfig(hidden=(8,))))
    with pytest.raises(ValueError, match="outputs of layout 'pruned' are not its table rows"):
        Trainer(model, TrainerConfig(mba_l2=0.1, progress=False)).fit(_mba_batches())
    with pytest.raises(ValueError, match="trainer.mba_l2 must be >= 0"):
        TrainerConfig(mba_l2=-1.0)


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_dense_optimizer_is_fused_on_plain_tensors_and_steps_as_the_loop(name: str) -> None:
    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 1)) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    groups = lambda net: [{"params": list(net.parameters()), "lr": 1e-2, "weight_decay": 0.1}]  # noqa: E731
    fused = dense_optimizer(name, groups(nets[0]))
    loop = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name](groups(nets[1]), foreach=False)
    assert fused.defaults["fused"] and not loop.defaults["fused"]
    x = torch.randn(32, 5)
    for _ in range(5):
        for net, optimizer in zip(nets, (fused, loop)):
            optimizer.zero_grad()
            net(x).square().mean().backward()
            optimizer.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)

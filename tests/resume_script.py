"""Trains a small ranking model; run by tests/test_trainer.py as a real subprocess.

usage: resume_script.py RUN_DIR [--resume]
Prints ``batch E I`` for every batch it draws (so the test can kill it mid-run) and saves
the final model state to RUN_DIR/final.safetensors.
"""

from __future__ import annotations

import sys

import torch
from safetensors.torch import save_file
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_embed.batch import Batch
from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.models import MLP, MLPConfig
from recsys_embed.jobs.ranking_model import RankingModel
from recsys_embed.tables import PerFeatureTables
from recsys_embed.jobs.trainer import Trainer, TrainerConfig

SCHEMA = Schema([
    FeatureSpec("a", embedding_dim=8),
    FeatureSpec("b", embedding_dim=8),
    FeatureSpec("hist_a", kind="sequence", table="a", max_len=5, embedding_dim=8),
    FeatureSpec("x", kind="numeric"),
])


class Stream:
    """A deterministic, seeded, per-epoch shuffled stream of batches."""

    def __init__(self, batches: int, seed: int) -> None:
        self.batches, self.seed, self.epoch = batches, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        for index in range(self.batches):
            print(f"batch {self.epoch} {index}", flush=True)
            size = 64
            a = torch.randint(2, 40, (size,), generator=g)
            b = torch.randint(2, 12, (size,), generator=g)
            lengths = torch.randint(0, 7, (size,), generator=g)
            hist = torch.randint(2, 40, (int(lengths.sum()),), generator=g)
            ones = torch.ones(size, dtype=torch.int64)
            kjt = KeyedJaggedTensor.from_lengths_sync(["a", "b", "hist_a"], torch.cat([a, b, hist]), torch.cat([ones, ones, lengths]))
            dense = torch.randn(size, 1, generator=g)
            labels = (((a % 3) == 0) ^ (dense[:, 0] > 1)).float()
            yield Batch(kjt, dense, labels, a)


def main() -> None:
    run_dir = sys.argv[1]
    resume = "--resume" in sys.argv
    torch.set_num_threads(1)  # tiny model: more threads only contend on a shared machine
    torch.manual_seed(0)
    tables = PerFeatureTables(SCHEMA, {"a": 40, "b": 12})
    model = RankingModel(tables, MLP(tables.shapes(1), MLPConfig(hidden=(16,), dropout=0.1)))
    trainer = Trainer(model, TrainerConfig(epochs=3, lr=1e-2, checkpoint_every=7, patience=5, progress=False), run_dir)
    trainer.fit(Stream(40, seed=1), Stream(4, seed=2), resume=resume)
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if v.numel()}, f"{run_dir}/final.safetensors")


if __name__ == "__main__":
    main()

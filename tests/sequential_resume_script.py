"""Trains a small BERT4Rec with the sequential job; run by tests/test_sequential.py as a real
subprocess.

usage: sequential_resume_script.py RUN_DIR [--resume]
Prints ``step N`` before each training step of this process (N counts from 1), so the test can
kill it mid-run; the job (through the Trainer) writes its checkpoint, metrics and model into RUN_DIR.
"""

from __future__ import annotations

import sys

import numpy as np
import polars as pl
import torch

import recsys_embed.models.bert4rec
from recsys_embed.models import BERT4RecConfig, cloze_mask
from recsys_embed.jobs.sequential import SequentialConfig, train_sequential

EPOCHS, USERS, BATCH = 3, 160, 8  # 20 steps per epoch


def events() -> pl.DataFrame:
    """Users walking a cycle of 30 items from random starts, 9 events each."""
    start = np.random.default_rng(0).integers(0, 30, USERS)
    walk = (start[:, None] + np.arange(9)[None, :]) % 30 + 100
    return pl.DataFrame({"user_id": np.repeat(np.arange(USERS), 9), "item_id": walk.ravel(), "timestamp": np.tile(np.arange(9), USERS)})


def main() -> None:
    torch.set_num_threads(1)
    steps = iter(range(1, 10**6))

    def announced_cloze_mask(*args, **kwargs):  # the model draws one Cloze mask per training step
        print(f"step {next(steps)}", flush=True)
        return cloze_mask(*args, **kwargs)

    recsys_embed.models.bert4rec.cloze_mask = announced_cloze_mask
    model = BERT4RecConfig(max_len=8, dim=16, num_layers=1, num_heads=2, dropout=0.1)  # dropout draws from the global RNG
    config = SequentialConfig(model, epochs=EPOCHS, batch_size=BATCH, lr=3e-3, checkpoint_every=3, progress=False)
    train_sequential(events(), config, sys.argv[1], resume="--resume" in sys.argv)


if __name__ == "__main__":
    main()

"""Drop one multiplexed table into an existing torch model.

A user's click model embeds three id columns with ``nn.Embedding``s. Three lines replace them
with one shared table (Unified Embedding) of a tenth of the parameters, trained by fbgemm's
fused rowwise Adagrad inside ``backward``; the rest of the model and its optimizer stay as
they were. The script then trains a few steps on random data and prints the loss.

    python examples/import_into_torch_model.py [--steps 20]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.tables.jagged import kjt_from_ids
from recsys_embed.tables.multiplexed import MultiplexedConfig, MultiplexedTables

VOCAB = {"user": 5_000, "item": 20_000, "category": 200}
DIM = 16


class ClickModel(nn.Module):
    """The user's model: ids ``{column: [B]}`` -> click logit ``[B]``."""

    def __init__(self) -> None:
        super().__init__()
        self.user = nn.Embedding(VOCAB["user"], DIM)
        self.item = nn.Embedding(VOCAB["item"], DIM)
        self.category = nn.Embedding(VOCAB["category"], DIM)
        self.mlp = nn.Sequential(nn.Linear(3 * DIM, 64), nn.ReLU(), nn.Linear(64, 1))

    def embed(self, ids: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([self.user(ids["user"]), self.item(ids["item"]), self.category(ids["category"])], dim=1)

    def forward(self, ids: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.mlp(self.embed(ids)).squeeze(1)


def random_batch(batch_size: int, generator: torch.Generator) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    ids = {name: torch.randint(0, n, (batch_size,), generator=generator) for name, n in VOCAB.items()}
    clicks = ((ids["item"] % 7 == 0) | (ids["category"] < 20)).float()  # a learnable rule
    return ids, clicks


def main(steps: int = 20, batch_size: int = 256) -> list[float]:
    torch.manual_seed(0)
    model = ClickModel()
    before = sum(p.numel() for m in (model.user, model.item, model.category) for p in m.parameters())
    del model.user, model.item, model.category  # the user's tables go; what follows is the swap

    # --- the three lines: one shared table for all three columns, a tenth of the parameters ---
    schema = Schema([FeatureSpec(name, embedding_dim=DIM) for name in VOCAB], label=None)
    # two probes (the default) of DIM / 2 each: every feature keeps its dim DIM
    model.tables = MultiplexedTables(schema, MultiplexedConfig.from_budget(before // 10, chunk_dim=DIM // 2), vocab_sizes=VOCAB)
    model.embed = lambda ids: model.tables(kjt_from_ids(ids)).concat_pooled()
    # ------------------------------------------------------------------------------------------

    print(f"embedding parameters: {before:,} -> {model.tables.num_parameters():,}")
    print(model.tables.summary())
    dense = [p for name, p in model.named_parameters() if not name.startswith("tables.")]
    optimizer = torch.optim.Adam(dense, lr=3e-3)  # the table updates itself inside backward
    generator = torch.Generator().manual_seed(0)
    losses = []
    for step in range(steps):
        ids, clicks = random_batch(batch_size, generator)
        loss = F.binary_cross_entropy_with_logits(model(ids), clicks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 5 == 0 or step == steps - 1:
            print(f"step {step:3d}  loss {loss.item():.4f}")
    return losses


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    main(parser.parse_args().steps)

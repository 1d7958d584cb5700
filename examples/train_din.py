"""Train DIN on the synthetic CTR data from a script: data -> pipeline -> tables -> model -> metrics.

usage: python examples/train_din.py [ROWS] [WORKDIR]
"""

import sys
from pathlib import Path

from recsys_embed.models import DIN, DINConfig
from recsys_embed.pipelines import Pipeline, split_dataset
from recsys_embed.pipelines.synthetic.ctr import ctr_schema, oracle_auc, write_ctr
from recsys_embed.jobs.ranking_model import RankingModel
from recsys_embed.tables import PerFeatureTables, TableOptimizer
from recsys_embed.jobs.trainer import Trainer, TrainerConfig

rows, work = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000, Path(sys.argv[2] if len(sys.argv) > 2 else "runs/example-din")
write_ctr(work / "raw", rows=rows, seed=0, overwrite=True)
splits = split_dataset(work / "raw", work / "splits", by="time", fractions=(0.8, 0.1, 0.1))

schema = ctr_schema(embedding_dim=16)
pipeline = Pipeline(schema).fit(splits["train"])
tables = PerFeatureTables(schema, pipeline.num_embeddings, TableOptimizer("rowwise_adagrad", lr=0.05))
history = {"hist_item_id": "item_id", "hist_item_category": "item_category"}
model = RankingModel(tables, DIN(tables.shapes(len(schema.dense_features)), DINConfig(history=history)))

trainer = Trainer(model, TrainerConfig(epochs=1, lr=1e-3), run_dir=work / "run")
trainer.fit(pipeline.batches(splits["train"], batch_size=512, shuffle=True), pipeline.batches(splits["valid"], batch_size=4096))
test = trainer.evaluate(pipeline.batches(splits["test"], batch_size=4096))
print(f"DIN test AUC {test['auc']:.4f} (oracle {oracle_auc(splits['test']):.4f}) GAUC {test['gauc']:.4f} logloss {test['logloss']:.4f}")

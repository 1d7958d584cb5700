"""Train one peer model (DeepCTR-Torch or torch-rechub, DIN or AutoInt) for ``benchmarks/training.py``.

Runs inside the peers' venv (``benchmarks/.venv-peers``), never inside ours: it imports no
``recsys_embed``. It reads the run config written by ``benchmarks/training.py`` (features,
table sizes, hyper-parameters) and the train/test rows already label-encoded with OUR fitted
vocabularies (Parquet), loads them the way each peer's own examples do (a pandas DataFrame to
a dict of numpy arrays, histories padded to ``max_len`` with 0, oldest id first), trains with
the peer's own trainer and writes:

* ``--out`` JSON: training-loop seconds (wall and process CPU), samples, steps, one extra
  pass over the same training loader alone (the data path's share of the loop), versions;
* ``--preds`` ``.npy``: test click probabilities ``[N_test]`` in test-file order.

Differences forced by the peers' APIs (the report repeats them):
* torch-rechub's DIN reads no dense features and attends over all ``max_len`` slots (no mask);
  one activation unit per history feature; its MLPs always hold BatchNorm and its DIN MLP
  always uses Dice.
* DeepCTR-Torch's DIN builds its DNN's Dice for 3-D input (``dice_dim=3``) and fails on its
  2-D input, so its DNN activations are replaced by DeepCTR's own ``Dice(units, dim=2)``.
  DeepCTR's AutoInt gets no linear part (``linear_feature_columns=[]``) and no L2 penalty, like
  ours; as it counts its fields by embedding tables (a shared table breaks its shapes), its
  history features get tables of their own (same rows) instead of sharing the candidates'.

    python benchmarks/peers/run_peer.py --framework deepctr --model din --config CONFIG.json \
        --out result.json --preds preds.npy
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import types
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

FRAMEWORKS = ("deepctr", "rechub")
MODELS = ("din", "autoint")


@dataclass
class LoopTimes:
    """Seconds of the training loop (wall clock and process CPU time, all threads)."""

    wall: float = 0.0
    cpu: float = 0.0

    def measure(self, run: Callable[[], Any]) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        out = run()
        self.wall += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu
        return out


@dataclass
class PeerData:
    """The rows as the peers take them: feature name -> numpy array ([N] ids or floats, [N, L] ids)."""

    x: dict[str, np.ndarray]
    y: np.ndarray


def padded(lists: pd.Series, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Id lists as ``[N, max_len]`` int64, left-aligned and 0-padded, and their lengths ``[N]``."""
    lengths = np.minimum(lists.map(len).to_numpy(dtype=np.int64), max_len)
    out = np.zeros((len(lists), max_len), dtype=np.int64)
    rows = np.repeat(np.arange(len(lists)), lengths)
    cols = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    kept = [np.asarray(seq)[:n] for seq, n in zip(lists, lengths)]
    if rows.size:
        out[rows, cols] = np.concatenate(kept)
    return out, lengths


def load(path: str, config: dict[str, Any]) -> PeerData:
    """A Parquet file of encoded rows -> :class:`PeerData` (pandas, then numpy)."""
    frame = pd.read_parquet(path)
    features = config["features"]
    x: dict[str, np.ndarray] = {}
    for name in features["categorical"]:
        x[name] = frame[name].to_numpy(dtype=np.int64)
    for name, spec in features["sequences"].items():
        x[name], lengths = padded(frame[name], spec["max_len"])
        x[f"{name}_length"] = lengths
    for name in features["dense"]:
        x[name] = frame[name].to_numpy(dtype=np.float32)
    return PeerData(x, frame[config["label"]].to_numpy(dtype=np.float32))


def deepctr_model(model: str, config: dict[str, Any]) -> nn.Module:
    offline_deepctr()
    from deepctr_torch.inputs import DenseFeat, SparseFeat, VarLenSparseFeat
    from deepctr_torch.layers.activation import Dice
    from deepctr_torch.models import DIN, AutoInt

    features, rows, dim = config["features"], config["table_rows"], config["embedding_dim"]
    columns: list[Any] = [
        SparseFeat(name, vocabulary_size=rows[features["tables"][name]], embedding_dim=dim)
        for name in features["categorical"]
    ]
    columns += [DenseFeat(name, 1) for name in features["dense"]]
    for name, spec in features["sequences"].items():
        table = features["tables"][name]
        # DeepCTR's AutoInt counts its fields by embedding tables: a shared table breaks its shapes
        shared = table if model == "din" else name
        sparse = SparseFeat(name, vocabulary_size=rows[table], embedding_dim=dim, embedding_name=shared)
        # DIN reads the lengths; AutoInt mean-pools with the mask ids != 0
        length_name = f"{name}_length" if model == "din" else None
        columns.append(VarLenSparseFeat(sparse, maxlen=spec["max_len"], combiner="mean", length_name=length_name))
    seed = config["seed"]
    if model == "din":
        din = config["din"]
        history = [spec["candidate"] for spec in features["sequences"].values()]
        net = DIN(
            columns, history, dnn_hidden_units=din["hidden"], dnn_activation="relu",
            att_hidden_size=din["attention_hidden"], att_activation="Dice", att_weight_normalization=False,
            l2_reg_embedding=0.0, seed=seed, device="cpu",
        )  # fmt: skip
        net.dnn.activation_layers = nn.ModuleList(Dice(units, dim=2) for units in din["hidden"])
        return net
    autoint = config["autoint"]
    return AutoInt(
        [], columns, att_layer_num=autoint["num_layers"], att_head_num=autoint["num_heads"], att_res=True,
        dnn_hidden_units=autoint["dnn"], dnn_activation="relu", l2_reg_embedding=0.0, seed=seed, device="cpu",
    )  # fmt: skip


def offline_deepctr() -> None:
    """DeepCTR-Torch imports ``requests`` (not among its declared dependencies) only to ask PyPI
    for a newer release, in a thread started at import. A stand-in whose ``get`` raises keeps
    the benchmark off the network: the check catches the error and prints a notice."""
    if "requests" in sys.modules:
        return
    stand_in = types.ModuleType("requests")

    def get(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("benchmarks/peers/run_peer.py runs offline")

    stand_in.get = get  # type: ignore[attr-defined]
    sys.modules["requests"] = stand_in


def run_deepctr(model: str, config: dict[str, Any], train: PeerData, test: PeerData) -> tuple[dict[str, Any], np.ndarray]:
    offline_deepctr()
    from deepctr_torch.callbacks import Callback

    net = deepctr_model(model, config)
    net.compile(torch.optim.Adam(net.parameters(), lr=config["lr"]), "binary_crossentropy")
    names = list(net.feature_index)  # DeepCTR packs the inputs in this order into one float matrix
    times = LoopTimes()

    class EpochTimer(Callback):  # on_epoch_begin/end bracket exactly the loop over the batches
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.wall, self.cpu = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            times.wall += time.perf_counter() - self.wall
            times.cpu += time.process_time() - self.cpu

    batch = config["batch_size"]
    net.fit({n: train.x[n] for n in names}, train.y, batch_size=batch, epochs=config["epochs"], verbose=0,
            shuffle=True, callbacks=[EpochTimer()])  # fmt: skip
    # the data path alone: the loader DeepCTR's fit builds, iterated once
    columns = [train.x[n].reshape(len(train.y), -1) for n in names]
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(np.concatenate(columns, axis=-1)), torch.from_numpy(train.y))
    loader = torch.utils.data.DataLoader(dataset, shuffle=True, batch_size=batch)
    data = LoopTimes()
    data.measure(lambda: sum(1 for _ in loader))
    preds = net.predict({n: test.x[n] for n in names}, batch_size=batch).reshape(-1)
    return _report(net, times, data, len(train.y), batch, config["epochs"]), preds


def rechub_model(model: str, config: dict[str, Any]) -> nn.Module:
    from torch_rechub.basic.features import DenseFeature, SequenceFeature, SparseFeature
    from torch_rechub.models.next_item_ranking import DIN, AutoInt

    features, rows, dim = config["features"], config["table_rows"], config["embedding_dim"]
    tables = features["tables"]

    def sparse(name: str) -> Any:
        return SparseFeature(name, vocab_size=rows[tables[name]], embed_dim=dim)

    if model == "din":
        din = config["din"]
        targets = [spec["candidate"] for spec in features["sequences"].values()]
        history = [
            SequenceFeature(name, vocab_size=rows[tables[name]], embed_dim=dim, pooling="concat", shared_with=spec["candidate"])
            for name, spec in features["sequences"].items()
        ]
        return DIN(
            features=[sparse(n) for n in features["categorical"] if n not in targets],
            history_features=history,
            target_features=[sparse(n) for n in targets],
            mlp_params={"dims": list(din["hidden"])},
            attention_mlp_params={"dims": list(din["attention_hidden"]), "activation": "dice"},
        )
    autoint = config["autoint"]
    sequences = [
        SequenceFeature(name, vocab_size=rows[tables[name]], embed_dim=dim, pooling="mean",
                        shared_with=spec["candidate"], padding_idx=0)  # fmt: skip
        for name, spec in features["sequences"].items()
    ]
    return AutoInt(
        sparse_features=[sparse(n) for n in features["categorical"]] + sequences,
        dense_features=[DenseFeature(n) for n in features["dense"]],
        num_layers=autoint["num_layers"],
        num_heads=autoint["num_heads"],
        mlp_params={"dims": list(autoint["dnn"]), "activation": "relu"},
    )


def run_rechub(model: str, config: dict[str, Any], train: PeerData, test: PeerData) -> tuple[dict[str, Any], np.ndarray]:
    from torch_rechub.trainers import CTRTrainer
    from torch_rechub.utils.data import DataGenerator

    net = rechub_model(model, config)
    names = [f.name for f in net.embedding.features] if model == "din" else (
        [f.name for f in net.sparse_features] + [f.name for f in net.dense_features])  # fmt: skip
    keep = lambda data: {n: data.x[n] for n in names}  # noqa: E731
    batch = config["batch_size"]
    train_dl, _, test_dl = DataGenerator(keep(train), train.y).generate_dataloader(
        x_val=keep(test), y_val=test.y, x_test=keep(test), y_test=test.y, batch_size=batch
    )
    with tempfile.TemporaryDirectory() as model_path:
        trainer = CTRTrainer(
            net, optimizer_params={"lr": config["lr"], "weight_decay": 0.0}, n_epoch=config["epochs"],
            device="cpu", model_path=model_path,
        )  # fmt: skip
        times = LoopTimes()
        for _ in range(config["epochs"]):  # CTRTrainer.fit's loop without its checkpoint write
            times.measure(lambda: trainer.train_one_epoch(train_dl))
        data = LoopTimes()
        data.measure(lambda: sum(1 for _ in train_dl))
        preds = np.asarray(trainer.predict(trainer.model, test_dl), dtype=np.float64).reshape(-1)
    return _report(net, times, data, len(train.y), batch, config["epochs"]), preds


def _report(net: nn.Module, loop: LoopTimes, data: LoopTimes, rows: int, batch: int, epochs: int) -> dict[str, Any]:
    embedding = sum(p.numel() for m in net.modules() if isinstance(m, nn.Embedding) for p in m.parameters())
    return {
        "samples": rows * epochs,
        "steps": -(-rows // batch) * epochs,
        "loop_seconds": asdict(loop),
        "data_pass_seconds": asdict(data),
        "dense_parameters": sum(p.numel() for p in net.parameters()) - embedding,
        "embedding_parameters": embedding,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--framework", choices=FRAMEWORKS, required=True)
    parser.add_argument("--model", choices=MODELS, required=True)
    parser.add_argument("--config", required=True, help="run config JSON written by benchmarks/training.py")
    parser.add_argument("--out", required=True, help="result JSON to write")
    parser.add_argument("--preds", required=True, help="test predictions .npy to write")
    args = parser.parse_args(argv)
    config = json.loads(Path(args.config).read_text())
    torch.set_num_threads(config["threads"])
    torch.manual_seed(config["seed"])
    np.random.seed(config["seed"])
    train, test = load(config["data"]["train"], config), load(config["data"]["test"], config)
    run = run_deepctr if args.framework == "deepctr" else run_rechub
    report, preds = run(args.model, config, train, test)
    package = {"deepctr": "deepctr-torch", "rechub": "torch-rechub"}[args.framework]
    report["versions"] = {package: version(package), "torch": torch.__version__, "pandas": pd.__version__,
                          "numpy": np.__version__, "python": platform.python_version()}  # fmt: skip
    report["threads"] = torch.get_num_threads()
    for path, write in ((args.preds, lambda p: np.save(p, preds)), (args.out, lambda p: Path(p).write_text(json.dumps(report, indent=2)))):
        tmp = Path(f"{path}.tmp{Path(path).suffix}")
        write(tmp)
        tmp.rename(path)


if __name__ == "__main__":
    sys.exit(main())

"""Where DIN's gap to the oracle AUC comes from, on the synthetic CTR data (``benchmarks/quality.py``'s
data and settings).

Three diagnostics of a DIN trained through ``jobs.train`` (``quality.run``), and a bound:

1. **More epochs**: up to ``--epochs`` epochs with early stopping on validation AUC; the
   validation AUC of every epoch is recorded (does a second pass help, or overfit?).
2. **More capacity**: the same DIN with embedding dim ``--wide-dim`` instead of 16.
3. **Gap by id frequency**: the test rows bucketed by how often their user (and, separately,
   their item) occurs in the training split; in each bucket the model's AUC next to the oracle
   AUC (``p_true``) of the same rows. A gap that stays wide for well-observed users and items is
   not explained by rare ids alone.
4. **Best learner bound** (:func:`best_learner_bound`): the true click model with every term
   handed over exactly except the per-id biases ``b_user`` and ``q_item``, which are learned
   from the training split by L2-regularized logistic regression (MAP under a Gaussian prior;
   the Bayes strength is ``1 / std^2`` of the true biases). Its test AUC says how close to the
   oracle a learner can get when it only has to estimate two scalars per id from this much data.
   Two more variants learn the item latent vectors (biases true, then biases learned as well).

Writes ``benchmarks/results/oracle_gap.json`` and ``.png``.

    python benchmarks/oracle_gap.py [--rows 1000000] [--epochs 3] [--wide-dim 32]
    python benchmarks/oracle_gap.py --only bound      # diagnostic 4 alone, merged into the JSON
    python benchmarks/oracle_gap.py --smoke --out /tmp/gap.json    # tiny, for the tests
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from recsys_embed.metrics import auc, logloss
from recsys_embed.jobs.model_io import load_model
from recsys_embed.pipelines.synthetic.click_model import ClickModel, CtrWorld
from recsys_embed.pipelines.synthetic.ctr import BLOCK_ROWS

HERE = Path(__file__).resolve().parent
BUCKETS = ((0, 1), (1, 5), (5, 20), (20, 100), (100, None))  # training occurrences, [lo, hi)


def _quality_module() -> Any:
    """benchmarks/quality.py (data preparation, settings and the training run are shared)."""
    spec = importlib.util.spec_from_file_location("benchmark_quality", HERE / "quality.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # type: ignore[union-attr]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def training_counts(train: str, column: str, values: np.ndarray) -> np.ndarray:
    """How often each of ``values`` occurs in ``column`` of the training split."""
    counts = pl.scan_parquet(f"{train}/*.parquet").group_by(column).len().collect()
    lookup = pl.DataFrame({column: values}).join(counts, on=column, how="left")
    return lookup["len"].fill_null(0).to_numpy()


def bucket_aucs(
    scores: np.ndarray, labels: np.ndarray, p_true: np.ndarray, counts: np.ndarray, min_rows: int
) -> list[dict[str, Any]]:
    """Model and oracle AUC of the rows in each of ``BUCKETS`` of ``counts`` (training occurrences);
    buckets of fewer than ``min_rows`` rows, or of one class only, are left out."""
    rows = []
    for lo, hi in BUCKETS:
        mask = (counts >= lo) & (counts < (hi if hi is not None else np.inf))
        y = labels[mask]
        if mask.sum() < min_rows or y.min() == y.max():
            continue
        model_auc, oracle = auc(scores[mask], y), auc(p_true[mask], y)
        rows.append({"train_occurrences": [lo, hi], "rows": int(mask.sum()), "model_auc": round(model_auc, 4),
                     "oracle_auc": round(oracle, 4), "gap": round(oracle - model_auc, 4)})  # fmt: skip
    return rows


def gap_by_frequency(
    run_dir: Path, splits: dict[str, str], batch_size: int, min_rows: int = 200
) -> dict[str, list[dict[str, Any]]]:
    """Model and oracle AUC of the test rows, bucketed by training occurrences of user and item
    (:func:`bucket_aucs`)."""
    loaded = load_model(run_dir / "model")
    scores, labels, _ = loaded.model.predict(loaded.pipeline.batches(splits["test"], batch_size=batch_size))
    test = pl.read_parquet(f"{splits['test']}/*.parquet", columns=["user_id", "item_id", "label", "p_true"])
    if not np.array_equal(test["label"].to_numpy(), labels):
        raise RuntimeError(f"{splits['test']}: the batch stream is not in file order; cannot align rows")
    p_true = test["p_true"].to_numpy()
    return {
        column: bucket_aucs(scores, labels, p_true, training_counts(splits["train"], column, test[column].to_numpy()), min_rows)
        for column in ("user_id", "item_id")
    }


@dataclass(frozen=True)
class BoundConfig:
    """Settings of :func:`best_learner_bound`. Biases: an L2 grid of multiples of the Bayes
    strengths ``1 / std^2`` (users and items crossed), fitted by block Newton to ``tolerance``.
    Item vectors: ``lam / 2 |v - c|^2`` toward the category centre on unit vectors is a von
    Mises-Fisher prior of concentration ``lam``; the true spread (mean cos to the centre ~0.82 in
    16 dimensions) matches ~40. Fitted by Adam, the epoch of the best validation AUC kept."""

    l2_scales: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
    max_iterations: int = 300
    tolerance: float = 1e-5  # largest |gradient| of the penalized log-likelihood (in rows)
    vector_l2: tuple[float, ...] = (2.5, 5.0, 10.0, 20.0, 40.0)
    epochs: int = 4
    batch_size: int = 4096
    lr: float = 0.01
    seed: int = 0


@dataclass
class Split:
    """One split's rows: 0-based user and item indices, labels, ``p_true``, its logit and the true
    values of the terms the bound learns (``bias = user_bias[u] + item_quality[i]``, ``interest
    = w_interest (s - s_ref)``), and the click histories as flat item indices (torch, int64)."""

    user: np.ndarray
    item: np.ndarray
    label: np.ndarray
    p_true: np.ndarray
    logit: np.ndarray
    bias: np.ndarray
    hist_start: torch.Tensor
    hist_len: torch.Tensor
    hist_items: torch.Tensor
    interest: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))  # set by load_split

    def fixed(self, biases: bool, vectors: bool) -> torch.Tensor:
        """The logit less the true terms a variant learns: ``logit - bias - interest`` as chosen."""
        return torch.from_numpy(self.logit - (self.bias if biases else 0.0) - (self.interest if vectors else 0.0)).float()


def replay_world(raw_dir: Path, rows: int, seed: int) -> CtrWorld:
    """The latent world of ``write_ctr(raw_dir, rows, seed)``, rebuilt from the seed and checked:
    its first generated block must reproduce the first rows of ``raw_dir`` exactly."""
    rng = np.random.default_rng(seed)
    world = CtrWorld(rng, rows, ClickModel())
    first = world.block(rng, min(BLOCK_ROWS, rows))
    raw = pl.read_parquet(f"{raw_dir}/*.parquet", columns=["user_id", "item_id", "p_true"], n_rows=first.num_rows)
    for column in raw.columns:
        if not np.array_equal(raw[column].to_numpy(), first[column].to_numpy()):
            raise RuntimeError(f"{raw_dir}: column {column!r} of the first {first.num_rows:,} rows differs from "
                               f"CtrWorld(default_rng({seed}), {rows}); the data was not made by write_ctr")  # fmt: skip
    return world


def load_split(path: str, world: CtrWorld) -> Split:
    """The rows of a split, with the true bias and interest terms of the click model."""
    table = pl.read_parquet(f"{path}/*.parquet", columns=["user_id", "item_id", "label", "p_true", "hist_item_id"]).to_arrow()
    user, item = table["user_id"].to_numpy() - 1, table["item_id"].to_numpy() - 1
    p = table["p_true"].to_numpy().astype(np.float64)
    if p.min() <= 0.0 or p.max() >= 1.0:
        raise ValueError(f"{path}: p_true must lie in (0, 1) to take its logit, found [{p.min()}, {p.max()}]")
    hist = table["hist_item_id"].combine_chunks()
    offsets = torch.from_numpy(hist.offsets.to_numpy().astype(np.int64))
    split = Split(
        user, item, table["label"].to_numpy().astype(np.float64), p, np.log(p) - np.log1p(-p),
        world.user_bias[user].astype(np.float64) + world.item_quality[item], offsets[:-1], offsets.diff(),
        torch.from_numpy(hist.values.to_numpy().astype(np.int64) - 1),
    )  # fmt: skip
    vectors = torch.from_numpy(world.item_vec)
    split.interest = predict_latent(split, LatentFit(vectors), world.model, torch.zeros(len(item))).astype(np.float64)
    return split


def check_interest(split: Split, world: CtrWorld, rows: int = 2048) -> None:
    """The torch interest term of the first ``rows`` rows must match the generator's own."""
    n = min(rows, len(split.item))
    lengths = split.hist_len[:n].numpy()
    padded = np.zeros((n, int(lengths.max(initial=0))), dtype=np.int64)
    for r in range(n):
        start = int(split.hist_start[r])
        padded[r, : lengths[r]] = split.hist_items[start : start + lengths[r]].numpy()
    s = world._soft_max_similarity(world.item_vec[split.item[:n]], padded, lengths)
    m = world.model
    expected = np.where(lengths > 0, m.w_interest * (s - m.s_ref), 0.0)
    if np.abs(expected - split.interest[:n]).max() > 1e-3:
        raise RuntimeError("interest_logits differs from CtrWorld._soft_max_similarity; the bound would be wrong")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _newton_step(ids: np.ndarray, residual: np.ndarray, weight: np.ndarray, theta: np.ndarray, l2: float) -> float:
    """One Newton step, in place, on a table of independent scalars (``theta``) given the rows'
    ``p - y`` and ``p (1 - p)``; returns the largest |gradient| before the step."""
    grad = np.bincount(ids, residual, len(theta)) + l2 * theta
    hess = np.bincount(ids, weight, len(theta)) + l2
    theta -= np.clip(grad / hess, -1.0, 1.0)
    return float(np.abs(grad).max())


def fit_biases(
    train: Split, offset: np.ndarray, n_users: int, n_items: int, l2_user: float, l2_item: float, config: BoundConfig
) -> tuple[np.ndarray, np.ndarray, int]:
    """MAP of ``b_user``, ``q_item`` in ``logit = offset + b_user[u] + q_item[i]`` with penalty
    ``l2_user / 2 |b|^2 + l2_item / 2 |q|^2``: Newton steps alternating between the two tables
    (each is separable given the other). Returns the tables and the iterations taken."""
    b, q = np.zeros(n_users), np.zeros(n_items)
    for iteration in range(1, config.max_iterations + 1):
        p = _sigmoid(offset + b[train.user] + q[train.item])
        grad_b = _newton_step(train.user, p - train.label, p * (1 - p), b, l2_user)
        p = _sigmoid(offset + b[train.user] + q[train.item])
        grad_q = _newton_step(train.item, p - train.label, p * (1 - p), q, l2_item)
        if max(grad_b, grad_q) < config.tolerance:
            return b, q, iteration
    raise RuntimeError(f"fit_biases: no convergence in {config.max_iterations} iterations "
                       f"(l2 {l2_user:.3g}, {l2_item:.3g}; |gradient| {max(grad_b, grad_q):.2e})")  # fmt: skip


def interest_logits(vectors: torch.Tensor, split: Split, rows: torch.Tensor, model: ClickModel) -> torch.Tensor:
    """``w_interest (s - s_ref)`` of ``rows`` (0 for an empty history) with unit item vectors
    ``vectors`` [I, K]: the click model's soft maximum ``s`` over the rows' flat history pairs."""
    lengths = split.hist_len[rows]
    owner = torch.repeat_interleave(torch.arange(len(rows)), lengths)
    first = torch.repeat_interleave(split.hist_start[rows] - (torch.cumsum(lengths, 0) - lengths), lengths)
    hist = split.hist_items[first + torch.arange(len(owner))]
    cos = (vectors[torch.from_numpy(split.item)[rows]][owner] * vectors[hist]).sum(-1)
    total = torch.zeros(len(rows), dtype=vectors.dtype).index_add_(0, owner, torch.exp(model.beta * (cos - 1)))
    s = 1 + torch.log(total.clamp_min(1e-30) / lengths.clamp_min(1)) / model.beta
    return model.w_interest * torch.where(lengths > 0, s - model.s_ref, torch.zeros(()))


@dataclass
class LatentFit:
    """Unit item vectors and, where learned, the per-id biases (else the split's true ones are in
    the fixed part of the logit)."""

    vectors: torch.Tensor
    user_bias: torch.Tensor | None = None
    item_quality: torch.Tensor | None = None

    def logits(self, split: Split, rows: torch.Tensor, model: ClickModel, fixed: torch.Tensor) -> torch.Tensor:
        out = fixed[rows] + interest_logits(self.vectors, split, rows, model)
        if self.user_bias is not None and self.item_quality is not None:
            out = out + self.user_bias[torch.from_numpy(split.user)[rows]] + self.item_quality[torch.from_numpy(split.item)[rows]]
        return out


def predict_latent(split: Split, fit: LatentFit, model: ClickModel, fixed: torch.Tensor, chunk: int = 32_768) -> np.ndarray:
    """Logits of every row of ``split`` (no gradients, in chunks)."""
    with torch.no_grad():
        parts = [fit.logits(split, torch.arange(lo, min(lo + chunk, len(split.item))), model, fixed)
                 for lo in range(0, len(split.item), chunk)]  # fmt: skip
    return torch.cat(parts).numpy()


def category_centres(world: CtrWorld) -> torch.Tensor:
    """Each item's category centre (``CtrWorld`` keeps none): the normalized mean of the true
    vectors of the *other* items of its category, so no item sees its own vector."""
    sums = np.zeros((len(world.cat_size), world.item_vec.shape[1]))
    np.add.at(sums, world.item_cat, world.item_vec)
    return torch.nn.functional.normalize(torch.from_numpy(sums[world.item_cat] - world.item_vec).float(), dim=1)


def fit_vectors(
    train: Split, valid: Split, centres: torch.Tensor, l2: float, biases: tuple[int, float, float] | None,
    model: ClickModel, config: BoundConfig, init: torch.Tensor | None = None,
) -> tuple[LatentFit, list[float]]:  # fmt: skip
    """MAP-by-Adam of unit item vectors (``lam / 2 |v - c|^2`` toward the centres ``c``, starting
    there or at ``init``) and, if ``biases = (n_users, l2_user, l2_item)``, of the per-id biases
    too; returns the fit of the epoch with the best validation AUC and the validation AUC of every
    epoch."""
    torch.manual_seed(config.seed)
    raw = torch.nn.Parameter((centres if init is None else init).clone())
    tables = [torch.nn.Parameter(torch.zeros(n)) for n in ((biases[0], len(centres)) if biases else ())]
    optimizer = torch.optim.Adam([raw, *tables], lr=config.lr)
    fixed, fixed_valid = train.fixed(biases is not None, True), valid.fixed(biases is not None, True)
    labels, n = torch.from_numpy(train.label).float(), len(train.item)
    best, by_epoch = None, []
    for _ in range(config.epochs):
        for rows in torch.randperm(n).split(config.batch_size):
            fit = LatentFit(torch.nn.functional.normalize(raw, dim=1), *tables)
            penalty = l2 / 2 * (fit.vectors - centres).pow(2).sum()
            if biases:
                penalty = penalty + biases[1] / 2 * tables[0].pow(2).sum() + biases[2] / 2 * tables[1].pow(2).sum()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(fit.logits(train, rows, model, fixed), labels[rows])
            optimizer.zero_grad()
            (loss + penalty / n).backward()
            optimizer.step()
        fit = LatentFit(*(t.detach().clone() for t in (torch.nn.functional.normalize(raw, dim=1), *tables)))
        by_epoch.append(round(auc(predict_latent(valid, fit, model, fixed_valid), valid.label), 5))
        if by_epoch[-1] == max(by_epoch):
            best = fit
    return best, by_epoch  # type: ignore[return-value]


def _frequency_gaps(
    scores: np.ndarray, test: Split, seen: dict[str, np.ndarray], min_rows: int
) -> dict[str, list[dict[str, Any]]]:
    ids = {"user_id": test.user, "item_id": test.item}
    return {column: bucket_aucs(scores, test.label, test.p_true, seen[column][ids[column]], min_rows) for column in ids}


def _test_summary(scores: np.ndarray, test: Split, seen: dict[str, np.ndarray], min_rows: int) -> dict[str, Any]:
    test_auc, oracle = auc(scores, test.label), auc(test.p_true, test.label)
    return {"test_auc": round(test_auc, 5), "test_logloss": round(logloss(_sigmoid(scores), test.label), 5),
            "oracle_auc": round(oracle, 5), "gap": round(oracle - test_auc, 5),
            "gap_by_frequency": _frequency_gaps(scores, test, seen, min_rows)}  # fmt: skip


def _rmse(learned: np.ndarray, true: np.ndarray, seen: np.ndarray) -> float:
    """Root mean squared error over the ids seen in training."""
    mask = seen > 0
    return round(float(np.sqrt(np.mean((learned[mask] - true[mask]) ** 2))), 4)


def bias_bound(
    world: CtrWorld, data: dict[str, Split], seen: dict[str, np.ndarray], min_rows: int, config: BoundConfig
) -> dict[str, Any]:
    """Variant 1: everything true but ``b_user``, ``q_item``, which are learned (block Newton)."""
    train, valid, test = data["train"], data["valid"], data["test"]
    bayes = (1 / world.model.user_std**2, 1 / world.model.item_quality_std**2)
    grid, best = [], None
    for su in config.l2_scales:
        for si in config.l2_scales:
            b, q, iterations = fit_biases(train, train.logit - train.bias, len(world.user_bias), len(world.item_quality),
                                          bayes[0] * su, bayes[1] * si, config)  # fmt: skip
            p_valid = _sigmoid(valid.logit - valid.bias + b[valid.user] + q[valid.item])
            entry = {"l2_user": round(bayes[0] * su, 4), "l2_item": round(bayes[1] * si, 4), "iterations": iterations,
                     "valid_auc": round(auc(p_valid, valid.label), 5), "valid_logloss": round(logloss(p_valid, valid.label), 5)}  # fmt: skip
            grid.append(entry)
            if best is None or entry["valid_auc"] > best[0]["valid_auc"]:
                best = (entry, b, q)
    chosen, b, q = best  # type: ignore[misc]
    return {
        "estimator": "true click model, b_user and q_item learned on train (L2 logistic regression, block Newton)",
        "bayes_l2": {"user": round(bayes[0], 4), "item": round(bayes[1], 4)},
        "chosen": chosen,
        **_test_summary(test.logit - test.bias + b[test.user] + q[test.item], test, seen, min_rows),
        "biases_zero_test_auc": round(auc(test.logit - test.bias, test.label), 5),
        "rmse_learned_vs_true": {"user": _rmse(b, world.user_bias, seen["user_id"]),
                                 "item": _rmse(q, world.item_quality, seen["item_id"])},  # fmt: skip
        "grid": grid,
    }


def vector_bound(
    world: CtrWorld, data: dict[str, Split], seen: dict[str, np.ndarray], min_rows: int, config: BoundConfig,
    bias_l2: tuple[float, float] | None,
) -> dict[str, Any]:  # fmt: skip
    """Variants 2 and 3: the item latent vectors learned (from their category centres, true
    ``beta``, ``s_ref``, ``w_interest``), with the per-id biases true (``bias_l2`` None) or
    learned alongside with those L2 strengths."""
    train, valid, test = data["train"], data["valid"], data["test"]
    centres, truth = category_centres(world), torch.from_numpy(world.item_vec)
    biases = (len(world.user_bias), *bias_l2) if bias_l2 else None
    learned = bias_l2 is not None
    grid, best = [], None
    for l2 in config.vector_l2:
        fit, by_epoch = fit_vectors(train, valid, centres, l2, biases, world.model, config)
        entry = {"l2_vectors": l2, "valid_auc_by_epoch": by_epoch, "valid_auc": max(by_epoch),
                 "best_epoch": by_epoch.index(max(by_epoch)) + 1}  # fmt: skip
        grid.append(entry)
        if best is None or entry["valid_auc"] > best[0]["valid_auc"]:
            best = (entry, fit)
    chosen, fit = best  # type: ignore[misc]
    mask = torch.from_numpy(seen["item_id"] > 0)
    centre_scores = predict_latent(test, LatentFit(centres), world.model, test.fixed(False, True))
    return {
        "estimator": "true click model, item latent vectors" + (" and b_user, q_item" if learned else "")
                     + " learned on train (Adam, L2 toward the category centre)",
        **({"bias_l2": {"user": bias_l2[0], "item": bias_l2[1]}} if bias_l2 else {}),
        "chosen": chosen,
        **_test_summary(predict_latent(test, fit, world.model, test.fixed(learned, True)), test, seen, min_rows),
        **({} if learned else {"centres_test_auc": round(auc(centre_scores, test.label), 5),
                               "from_true_vectors": _from_truth(world, data, centres, chosen["l2_vectors"], config)}),  # fmt: skip
        "mean_cos_to_true": {"centres": round(float((centres * truth).sum(1)[mask].mean()), 4),
                             "learned": round(float((fit.vectors * truth).sum(1)[mask].mean()), 4)},  # fmt: skip
        "grid": grid,
    }


def _from_truth(
    world: CtrWorld, data: dict[str, Split], centres: torch.Tensor, l2: float, config: BoundConfig
) -> dict[str, Any]:
    """The same fit started at the true vectors: if validation AUC falls away from the oracle's,
    the objective's optimum itself lies below it (the data cannot pin the vectors down), not
    only the optimizer's path from the centres."""
    truth = torch.from_numpy(world.item_vec)
    _, by_epoch = fit_vectors(data["train"], data["valid"], centres, l2, None, world.model, config, init=truth)
    oracle = auc(data["valid"].p_true, data["valid"].label)
    return {"l2_vectors": l2, "valid_auc_by_epoch": by_epoch, "valid_oracle_auc": round(oracle, 5)}


def best_learner_bound(
    splits: dict[str, str], rows: int, seed: int, min_rows: int = 200, config: BoundConfig = BoundConfig()
) -> dict[str, Any]:
    """How close to the oracle a learner gets that knows the click model except some per-id
    parameters, which it learns on the training split (hyper-parameters chosen on valid AUC):
    variant 1 the biases (top level), 2 the item vectors, 3 both; each with its test AUC next to
    the oracle's and the gap by user and item frequency."""
    world = replay_world(Path(splits["train"]).parents[1] / "raw", rows, seed)
    data = {name: load_split(splits[name], world) for name in ("train", "valid", "test")}
    check_interest(data["train"], world)
    seen = {"user_id": np.bincount(data["train"].user, minlength=len(world.user_bias)),
            "item_id": np.bincount(data["train"].item, minlength=len(world.item_quality))}  # fmt: skip
    result = bias_bound(world, data, seen, min_rows, config)
    chosen = (result["chosen"]["l2_user"], result["chosen"]["l2_item"])
    result["vectors_learned"] = vector_bound(world, data, seen, min_rows, config, None)
    result["biases_and_vectors_learned"] = vector_bound(world, data, seen, min_rows, config, chosen)
    return result


def plot(result: dict[str, Any], path: Path) -> None:
    """Model vs oracle AUC per frequency bucket, for users and items (with the best learner bound
    of diagnostic 4 where the result holds it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {"DIN": result.get("gap_by_frequency", {})}
    if "best_learner" in result:
        bound = result["best_learner"]
        series["true model, biases learned"] = bound["gap_by_frequency"]
        if "biases_and_vectors_learned" in bound:
            series["true model, biases + item vectors learned"] = bound["biases_and_vectors_learned"]["gap_by_frequency"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, column in zip(axes, ("user_id", "item_id")):
        buckets = sorted({tuple(r["train_occurrences"]) for rows in series.values() for r in rows.get(column, [])},
                         key=lambda b: b[0])  # fmt: skip
        oracle = {tuple(r["train_occurrences"]): r["oracle_auc"] for rows in series.values() for r in rows.get(column, [])}
        bars = {**{name: {tuple(r["train_occurrences"]): r["model_auc"] for r in rows.get(column, [])}
                       for name, rows in series.items()}, "oracle (p_true)": oracle}  # fmt: skip
        x, width = np.arange(len(buckets)), 0.8 / len(bars)
        for k, (name, values) in enumerate(bars.items()):
            ax.bar(x + (k - (len(bars) - 1) / 2) * width, [values.get(b, np.nan) for b in buckets], width, label=name)
        ax.set_xticks(x, [f"{lo}-{hi - 1}" if hi else f">={lo}" for lo, hi in buckets])
        ax.set_xlabel(f"occurrences of the row's {column} in the training split")
        ax.set_ylabel("test AUC")
        lows = [v for values in bars.values() for v in values.values()] or [0.5]
        ax.set_ylim(min(lows) - 0.05, 1.0)
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(f"DIN, best learner bounds and oracle by id frequency, synthetic CTR {result['settings']['rows']:,} rows")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_buckets(name: str, gaps: dict[str, list[dict[str, Any]]]) -> None:
    for column, rows in gaps.items():
        for r in rows:
            print(f"{column:<8} {str(r['train_occurrences']):<12} rows {r['rows']:>7,}  {name} {r['model_auc']:.4f}  "
                  f"oracle {r['oracle_auc']:.4f}  gap {r['gap']:.4f}")  # fmt: skip


def din_diagnostics(
    quality: Any, settings: Any, splits: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    """Diagnostics 1-3: the longer DIN run, the wider one, and the gap by id frequency."""
    longer = quality.run("din_epochs", settings, splits, args.work_dir, {"name": "din"})
    wide_settings = dataclasses.replace(settings, epochs=1, embedding_dim=args.wide_dim)
    wide = quality.run(f"din_dim{args.wide_dim}", wide_settings, splits, args.work_dir, {"name": "din"})
    return {
        "wide_dim": args.wide_dim,
        "din_epochs": {"valid_by_epoch": longer["valid_by_epoch"], "test_of_best_epoch": longer["test"]},
        "din_wide": {"test": wide["test"]},
        "gap_by_frequency": gap_by_frequency(
            args.work_dir / "din_epochs", splits, settings.batch_size, args.min_bucket_rows
        ),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    quality = _quality_module()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=quality.Settings.rows)
    parser.add_argument("--epochs", type=int, default=3, help="most epochs of the longer run (early stopping)")
    parser.add_argument("--wide-dim", type=int, default=32, help="embedding dim of the wider run")
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--work-dir", type=Path, default=Path("runs/oracle_gap"))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "oracle_gap.json")
    parser.add_argument("--min-bucket-rows", type=int, default=200, help="smallest frequency bucket reported")
    parser.add_argument("--only", choices=("all", "bound"), default="all",
                        help="'bound': diagnostic 4 alone, merged into the existing --out JSON")  # fmt: skip
    parser.add_argument("--smoke", action="store_true", help="tiny data, to check the script runs")
    args = parser.parse_args(argv)
    settings = quality.Settings(rows=args.rows, epochs=args.epochs)
    if args.smoke:
        settings = quality.Settings(rows=3000, epochs=2, batch_size=256)
        args.wide_dim, args.min_bucket_rows = 8, 20
    torch.set_num_threads(1)
    load_before, start = os.getloadavg()[0], time.perf_counter()
    splits = quality.prepare_data(args.data_dir, settings.rows, settings.seed)
    if args.only == "bound":
        result = json.loads(args.out.read_text()) if args.out.exists() else {"settings": dataclasses.asdict(settings)}
        if result["settings"]["rows"] != settings.rows or result["settings"]["seed"] != settings.seed:
            raise ValueError(f"{args.out}: made with rows {result['settings']['rows']}, seed {result['settings']['seed']}; "
                             f"the bound would be for rows {settings.rows}, seed {settings.seed} (pass another --out)")  # fmt: skip
    else:
        result = {"settings": dataclasses.asdict(settings), **din_diagnostics(quality, settings, splits, args)}
    bound_cpu = time.process_time()
    result["best_learner"] = best_learner_bound(splits, settings.rows, settings.seed, args.min_bucket_rows)
    result["best_learner"]["cpu_s"] = round(time.process_time() - bound_cpu, 1)
    if "din_epochs" in result:
        result["best_learner"]["din_test_auc"] = round(result["din_epochs"]["test_of_best_epoch"]["auc"], 5)
    if args.only == "all":
        result["environment"] = {"load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                                 "wall_s": round(time.perf_counter() - start, 1)}  # fmt: skip
    quality.write_json(result, args.out)
    plot(result, args.out.with_suffix(".png"))
    print_buckets("DIN", result.get("gap_by_frequency", {}))
    bound = result["best_learner"]
    print_buckets("bound", bound["gap_by_frequency"])
    for name, variant in (("biases learned", bound), ("item vectors learned", bound["vectors_learned"]),
                          ("biases + item vectors learned", bound["biases_and_vectors_learned"])):  # fmt: skip
        print(f"best learner, {name}: test AUC {variant['test_auc']:.4f} (valid {variant['chosen']['valid_auc']:.4f}), "
              f"oracle {variant['oracle_auc']:.4f}, gap {variant['gap']:.4f}; chosen {variant['chosen']}")  # fmt: skip
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return result


if __name__ == "__main__":
    main()

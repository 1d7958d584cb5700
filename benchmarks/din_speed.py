"""DIN on CPU, the code before against now, interleaved in one process: the forward pass
(eval, ``no_grad``, what batch scoring runs) and the training step (tables + DIN + Adam).

``before`` is a copy of the same model (same weights) whose Dice, local activation unit and
``DIN.interest`` run the code of commit d581598 (kept below, verbatim, as the baseline), trained
by the Adam of that commit's Trainer (``torch.optim.Adam``, the loop over parameters): the eager
Dice over the whole ``[N, H]`` tensor and the history concatenated with its padding. ``now`` is
the library: Dice in its compiled kernel (``dice.cpp``), the real positions packed once, the
first attention Linear folded (the candidate's part once per sample), the attention MLP in
cache-sized blocks in eval, and the Trainer's optimizer (:func:`dense_optimizer`: fused Adam).

Synthetic CTR data (``write_ctr``, the default schema: 2 histories of up to 50 items), one torch
thread, the per-feature layout with fused rowwise Adagrad. Each round times ``before`` and
``now`` on the same batches, in alternating order (the training step, and DIN's forward +
backward alone on fixed embeddings); the ratios (before / now) are per round,
their median is reported, with wall clock and thread CPU time (the machine may be shared: the
load average is recorded). One profiled call of each gives the top ops. Writes
``benchmarks/results/din_speed.json`` and ``.png``.

    python benchmarks/din_speed.py [--rows 60000] [--rounds 5] [--train-batches 512,2048]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.profiler import profile

from recsys_embed.artifacts import versions
from recsys_embed.batch import Batch
from recsys_embed.jobs.builders import build_model, build_tables, layout_for_model
from recsys_embed.jobs.ranking_model import RankingModel
from recsys_embed.jobs.trainer import dense_optimizer
from recsys_embed.models import DIN
from recsys_embed.models.layers import Dice, LocalActivationUnit, masked_sum
from recsys_embed.pipelines import Pipeline
from recsys_embed.pipelines.synthetic.ctr import ctr_schema, write_ctr
from recsys_embed.tables import TableOptimizer
from recsys_embed.tables.base import Embeddings

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = ("before", "now")


# ---- the code before (commit d581598), the baseline --------------------------------------------
def dice_before(self: Dice, x: torch.Tensor) -> torch.Tensor:
    flat = x.reshape(-1, x.shape[-1])
    batch_stats = self.training and flat.shape[0] > 1
    normed = F.batch_norm(
        flat, self.running_mean, self.running_var, training=batch_stats, momentum=self.momentum, eps=self.eps
    )
    p = torch.sigmoid(normed).reshape(x.shape)
    return p * x + (1.0 - p) * self.alpha * x


def attention_before(
    self: LocalActivationUnit, history: torch.Tensor, candidate: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    row = mask.nonzero(as_tuple=True)[0]
    h, c = history[mask], candidate[row]
    first = self.mlp.layers[0]
    w_h, w_c, w_diff, w_prod = first.weight.split(history.shape[-1], dim=1)
    per_sample = nn.functional.linear(candidate, w_c - w_diff, first.bias)
    hidden = nn.functional.linear(h, w_h + w_diff) + per_sample[row] + nn.functional.linear(h * c, w_prod)
    scores = self.score(self.mlp.layers[1:](hidden)).squeeze(-1)
    weights = torch.zeros(mask.shape, dtype=history.dtype, device=history.device).masked_scatter(mask, scores)
    if self.softmax:
        weights = weights.masked_fill(~mask, torch.finfo(weights.dtype).min).softmax(dim=1) * mask
    return weights


def interest_before(self: DIN, embeddings: Embeddings) -> torch.Tensor:
    candidate = torch.cat([embeddings.pooled[c] for c in self.candidates], dim=-1)
    history = torch.cat([embeddings.sequences[h] for h in self.history], dim=-1)
    mask = torch.stack([embeddings.masks[h] for h in self.history]).all(0)
    if self.attention is None:
        return masked_sum(history, mask)
    weights = self.attention(history, candidate, mask)
    return torch.einsum("bl,bld->bd", weights, history)


def as_before(net: RankingModel) -> RankingModel:
    """A copy of ``net`` (same weights) whose DIN runs the code before."""
    old = copy.deepcopy(net)
    for module in old.modules():
        if isinstance(module, Dice):
            module.forward = types.MethodType(dice_before, module)
        elif isinstance(module, LocalActivationUnit):
            module.forward = types.MethodType(attention_before, module)
        elif isinstance(module, DIN):
            module.interest = types.MethodType(interest_before, module)
    return old


# ---- measurement --------------------------------------------------------------------------------
def timed(run: Callable[[], object]) -> tuple[float, float]:
    """Seconds of ``run()``: wall clock and this thread's CPU time."""
    wall, cpu = time.perf_counter(), time.thread_time()
    run()
    return time.perf_counter() - wall, time.thread_time() - cpu


def top_ops(run: Callable[[], object], count: int = 8) -> dict:
    """The ``count`` ops of most self CPU time in one profiled ``run()``, and Dice's share of it
    (the fused ``_Dice`` forward and backward; the code before has no such op: 0)."""
    with profile() as prof:
        run()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    dice = sum(e.cpu_time_total for e in events if e.key in ("_Dice", "_DiceBackward"))
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:count]
    return {
        "total_ms": round(total / 1e3, 2),
        "dice_share": round(dice / total, 3),
        "ops": [{"op": e.key, "self_ms": round(e.self_cpu_time_total / 1e3, 2), "calls": e.count} for e in top],
    }


def train_step(net: RankingModel, optimizer: torch.optim.Optimizer, batch: Batch) -> float:
    loss, _ = net.loss(batch)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def compare(runs: dict[str, Callable[[], object]], rounds: int) -> dict:
    """Both variants ``rounds`` times, alternating which goes first; per-round ratios before / now."""
    seconds: dict[str, dict[str, list[float]]] = {v: {"wall": [], "cpu": []} for v in VARIANTS}
    for variant in VARIANTS:  # warm-up
        runs[variant]()
    for r in range(rounds):
        for variant in VARIANTS if r % 2 == 0 else VARIANTS[::-1]:
            wall, cpu = timed(runs[variant])
            seconds[variant]["wall"].append(wall)
            seconds[variant]["cpu"].append(cpu)
    ratios = {
        clock: [b / n for b, n in zip(seconds["before"][clock], seconds["now"][clock])] for clock in ("wall", "cpu")
    }
    return {
        "seconds": seconds,
        "ratio_per_round": ratios,
        "speedup_median": {clock: statistics.median(values) for clock, values in ratios.items()},
    }


def build(data: Path, seed: int) -> tuple[Pipeline, RankingModel]:
    torch.manual_seed(seed)
    schema = ctr_schema()
    pipeline = Pipeline(schema).fit(data)
    spec = {"name": "din"}
    layout = layout_for_model({"name": "per_feature"}, spec)
    tables = build_tables(layout, schema, pipeline.num_embeddings, TableOptimizer("rowwise_adagrad", lr=0.05))
    model = build_model(spec, tables.shapes(len(schema.dense_features)), schema)
    return pipeline, RankingModel(tables, model)


def forward_section(pipeline: Pipeline, nets: dict[str, RankingModel], data: Path, args: argparse.Namespace) -> dict:
    batches = list(pipeline.batches(data, batch_size=args.forward_batch))[: args.forward_batches]
    rows = sum(b.labels.shape[0] for b in batches)
    for net in nets.values():
        net.eval()

    def run(net: RankingModel) -> Callable[[], object]:
        return torch.no_grad()(lambda: [net(b) for b in batches])

    runs = {v: run(nets[v]) for v in VARIANTS}
    with torch.no_grad():
        diff = max(float((nets["before"](b) - nets["now"](b)).abs().max()) for b in batches)
    out = compare(runs, args.rounds)
    out.update(
        batch=args.forward_batch, rows=rows, max_abs_logit_diff=diff,
        rows_per_s={v: {c: rows / statistics.median(s[c]) for c in s} for v, s in out["seconds"].items()},
        top_ops={v: top_ops(lambda v=v: torch.no_grad()(lambda: nets[v](batches[0]))()) for v in VARIANTS},
    )  # fmt: skip
    return out


def training_section(pipeline: Pipeline, nets: dict[str, RankingModel], data: Path, batch: int, args: argparse.Namespace) -> dict:
    batches = list(pipeline.batches(data, batch_size=batch, shuffle=True, seed=0))[: args.steps]
    optimizers = {}
    for v in VARIANTS:
        nets[v].train()
        groups = nets[v].dense_param_groups(1e-3, 0.0)
        optimizers[v] = torch.optim.Adam(groups) if v == "before" else dense_optimizer("adam", groups)
    losses: dict[str, list[float]] = {v: [] for v in VARIANTS}

    def run(v: str) -> Callable[[], object]:
        return lambda: losses[v].extend(train_step(nets[v], optimizers[v], b) for b in batches)

    out = compare({v: run(v) for v in VARIANTS}, args.rounds)
    steps = len(batches)
    with torch.no_grad():  # the model alone: forward + backward on fixed embeddings (leaves, strides kept)
        embeddings = [nets["now"].tables(b.sparse) for b in batches]
    leaves = [
        Embeddings(pooled={k: t.detach().requires_grad_() for k, t in e.pooled.items()},
                   sequences={k: t.detach().requires_grad_() for k, t in e.sequences.items()}, masks=e.masks)
        for e in embeddings
    ]  # fmt: skip

    def model_only(v: str) -> Callable[[], object]:
        loss = lambda e, b: F.binary_cross_entropy_with_logits(nets[v].model(e, b.dense), b.labels)  # noqa: E731
        return lambda: [loss(e, b).backward() for e, b in zip(leaves, batches)]

    out.update(
        model_only=compare({v: model_only(v) for v in VARIANTS}, args.rounds),
        batch=batch, steps_per_round=steps,
        step_ms={v: {c: statistics.median(s[c]) / steps * 1e3 for c in s} for v, s in out["seconds"].items()},
        first_losses={v: losses[v][:steps] for v in VARIANTS},
        top_ops={v: top_ops(lambda v=v: train_step(nets[v], optimizers[v], batches[0])) for v in VARIANTS},
    )  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=60_000, help="synthetic CTR rows")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--forward-batch", type=int, default=8192)
    parser.add_argument("--forward-batches", type=int, default=4)
    parser.add_argument("--train-batches", default="512,2048", help="comma-separated training batch sizes")
    parser.add_argument("--steps", type=int, default=4, help="training steps per variant and round")
    parser.add_argument("--out", type=Path, default=RESULTS / "din_speed.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "ctr"
        write_ctr(data, rows=args.rows, seed=0, progress=False)
        pipeline, net = build(data, seed=0)
        nets = {"now": net, "before": as_before(net)}
        result = {
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "forward": forward_section(pipeline, nets, data, args),
            "training": {},
        }
        for batch in [int(b) for b in args.train_batches.split(",") if b]:
            pipeline, net = build(data, seed=0)  # fresh weights and table optimizer state per batch size
            result["training"][str(batch)] = training_section(pipeline, {"now": net, "before": as_before(net)}, data, batch, args)
    result["machine"] = {
        "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "versions": versions(),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_json = args.out.with_name(f".{args.out.name}.tmp")
    tmp_json.write_text(json.dumps(result, indent=2) + "\n")
    tmp_json.rename(args.out)
    plot(result, args.out.with_suffix(".png"))
    fwd = result["forward"]
    line = [f"forward (batch {fwd['batch']}): {fwd['rows_per_s']['before']['wall']:,.0f} -> {fwd['rows_per_s']['now']['wall']:,.0f} rows/s, "
            f"{fwd['speedup_median']['wall']:.2f}x wall, {fwd['speedup_median']['cpu']:.2f}x CPU"]  # fmt: skip
    for batch, t in result["training"].items():
        line.append(f"train step (batch {batch}): {t['step_ms']['before']['wall']:.1f} -> {t['step_ms']['now']['wall']:.1f} ms, "
                    f"{t['speedup_median']['wall']:.2f}x wall, {t['speedup_median']['cpu']:.2f}x CPU, "
                    f"DIN alone {t['model_only']['speedup_median']['cpu']:.2f}x CPU")  # fmt: skip
    print("; ".join(line) + f" (median of {args.rounds} interleaved rounds, load {result['machine']['load_average_before_after']})")
    return result


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sections = [("forward", result["forward"])]
    for b, t in result["training"].items():
        sections += [(f"train step {b}", t), (f"DIN fwd+bwd {b}", t["model_only"])]
    fig, ax = plt.subplots(figsize=(9, 3.8))
    width = 0.38
    for i, clock in enumerate(("wall", "cpu")):
        x = [j + (i - 0.5) * width for j in range(len(sections))]
        bars = ax.bar(x, [s["speedup_median"][clock] for _, s in sections], width, label=f"{clock} clock")
        ax.bar_label(bars, fmt="%.2fx", fontsize=8)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(sections)), [name for name, _ in sections])
    ax.set(ylabel="speed-up, before / now (median)", title="DIN on CPU, 1 thread: before vs now, interleaved")
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.rename(path)


if __name__ == "__main__":
    main()

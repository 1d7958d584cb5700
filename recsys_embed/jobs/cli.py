"""``recsys-embed``: synth, demo, train, evaluate.

Bad input ends with one line ``recsys-embed: error: ...`` on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recsys-embed", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch intra-op threads (default 1: on small shared CPUs more threads cost more than they give)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="write synthetic data").add_subparsers(dest="kind", required=True)
    ctr = synth.add_parser("ctr", help="CTR impressions with a known click model and behaviour histories")
    ctr.add_argument("--rows", type=int, required=True)
    ctr.add_argument("--out", required=True)
    ctr.add_argument("--seed", type=int, default=0)
    ctr.add_argument("--row-group-size", type=int, default=100_000)
    ctr.add_argument("--overwrite", action="store_true")
    seq = synth.add_parser("seq", help="user item sequences with timestamps (for BERT4Rec)")
    seq.add_argument("--users", type=int, required=True)
    seq.add_argument("--out", required=True)
    seq.add_argument("--seed", type=int, default=0)
    seq.add_argument("--overwrite", action="store_true")

    demo = sub.add_parser("demo", help="synthetic data -> trained, evaluated, saved model")
    demo.add_argument("--rows", type=int, default=1_000_000)
    demo.add_argument("--data-dir", default="data")
    demo.add_argument("--run-dir", default="runs/demo")
    demo.add_argument("--model", default="din", choices=["mlp", "din", "autoint"])
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--batch-size", type=int, default=2048)

    train = sub.add_parser("train", help="train from a run config (YAML)")
    train.add_argument("--config", required=True)

    evaluate = sub.add_parser("evaluate", help="evaluate a saved model on a dataset")
    evaluate.add_argument("--model", required=True, help="artifact directory written by train/demo")
    evaluate.add_argument("--data", required=True, help="Parquet/CSV file, directory or glob")
    evaluate.add_argument("--batch-size", type=int, default=4096)
    return parser


def _run(args: argparse.Namespace) -> None:
    # heavy imports only once arguments parsed, so --help and errors are instant; synth never imports torch
    if args.command == "synth":
        if args.kind == "ctr":
            from recsys_embed.pipelines.synthetic.ctr import write_ctr

            summary = write_ctr(args.out, rows=args.rows, seed=args.seed, row_group_size=args.row_group_size, overwrite=args.overwrite)
            print(f"wrote {summary.rows:,} rows ({summary.users:,} users, {summary.items:,} items, "
                  f"positive rate {summary.positive_rate:.3f}, oracle AUC {summary.oracle_auc:.4f}) to {summary.path}")
        else:
            from recsys_embed.pipelines.synthetic.seq import write_sequences

            summary = write_sequences(args.out, users=args.users, seed=args.seed, overwrite=args.overwrite)
            print(f"wrote {summary.rows:,} interactions of {summary.users:,} users to {summary.path}")
        return
    import torch

    from recsys_embed.jobs import ctr as jobs

    torch.set_num_threads(max(1, args.threads))

    if args.command == "demo":
        report = jobs.demo(jobs.DemoConfig(rows=args.rows, data_dir=args.data_dir, run_dir=args.run_dir, model=args.model, seed=args.seed,
                                       batch_size=args.batch_size))
        print(report.summary())
    elif args.command == "train":
        from recsys_embed.jobs.config import load_run_config, read_yaml

        data = read_yaml(args.config)
        if isinstance(data, dict) and data.get("task") == "sequential":
            from recsys_embed.jobs.sequential import train_sequential_from_config

            print(train_sequential_from_config(data, args.config, base_dir=Path(args.config).parent).summary())
        else:
            print(jobs.train(load_run_config(args.config)).summary())
    elif args.command == "evaluate":
        metrics = jobs.evaluate(args.model, args.data, batch_size=args.batch_size)
        print(json.dumps(metrics))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # torch warns once per process that torchrec calls is_fx_tracing(); nothing for our users to act on
    logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)
    try:
        _run(args)
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError, KeyError, IndexError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"recsys-embed: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())

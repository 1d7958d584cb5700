"""``recsys-embed``: synth, demo, train, evaluate, score, recommend, compression, quantize, binarize.

Bad input (a ``ValueError``, our :mod:`recsys_embed.errors` among them) and a file that cannot
be read or written (an ``OSError``: missing, no permission, disk full) end with one line
``recsys-embed: error: ...`` on stderr and exit code 2. A batch job (score, recommend) whose
files partly failed writes the others, prints the summary, one error line per failed file,
and exits with code 1. Ctrl-C ends with one line saying what can be resumed and how, and exit
code 130. Warnings about the input (:class:`~recsys_embed.errors.InputWarning`: a vocabulary
that sends most values to OOV, AUC undefined on one class) print as ``recsys-embed: warning: ...``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import warnings
from pathlib import Path

from recsys_embed.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, InputWarning

EXIT_FILES_FAILED = 1


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
    seq = synth.add_parser("seq", help="user item sequences with timestamps (for SASRec and BERT4Rec)")
    seq.add_argument("--users", type=int, required=True)
    seq.add_argument("--out", required=True)
    seq.add_argument("--seed", type=int, default=0)
    seq.add_argument("--overwrite", action="store_true")

    demo = sub.add_parser("demo", help="synthetic data -> trained, evaluated, saved model")
    demo.add_argument("--rows", type=int, default=1_000_000)
    demo.add_argument("--data-dir", default="data")
    demo.add_argument("--run-dir", default="runs/demo")
    demo.add_argument("--model", default="din", choices=["mlp", "din", "autoint", "fm", "deepfm", "dcn_v2"])
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--batch-size", type=int, default=2048)

    train = sub.add_parser("train", help="train from a run config (YAML)")
    train.add_argument("--config", required=True)
    earlier = train.add_mutually_exclusive_group()
    earlier.add_argument("--resume", action="store_true", help="continue the run in run_dir from its last checkpoint")
    earlier.add_argument("--overwrite", action="store_true", help="delete an earlier run in run_dir (checkpoint and outputs) first")

    evaluate = sub.add_parser("evaluate", help="evaluate a saved model on a dataset")
    evaluate.add_argument("--model", required=True, help="artifact directory written by train/demo")
    evaluate.add_argument("--data", required=True, help="Parquet/CSV file, directory or glob")
    evaluate.add_argument("--batch-size", type=int, default=4096)

    score = sub.add_parser("score", help="score Parquet files with a saved CTR model, one output file per input")
    score.add_argument("--model", required=True, help="artifact directory written by train/demo")
    score.add_argument("--keep", nargs="+", default=[], metavar="COL", help="input columns copied to the output beside 'score'")
    score.add_argument("--batch-size", type=int, default=8192, help="rows per forward pass")
    recommend = sub.add_parser("recommend", help="top-k items per user from a saved SASRec or BERT4Rec, one output file per events file")
    recommend.add_argument("--model", required=True, help="artifact directory written by the sequential job (RUN_DIR/model)")
    recommend.add_argument("--k", type=int, default=10)
    recommend.add_argument("--exclude-history", action="store_true", help="never recommend an item of the user's history")
    recommend.add_argument("--user-column", default="user_id")
    recommend.add_argument("--item-column", default="item_id")
    recommend.add_argument("--time-column", default="timestamp")
    recommend.add_argument("--batch-size", type=int, default=4096, help="users per output batch")
    sub.add_parser("compression", help="list the installed compression methods (built-in and plugins), one line each")
    quantize = sub.add_parser("quantize", help="quantize a saved model's table rows after training (inference only)")
    quantize.add_argument("--model", required=True, help="artifact directory written by train/demo")
    quantize.add_argument("--bits", type=int, required=True, help="bits per stored value: 16 (fp16), 8, 4 or 2 (int, row-wise)")
    quantize.add_argument("--output", required=True, help="artifact directory to write")
    binarize = sub.add_parser("binarize", help="binary codes (BEBR) of a saved model's table rows, for Hamming retrieval")
    binarize.add_argument("--model", required=True, help="artifact directory (a sequential model's: its item table by default)")
    binarize.add_argument("--output", required=True, help="artifact directory to write (codes + binarizer)")
    binarize.add_argument("--group", default=None, help="the table group to binarize (required for a CTR model)")
    binarize.add_argument("--steps", type=int, default=1, help="residual binarization steps T")
    binarize.add_argument("--bits", type=int, default=None, help="bits per step m, a multiple of 8 (default: the table's dim)")
    binarize.add_argument("--iterations", type=int, default=300, help="Adam steps of the binarizer")
    binarize.add_argument("--seed", type=int, default=0)
    for batch in (score, recommend):
        batch.add_argument("--input", required=True, help="Parquet file, directory or glob")
        batch.add_argument("--output", required=True, help="output directory (one file per input file and _manifest.json)")
        batch.add_argument("--resume", action="store_true", help="skip inputs already done by the run that wrote --output")
        batch.add_argument("--engine", choices=["local", "ray"], default="local")
        batch.add_argument("--ray-address", default=None, help="existing Ray cluster ('auto', 'ray://head:10001'); "
                           "default: a local instance in this process")  # fmt: skip
        batch.add_argument("--ray-cpus", type=int, default=None, help="CPUs of the local Ray instance (default: all)")
        batch.add_argument("--actors", type=int, default=1, help="Ray scoring actors")
        batch.add_argument("--actor-cpus", type=int, default=1, help="CPUs (torch threads) per Ray actor")
    return parser


def _batch_job(args: argparse.Namespace) -> int:
    """``score`` / ``recommend``: run the job on the chosen engine, print the summary."""
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.engine == "ray":
        from recsys_embed.jobs.score_ray import RayOptions, run_ray

        options = RayOptions(address=args.ray_address, num_cpus=args.ray_cpus, actors=args.actors, actor_cpus=args.actor_cpus)
        options.check_local()  # before the model loads
    if args.command == "score":
        from recsys_embed.jobs.score import ScoreJob

        job = ScoreJob.from_artifact(args.model, keep=args.keep)
    else:
        from recsys_embed.jobs.recommend import RecommendJob

        job = RecommendJob.from_artifact(args.model, k=args.k, exclude_history=args.exclude_history,
                                         user=args.user_column, item=args.item_column, timestamp=args.time_column)  # fmt: skip
    if args.engine == "ray":
        report = run_ray(job, args.input, args.output, options, resume=args.resume, batch_rows=args.batch_size)
    else:
        from recsys_embed.jobs.score_files import run_local

        report = run_local(job, args.input, args.output, resume=args.resume, batch_rows=args.batch_size)
    print(report.summary())
    for failed in report.failed:
        print(f"recsys-embed: error: {failed.error}", file=sys.stderr)
    return EXIT_FILES_FAILED if report.failed else 0


def _run(args: argparse.Namespace) -> int:
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
        return 0
    import torch

    from recsys_embed.jobs import ctr as jobs

    torch.set_num_threads(max(1, args.threads))
    if args.command in ("score", "recommend"):
        return _batch_job(args)
    if args.command == "compression":
        from recsys_embed.compression import describe_methods

        rows = describe_methods()
        width = max(len(name) for name, _ in rows)
        print("\n".join(f"{name:<{width}}  {text}" for name, text in rows))
        return 0
    if args.command == "quantize":
        from recsys_embed.jobs.quantize import quantize_model

        print(quantize_model(args.model, args.output, args.bits).summary())
        return 0

    if args.command == "binarize":
        from recsys_embed.jobs.binarize import binarize_model

        codes = binarize_model(args.model, args.output, args.group, steps=args.steps, bits=args.bits, iterations=args.iterations, seed=args.seed)
        rows, row_bytes = codes.codes.shape
        print(f"binarized {rows:,} rows of dim {codes.binarizer.dim} into {codes.bits_per_item} bits each ({row_bytes} bytes, "
              f"{row_bytes / (4 * codes.binarizer.dim):.3g} of fp32); saved to {args.output}")
        return 0
    if args.command == "demo":
        report = jobs.demo(jobs.DemoConfig(rows=args.rows, data_dir=args.data_dir, run_dir=args.run_dir, model=args.model, seed=args.seed,
                                       batch_size=args.batch_size))
        print(report.summary())
    elif args.command == "train":
        from recsys_embed.jobs.config import load_run_config, read_yaml

        data = read_yaml(args.config)
        if isinstance(data, dict) and data.get("task") == "sequential":
            from recsys_embed.jobs.sequential import train_sequential_from_config

            report = train_sequential_from_config(data, args.config, base_dir=Path(args.config).parent,
                                                  resume=args.resume, overwrite=args.overwrite)  # fmt: skip
            print(report.summary())
        else:
            print(jobs.train(load_run_config(args.config), resume=args.resume, overwrite=args.overwrite).summary())
    elif args.command == "evaluate":
        metrics = jobs.evaluate(args.model, args.data, batch_size=args.batch_size)
        print(json.dumps({k: v if math.isfinite(v) else None for k, v in metrics.items()}))  # NaN is no JSON
    return 0


def _interrupted(args: argparse.Namespace) -> str:
    """The line printed on Ctrl-C: what was kept and how to go on."""
    if args.command in ("score", "recommend"):
        return f"interrupted; the files finished so far are in {args.output}: rerun with --resume to skip them"
    run_dir = Path(args.run_dir) if args.command == "demo" else None
    if args.command == "train":
        try:
            from recsys_embed.jobs.config import read_yaml

            run_dir = Path(read_yaml(args.config).get("run_dir", "runs/train"))
        except (ValueError, AttributeError):
            run_dir = None
    if run_dir is not None and (run_dir / "checkpoint").exists():
        how = f"recsys-embed train --config {args.config} --resume" if args.command == "train" else "train from a run config with --resume"
        return f"interrupted; the last checkpoint is {run_dir / 'checkpoint'}: resume with `{how}`"
    return "interrupted before the first checkpoint; nothing to resume"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # torch warns once per process that torchrec calls is_fx_tracing(); nothing for our users to act on
    logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default", InputWarning)
            shown = warnings.showwarning

            def show(message, category, *rest):  # type: ignore[no-untyped-def]
                if issubclass(category, InputWarning):
                    print(f"recsys-embed: warning: {message}", file=sys.stderr)
                else:
                    shown(message, category, *rest)

            warnings.showwarning = show
            return _run(args)
    except KeyboardInterrupt:
        print(f"recsys-embed: {_interrupted(args)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, OSError, KeyError, IndexError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"recsys-embed: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())

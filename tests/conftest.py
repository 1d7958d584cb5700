"""Fixtures shared by the test files, and the hypothesis profiles of tests/test_fuzz.py: ``ci`` (the
default, a few seconds per test) and ``long`` for a deeper local run:
``pytest tests/test_fuzz.py --hypothesis-profile long``."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, settings
import torch  # first: this process keeps torch's default intra-op threads, read when it loads

# The subprocesses the tests start (CLI, examples, benchmarks, kill/resume scripts) run one
# intra-op thread unless told otherwise: on a small shared machine the tiny models of the tests
# spend more on thread hand-offs than they gain (examples/train_din.py on 20,000 rows: 19 CPU-s
# with one thread, 40 with two, measured on the loaded 2-core development machine).
os.environ.setdefault("OMP_NUM_THREADS", "1")

settings.register_profile("ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("long", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.load_profile("ci")


@pytest.fixture
def cli_main(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[..., subprocess.CompletedProcess]]:
    """``recsys-embed ARGS`` through ``cli.main`` in this process, as ``cli_main(*ARGS)``: its exit
    code, stdout and stderr. For tests of bad input and of a command's variants, which need no
    new process importing torch; each command's entry point keeps a subprocess test. The torch
    thread count that ``main`` sets is given back afterwards."""
    from recsys_embed.jobs.cli import main

    def call(*args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()  # drop what came before
        try:
            code = main(list(args))
        except SystemExit as exit_:  # argparse's errors
            code = exit_.code
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["recsys-embed", *args], code, out, err)

    threads = torch.get_num_threads()
    yield call
    torch.set_num_threads(threads)

"""Fixtures shared by the test files."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator

import pytest


@pytest.fixture
def cli_main(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[..., subprocess.CompletedProcess]]:
    """``recsys-embed ARGS`` through ``cli.main`` in this process, as ``cli_main(*ARGS)``: its exit
    code, stdout and stderr. For tests of bad input and of a command's variants, which need no
    new process importing torch; each command's entry point keeps a subprocess test. The torch
    thread count that ``main`` sets is given back afterwards."""
    import torch

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

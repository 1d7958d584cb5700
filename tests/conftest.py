"""Fixtures shared by the test files."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest


@pytest.fixture
def cli_main(capsys: pytest.CaptureFixture[str]) -> Callable[..., subprocess.CompletedProcess]:
    """``recsys-embed ARGS`` through ``cli.main`` in this process, as ``cli_main(*ARGS)``: its exit
    code, stdout and stderr. For tests of bad input, which need no new process importing torch;
    the real entry point keeps its subprocess tests."""
    from recsys_embed.jobs.cli import main

    def call(*args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()  # drop what came before
        try:
            code = main(list(args))
        except SystemExit as exit_:  # argparse's errors
            code = exit_.code
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["recsys-embed", *args], code, out, err)

    return call

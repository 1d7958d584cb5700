"""Every docstring example of the table layouts, table accounting, imports, artifacts and the kernel loader runs."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "recsys_embed.tables.jagged",
    "recsys_embed.tables.per_feature",
    "recsys_embed.tables.multiplexed",
    "recsys_embed.tables.inputs",
    "recsys_embed.tables.accounting",
    "recsys_embed.tables.imports",
    "recsys_embed.artifacts",
    "recsys_embed.kernels",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0

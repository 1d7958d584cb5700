"""Every docstring example of recsys_embed.models runs and shows what it says."""

import doctest
import importlib
import pkgutil

import pytest

import recsys_embed.models

MODULES = ["recsys_embed.models"] + [
    info.name for info in pkgutil.walk_packages(recsys_embed.models.__path__, "recsys_embed.models.")
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_every_model_module_has_examples() -> None:
    with_examples = {name for name in MODULES if doctest.testmod(importlib.import_module(name)).attempted}
    expected = {
        "recsys_embed.models.din",
        "recsys_embed.models.autoint",
        "recsys_embed.models.fm",
        "recsys_embed.models.dcn",
        "recsys_embed.models.mlp",
        "recsys_embed.models.bert4rec",
        "recsys_embed.models.popularity",
        "recsys_embed.models.next_item_ranking",
        "recsys_embed.models.regularization",
        "recsys_embed.models.layers.activation",
        "recsys_embed.models.layers.attention",
        "recsys_embed.models.layers.cross",
        "recsys_embed.models.layers.interaction",
        "recsys_embed.models.layers.field_attention",
        "recsys_embed.models.layers.feedforward",
        "recsys_embed.models.layers.pooling",
    }
    assert expected <= with_examples

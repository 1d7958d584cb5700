"""Import from nn.Embedding / nn.EmbeddingBag / tensors / torchrec EBC state, export to an EBC."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.tables.jagged import kjt_from_ids
from recsys_embed.tables.imports import from_ebc_state_dict, from_embeddings, to_embedding_bag_collection

SCHEMA = Schema([
    FeatureSpec("user", embedding_dim=8),
    FeatureSpec("item", embedding_dim=4),
    FeatureSpec("query_item", table="item", embedding_dim=4),
    FeatureSpec("city", embedding_dim=4),
])


def ids() -> dict[str, torch.Tensor]:
    return {
        "user": torch.tensor([[1, -1], [6, 7]]),
        "item": torch.tensor([[2, -1], [19, -1]]),
        "query_item": torch.tensor([[19, -1], [-1, -1]]),
        "city": torch.tensor([[0, -1], [4, -1]]),
    }


def test_from_embeddings_takes_modules_and_tensors() -> None:
    user, item, city = nn.Embedding(8, 8), nn.EmbeddingBag(20, 4), torch.randn(5, 4)
    tables = from_embeddings(SCHEMA, {"user": user, "item": item, "city": city})
    out = tables(kjt_from_ids(ids(), padding_id=-1))
    assert tables.rows == {"user": 8, "item": 20, "city": 5}
    torch.testing.assert_close(out.pooled["user"][1], user.weight[6] + user.weight[7], rtol=0, atol=1e-6)
    torch.testing.assert_close(out.pooled["item"][1], item.weight[19])
    torch.testing.assert_close(out.pooled["query_item"][0], item.weight[19])
    assert torch.equal(out.pooled["query_item"][1], torch.zeros(4))
    torch.testing.assert_close(out.pooled["city"][1], city[4])


def test_ebc_state_dict_in_and_ebc_out_give_the_same_outputs() -> None:
    configs = [
        EmbeddingBagConfig(num_embeddings=8, embedding_dim=8, name="user", feature_names=["user"]),
        EmbeddingBagConfig(num_embeddings=20, embedding_dim=4, name="item", feature_names=["item", "query_item"]),
        EmbeddingBagConfig(num_embeddings=5, embedding_dim=4, name="city", feature_names=["city"]),
    ]
    source = EmbeddingBagCollection(tables=configs)
    kjt = kjt_from_ids(ids(), padding_id=-1)
    tables = from_ebc_state_dict(SCHEMA, source.state_dict())
    exported = to_embedding_bag_collection(tables)
    expected, ours, back = source(kjt), tables(kjt), exported(kjt)
    for feature in ("user", "item", "query_item", "city"):
        torch.testing.assert_close(ours.pooled[feature], expected[feature], rtol=0, atol=1e-6)
        torch.testing.assert_close(back[feature], expected[feature], rtol=0, atol=1e-6)
    for key, value in source.state_dict().items():
        assert torch.equal(exported.state_dict()[key], value)


def test_import_errors_name_the_table() -> None:
    good = {"user": torch.randn(8, 8), "item": torch.randn(20, 4), "city": torch.randn(5, 4)}
    with pytest.raises(ValueError, match=r"missing \['city'\]"):
        from_embeddings(SCHEMA, {k: v for k, v in good.items() if k != "city"})
    with pytest.raises(ValueError, match=r"table 'item'.*\[rows, 4\]"):
        from_embeddings(SCHEMA, {**good, "item": torch.randn(20, 6)})
    with pytest.raises(TypeError, match="table 'city'"):
        from_embeddings(SCHEMA, {**good, "city": [[0.0] * 4]})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="embedding_bags.<table>.weight"):
        from_ebc_state_dict(SCHEMA, {"user.weight": torch.randn(8, 8)})


def test_sequences_cannot_become_an_ebc() -> None:
    schema = Schema([FeatureSpec("item", embedding_dim=4), FeatureSpec("hist", kind="sequence", table="item", max_len=5, embedding_dim=4)])
    tables = from_embeddings(schema, {"item": torch.randn(10, 4)})
    with pytest.raises(ValueError, match=r"sequence features \['hist'\]"):
        to_embedding_bag_collection(tables)

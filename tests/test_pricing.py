"""Prices per model (taskloom.agents.pricing): numbers from the table, overrides, clear errors."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from taskloom.agents.errors import (
    ConfigurationError,
    PriceTableError,
    UnknownModelPriceError,
    UserError,
)
from taskloom.agents.pricing import BUILTIN_PRICES, ModelPrice, PriceTable, cost


def test_costs_follow_the_table() -> None:
    table = PriceTable.builtin()
    assert table.cost("openai:gpt-4o", 1_000_000, 1_000_000) == Decimal("12.50")
    assert table.cost("openai:gpt-4o-mini", 10_000, 2_000) == Decimal("0.0027")
    assert table.cost("anthropic:claude-sonnet-4-5", 1_200, 300) == Decimal("0.0081")
    assert cost("openai:gpt-4.1-mini", 1_000_000, 1_000_000) == Decimal("2.00")
    assert isinstance(table.cost("openai:gpt-4o", 1, 1), Decimal)
    assert table.cost("openai:gpt-4o", 0, 0) == 0


def test_cached_input_tokens_cost_the_cached_price() -> None:
    table = PriceTable.builtin()
    # 10,000 input of which 8,000 from the cache, 1,000 output, at $3 / $0.30 / $15
    usd = table.cost("anthropic:claude-sonnet-4-5", 10_000, 1_000, cached_input_tokens=8_000)
    assert usd == Decimal("0.0234")
    no_cache_price = ModelPrice(Decimal(1), Decimal(2))
    assert no_cache_price.cost(1_000_000, 0, 500_000) == Decimal(1)  # cached at input price
    with pytest.raises(UserError, match="cannot exceed"):
        table.cost("openai:gpt-4o", 10, 0, cached_input_tokens=11)
    with pytest.raises(UserError, match="output_tokens"):
        table.cost("openai:gpt-4o", 10, -1)


def test_snapshot_and_bare_names_find_their_model() -> None:
    table = PriceTable.builtin()
    sonnet = BUILTIN_PRICES["anthropic:claude-sonnet-4-5"]
    assert table.price("anthropic:claude-sonnet-4-5-20250929") == sonnet
    assert table.price("claude-sonnet-4-5") == sonnet
    assert table.price("anthropic:claude-3-7-sonnet-latest") == table["anthropic:claude-3-7-sonnet"]
    assert table.price("openai:gpt-4o-2024-08-06") == table["openai:gpt-4o"]
    assert table.price("gpt-4o-mini-2024-07-18") == table["openai:gpt-4o-mini"]


def test_an_unknown_model_says_how_to_add_it() -> None:
    with pytest.raises(UnknownModelPriceError) as caught:
        PriceTable.builtin().cost("openai:gpt-4o-mnii", 10, 10)
    message = str(caught.value)
    assert "'openai:gpt-4o-mnii'" in message
    assert "with_overrides" in message and "'input'" in message and "'output'" in message
    assert "did you mean 'openai:gpt-4o-mini'" in message.lower()
    assert isinstance(caught.value, ConfigurationError) and caught.value.code == (
        "unknown_model_price"
    )
    with pytest.raises(UnknownModelPriceError, match="local:llama"):
        cost("local:llama", 1, 1)


def test_overrides_add_replace_and_patch() -> None:
    table = PriceTable.builtin().with_overrides(
        {
            "local:llama": {"input": 0, "output": 0},
            "openai:gpt-4o": {"output": "12"},  # patch one field, keep the others
            "openai:gpt-4.1": ModelPrice(Decimal(1), Decimal(2)),
            "vllm:*": {"input": "0.01", "output": "0.02"},
        }
    )
    assert table.cost("local:llama", 10**6, 10**6) == 0
    assert table["openai:gpt-4o"] == ModelPrice(Decimal("2.50"), Decimal(12), Decimal("1.25"))
    assert table.cost("openai:gpt-4.1", 10**6, 10**6) == 3
    assert table.cost("vllm:anything", 10**6, 10**6) == Decimal("0.03")
    assert PriceTable.builtin()["openai:gpt-4o"].output == 10  # the original is unchanged
    everything = PriceTable({}).with_overrides({"*": {"input": 1, "output": 1}})
    assert everything.cost("x:y", 10**6, 0) == 1


def test_a_partial_override_of_an_unknown_model_is_an_error() -> None:
    with pytest.raises(UnknownModelPriceError) as caught:
        PriceTable.builtin().with_overrides({"openai:gpt-4o-mnii": {"cached_input": 0.1}})
    message = str(caught.value)
    assert "'openai:gpt-4o-mnii' is not in the price table" in message
    assert "'input' and 'output'" in message and "gives only cached_input" in message
    assert "did you mean 'openai:gpt-4o-mini'" in message


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ({"input": -1, "output": 1}, "input is negative"),
        ({"input": 1, "output": "-0.5"}, "output is negative"),
        ({"input": "NaN", "output": 1}, "finite"),
        ({"input": "cheap", "output": 1}, "number of USD"),
        ({"input": True, "output": 1}, "number of USD"),
        ({"inputs": 1, "output": 1}, "unknown field"),
    ],
)
def test_bad_prices_are_clear_errors(entry: dict[str, object], match: str) -> None:
    with pytest.raises(PriceTableError, match=match) as caught:
        PriceTable.builtin().with_overrides({"my:model": entry})
    assert "'my:model'" in str(caught.value)


def test_bad_tables_are_clear_errors() -> None:
    with pytest.raises(PriceTableError, match="must be a table"):
        PriceTable.builtin().with_overrides({"my:model": 3})  # type: ignore[dict-item]
    with pytest.raises(PriceTableError, match="negative"):
        ModelPrice(Decimal(-1), Decimal(1))
    with pytest.raises(PriceTableError, match="must be a ModelPrice"):
        PriceTable({"my:model": {"input": 1}})  # type: ignore[dict-item]


def test_overrides_from_json_and_toml_files(tmp_path: Path) -> None:
    as_json = tmp_path / "prices.json"
    as_json.write_text(json.dumps({"local:qwen": {"input": 0.1, "output": 0.3}}))
    table = PriceTable.from_file(as_json)
    assert table.cost("local:qwen", 10**6, 10**6) == Decimal("0.4")
    assert "openai:gpt-4o" in table  # over the built-in table
    as_toml = tmp_path / "prices.toml"
    as_toml.write_text('["openai:gpt-4o"]\ninput = 5.0\noutput = 20.0\ncached_input = 2.5\n')
    table = PriceTable.from_file(as_toml, base=PriceTable({}))
    assert list(table) == ["openai:gpt-4o"]
    assert table.cost("openai:gpt-4o", 10**6, 10**6, cached_input_tokens=10**6) == Decimal("22.5")
    typo = tmp_path / "typo.toml"
    typo.write_text('["openai:gpt-4o-mnii"]\ncached_input = 0.1\n')
    with pytest.raises(UnknownModelPriceError, match=r"typo\.toml.*gpt-4o-mnii"):
        PriceTable.from_file(typo)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(PriceTableError, match="not valid json"):
        PriceTable.from_file(broken)
    with pytest.raises(PriceTableError, match=r"\.json or \.toml"):
        PriceTable.from_file(tmp_path / "prices.yaml")
    with pytest.raises(PriceTableError, match="cannot read"):
        PriceTable.from_file(tmp_path / "missing.json")

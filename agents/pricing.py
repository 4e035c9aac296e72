"""What a model call costs: a price table per model, in USD per million tokens.

The built-in table holds common OpenAI and Anthropic models *as published by the
providers (late 2025); prices change, so override them with your own*::

    table = PriceTable.builtin().with_overrides({
        "openai:gpt-4o": {"input": "2.50", "output": "10.00", "cached_input": "1.25"},
        "vllm:*": {"input": 0, "output": 0},            # a whole provider, for free
    })
    table = PriceTable.from_file("prices.toml")        # or .json, over the built-in table
    usd = table.cost("openai:gpt-4o", input_tokens=1_200, output_tokens=300)

**Costs are** :class:`~decimal.Decimal` **USD**, exact (no float drift when thousands of
calls are summed into a budget); ``float(usd)`` when a float is wanted.

Model names are ``provider:model`` as agents name them. A lookup tries the exact name,
then the name without a dated snapshot suffix (``-2024-08-06``, ``-20250929``) or
``-latest``, then ``provider:*``, then ``*``. A bare model name (``gpt-4o``) matches
when exactly one provider has it.

``cached_input_tokens`` are the part of ``input_tokens`` served from the provider's
prompt cache (OpenAI's ``cached_tokens``; with Anthropic, add ``cache_read_input_tokens``
to ``input_tokens`` and pass it here too); they cost ``cached_input`` instead of
``input`` (``input`` when the model has no cached price).

Files, JSON or TOML, map model names to prices::

    ["openai:gpt-4o"]                 # TOML          {"openai:gpt-4o":      # JSON
    input = 2.5                                         {"input": 2.5, "output": 10}}
    output = 10

An override entry that gives ``input`` and ``output`` adds or replaces a model; one that
gives only some fields changes a model the table already has, so a partial entry for an
unknown model (usually a typo) is an :class:`~taskloom.agents.errors.UnknownModelPriceError`.
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from taskloom.agents.errors import PriceTableError, UnknownModelPriceError, UserError

__all__ = ["BUILTIN_PRICES", "ModelPrice", "PriceTable", "cost"]

_MILLION = Decimal(1_000_000)
_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|latest)$")


def _price(value: object, field: str, where: str) -> Decimal:
    """A price as an exact, finite Decimal >= 0."""
    price: Decimal | None = None
    if isinstance(value, Decimal):
        price = value
    elif isinstance(value, float):
        price = Decimal(str(value))
    elif isinstance(value, int | str) and not isinstance(value, bool):
        try:
            price = Decimal(value)
        except InvalidOperation:
            price = None
    if price is None:
        raise PriceTableError(f"{where}: {field} must be a number of USD, not {value!r}")
    if not price.is_finite():
        raise PriceTableError(f"{where}: {field} must be finite (got {value!r})")
    if price < 0:
        raise PriceTableError(
            f"{where}: {field} is negative ({value!r}); prices are USD per million tokens >= 0"
        )
    return price


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens: ``input``, ``output`` and optionally ``cached_input``
    (``None``: cached input costs ``input``)."""

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.name == "cached_input":
                continue
            object.__setattr__(self, f.name, _price(value, f.name, "ModelPrice"))

    def cost(self, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0) -> Decimal:
        """USD for one call's tokens (``cached_input_tokens`` counted in ``input_tokens``)."""
        for name, n in (
            ("input_tokens", input_tokens),
            ("output_tokens", output_tokens),
            ("cached_input_tokens", cached_input_tokens),
        ):
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise UserError(f"{name} must be a whole number >= 0 (got {n!r})")
        if cached_input_tokens > input_tokens:
            raise UserError(
                f"cached_input_tokens ({cached_input_tokens}) are part of input_tokens "
                f"({input_tokens}) and cannot exceed them"
            )
        cached_price = self.input if self.cached_input is None else self.cached_input
        total = (
            (input_tokens - cached_input_tokens) * self.input
            + cached_input_tokens * cached_price
            + output_tokens * self.output
        )
        return total / _MILLION


def _p(input: str, output: str, cached_input: str | None = None) -> ModelPrice:
    return ModelPrice(
        Decimal(input), Decimal(output), None if cached_input is None else Decimal(cached_input)
    )


BUILTIN_PRICES: Mapping[str, ModelPrice] = {
    # OpenAI, standard tier, USD per 1M tokens: input, output, cached input.
    "openai:gpt-5": _p("1.25", "10.00", "0.125"),
    "openai:gpt-5-mini": _p("0.25", "2.00", "0.025"),
    "openai:gpt-5-nano": _p("0.05", "0.40", "0.005"),
    "openai:gpt-4.1": _p("2.00", "8.00", "0.50"),
    "openai:gpt-4.1-mini": _p("0.40", "1.60", "0.10"),
    "openai:gpt-4.1-nano": _p("0.10", "0.40", "0.025"),
    "openai:gpt-4o": _p("2.50", "10.00", "1.25"),
    "openai:gpt-4o-mini": _p("0.15", "0.60", "0.075"),
    "openai:o1": _p("15.00", "60.00", "7.50"),
    "openai:o3": _p("2.00", "8.00", "0.50"),
    "openai:o3-mini": _p("1.10", "4.40", "0.55"),
    "openai:o4-mini": _p("1.10", "4.40", "0.275"),
    # Anthropic: base input, output, cache hits (cache writes are billed as input here).
    "anthropic:claude-opus-4-5": _p("5.00", "25.00", "0.50"),
    "anthropic:claude-opus-4-1": _p("15.00", "75.00", "1.50"),
    "anthropic:claude-opus-4": _p("15.00", "75.00", "1.50"),
    "anthropic:claude-opus-4-0": _p("15.00", "75.00", "1.50"),
    "anthropic:claude-sonnet-4-5": _p("3.00", "15.00", "0.30"),
    "anthropic:claude-sonnet-4": _p("3.00", "15.00", "0.30"),
    "anthropic:claude-sonnet-4-0": _p("3.00", "15.00", "0.30"),
    "anthropic:claude-3-7-sonnet": _p("3.00", "15.00", "0.30"),
    "anthropic:claude-haiku-4-5": _p("1.00", "5.00", "0.10"),
    "anthropic:claude-3-5-haiku": _p("0.80", "4.00", "0.08"),
    "anthropic:claude-3-haiku": _p("0.25", "1.25", "0.03"),
}
"""Prices as published by OpenAI and Anthropic (late 2025); override with your own."""


_RESOLVED_KEPT = 1024  # model names whose table key a PriceTable remembers


class PriceTable(Mapping[str, ModelPrice]):
    """An immutable mapping of model name (``provider:model``, ``provider:*`` or
    ``*``) to :class:`ModelPrice`, with lookup that understands snapshot names."""

    def __init__(self, prices: Mapping[str, ModelPrice] | None = None) -> None:
        self._prices: dict[str, ModelPrice] = {}
        for model, price in (BUILTIN_PRICES if prices is None else prices).items():
            if not isinstance(price, ModelPrice):
                raise PriceTableError(
                    f"price of {model!r} must be a ModelPrice, not {type(price).__name__}"
                )
            self._prices[_name(model)] = price
        self._resolved: dict[str, str | None] = {}  # resolve() runs a regex: a few per call

    @classmethod
    def builtin(cls) -> PriceTable:
        """The built-in table (:data:`BUILTIN_PRICES`)."""
        return cls(BUILTIN_PRICES)

    @classmethod
    def from_file(cls, path: str | Path, *, base: PriceTable | None = None) -> PriceTable:
        """``base`` (default: the built-in table) with the overrides of a ``.json`` or
        ``.toml`` file applied (see :meth:`with_overrides`)."""
        p = Path(path)
        kind = p.suffix.lower()
        if kind not in (".json", ".toml"):
            raise PriceTableError(f"price file {p} must end in .json or .toml")
        try:
            text = p.read_text(encoding="utf-8")
            if kind == ".toml":
                data: Any = tomllib.loads(text, parse_float=Decimal)
            else:
                data = json.loads(text, parse_float=Decimal)
        except OSError as e:
            raise PriceTableError(f"cannot read price file {p}: {e}") from e
        except (ValueError, tomllib.TOMLDecodeError) as e:
            raise PriceTableError(f"price file {p} is not valid {kind[1:]}: {e}") from e
        if not isinstance(data, Mapping):
            raise PriceTableError(f"price file {p} must map model names to prices")
        return (base if base is not None else cls.builtin()).with_overrides(data, source=str(p))

    def with_overrides(
        self, overrides: Mapping[str, ModelPrice | Mapping[str, Any]], *, source: str = "overrides"
    ) -> PriceTable:
        """A new table with ``overrides`` applied: a :class:`ModelPrice`, or a mapping
        of ``input`` / ``output`` / ``cached_input`` (USD per million tokens, numbers or
        numeric strings; ``cached_input`` may be ``None``)."""
        prices = dict(self._prices)
        for raw_model, entry in overrides.items():
            model = _name(raw_model)
            if isinstance(entry, ModelPrice):
                prices[model] = entry
                continue
            if not isinstance(entry, Mapping):
                raise PriceTableError(
                    f"{source}: the price of {model!r} must be a table like "
                    f"{{'input': 2.5, 'output': 10}}, not {entry!r}"
                )
            prices[model] = self._merged(model, entry, prices.get(model), source)
        return PriceTable(prices)

    def price(self, model: str) -> ModelPrice:
        """The price of ``model``; :class:`~taskloom.agents.errors.UnknownModelPriceError` when
        the table has none (the message says how to add one)."""
        key = self.resolve(model)
        if key is None:
            near = difflib.get_close_matches(model, self._prices, n=3, cutoff=0.6)
            hint = f" Did you mean {', '.join(map(repr, near))}?" if near else ""
            raise UnknownModelPriceError(
                f"no price for model {model!r}.{hint} Add one, in USD per million tokens: "
                f"PriceTable.builtin().with_overrides({{{model!r}: {{'input': ..., "
                f"'output': ...}}}}), or an entry in a prices file for PriceTable.from_file; "
                f"'provider:*' or '*' prices a whole provider or everything else."
            )
        return self._prices[key]

    def cost(
        self,
        model: str,
        input_tokens: int,
        output_tokens: int,
        *,
        cached_input_tokens: int = 0,
    ) -> Decimal:
        """USD (a :class:`~decimal.Decimal`) that ``model`` charges for these tokens."""
        return self.price(model).cost(input_tokens, output_tokens, cached_input_tokens)

    def resolve(self, model: str) -> str | None:
        """The table key that prices ``model``, or ``None``."""
        try:
            return self._resolved[model]
        except KeyError:
            pass
        key = self._resolve(model)
        if len(self._resolved) < _RESOLVED_KEPT:
            self._resolved[model] = key
        return key

    def _resolve(self, model: str) -> str | None:
        name = model.strip()
        provider, _, bare = name.partition(":")
        if not bare:  # no provider given
            provider, bare = "", provider
        candidates = [name, f"{provider}:{_SNAPSHOT.sub('', bare)}" if provider else None]
        if not provider:
            undated = _SNAPSHOT.sub("", bare)
            for wanted in (bare, undated):
                hits = [k for k in self._prices if k.partition(":")[2] == wanted]
                if len(hits) == 1:
                    return hits[0]
            candidates.append(undated)
        candidates += [f"{provider}:*" if provider else None, "*"]
        for key in candidates:
            if key is not None and key in self._prices:
                return key
        return None

    def __getitem__(self, model: str) -> ModelPrice:
        return self._prices[model]

    def __iter__(self) -> Iterator[str]:
        return iter(self._prices)

    def __len__(self) -> int:
        return len(self._prices)

    def __repr__(self) -> str:
        return f"PriceTable({len(self._prices)} models)"

    def _merged(
        self, model: str, entry: Mapping[str, Any], current: ModelPrice | None, source: str
    ) -> ModelPrice:
        allowed = {"input", "output", "cached_input"}
        unknown = set(entry) - allowed
        if unknown:
            raise PriceTableError(
                f"{source}: the price of {model!r} has unknown field(s) "
                f"{', '.join(sorted(map(str, unknown)))}; the fields are input, output and "
                "cached_input (USD per million tokens)"
            )
        values: dict[str, Decimal | None] = {
            k: None if k == "cached_input" and v is None else _price(v, k, f"{source}: {model!r}")
            for k, v in entry.items()
        }
        if current is not None:
            values = {
                "input": current.input,
                "output": current.output,
                "cached_input": current.cached_input,
                **values,
            }
        elif "input" not in values or "output" not in values:
            near = difflib.get_close_matches(model, self._prices, n=3, cutoff=0.6)
            hint = f" (did you mean {', '.join(map(repr, near))}?)" if near else ""
            raise UnknownModelPriceError(
                f"{source}: {model!r} is not in the price table{hint}, so its entry must "
                f"give both 'input' and 'output' to add it (USD per million tokens), "
                f"e.g. {{{model!r}: {{'input': 0.5, 'output': 1.5}}}}; it gives only "
                f"{', '.join(sorted(values))}"
            )
        inp, out = values["input"], values["output"]
        assert inp is not None and out is not None  # only cached_input may be None
        return ModelPrice(inp, out, values.get("cached_input"))


def cost(
    model: str,
    input_tokens: int,
    output_tokens: int,
    *,
    cached_input_tokens: int = 0,
    table: PriceTable | None = None,
) -> Decimal:
    """USD (a :class:`~decimal.Decimal`) for a call to ``model``, priced by ``table``
    (default: the built-in table).

    Example: ``cost("openai:gpt-4o-mini", 10_000, 2_000)`` is ``Decimal('0.0027')``.
    """
    return (table if table is not None else PriceTable.builtin()).cost(
        model, input_tokens, output_tokens, cached_input_tokens=cached_input_tokens
    )


def _name(model: object) -> str:
    if not isinstance(model, str) or not model.strip():
        raise PriceTableError(f"a price table key must be a model name, not {model!r}")
    return model.strip()

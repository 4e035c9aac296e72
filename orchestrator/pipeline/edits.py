"""Editing an inbox item's output: what an ``edit`` decision changes, the text an editor
starts from, and the check of the edited value against the escalation's JSON Schema.
The CLI (``taskloom inbox edit``) and the web inbox share it.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from taskloom.engine.human import HumanTask
from taskloom.errors import PlanError, UserError

__all__ = [
    "MAX_EDIT_BYTES",
    "MAX_EDIT_DEPTH",
    "Editable",
    "editable",
    "json_depth",
    "schema_errors",
]

MAX_EDIT_BYTES = 1024 * 1024
"""Bytes (UTF-8) an edited output may have: 1 MiB."""
MAX_EDIT_DEPTH = 64
"""Levels of nested arrays and objects an edited JSON value may have. Real outputs
nest a handful of levels; thousands would exhaust the parser's recursion."""


@dataclass(frozen=True)
class Editable:
    """What ``edit`` changes: the decision's data key, the value now, its JSON Schema."""

    field: str
    value: Any
    schema: Mapping[str, Any] | None
    """``None``: any JSON value."""

    @property
    def text(self) -> bool:
        """Edited as raw text (the schema is a string's), else as JSON."""
        return self.schema is not None and self.schema.get("type") == "string"

    def initial(self) -> str:
        """The text an editor starts from: the text itself, or pretty JSON."""
        if self.text:
            return self.value if isinstance(self.value, str) else ""
        return "" if self.value is None else json.dumps(self.value, indent=2, ensure_ascii=False)

    def parse(self, text: str) -> tuple[Any, list[str]]:
        """The edited value, and what is wrong with it (``[]``: nothing). Line endings
        are normalized (a browser's form sends CRLF)."""
        text = text.replace("\r\n", "\n")
        if not text.strip():
            return None, [f"the {self.field} is empty"]
        if (size := len(text.encode(errors="replace"))) > MAX_EDIT_BYTES:
            return None, [
                f"the {self.field} is {size} bytes; keep it under {MAX_EDIT_BYTES} "
                f"({MAX_EDIT_BYTES // 1024} KiB)"
            ]
        if self.text:
            assert self.schema is not None
            return text, schema_errors(text, self.schema)
        opening = text.count("[") + text.count("{")  # cheap: most edits stop here
        if opening > MAX_EDIT_DEPTH and json_depth(text, stop=MAX_EDIT_DEPTH + 1) > MAX_EDIT_DEPTH:
            return None, [
                f"the JSON nests arrays and objects more than {MAX_EDIT_DEPTH} levels "
                f"deep: flatten it"
            ]
        try:
            value = json.loads(text, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            return None, [f"not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"]
        except ValueError as exc:
            return None, [f"not JSON: {exc}"]
        if self.field == "plan":
            from taskloom.pipeline.plan import parse_plan  # pydantic: only for a plan

            try:
                parse_plan(value)
            except PlanError as exc:
                return None, list(exc.problems) or [str(exc)]
        return value, schema_errors(value, self.schema) if self.schema is not None else []


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def json_depth(text: str, *, stop: int | None = None) -> int:
    """The deepest nesting of ``[`` and ``{`` in JSON ``text`` (brackets inside strings
    do not count), found without parsing it, so without recursion; counting ends as
    soon as it reaches ``stop``.

    >>> json_depth('{"a": [[1], "[[["]}')
    3
    """
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    depth = deepest = 0
    for c in brackets:
        if c in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest == stop:
                break
        else:
            depth -= 1
    return deepest


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def editable(task: HumanTask) -> Editable:
    """What an ``edit`` decision on ``task`` changes: the output (pipeline activities,
    ``output_schema`` from the escalation), the integrated answer, or the plan (a
    planner escalation). Raises :class:`UserError` when there is nothing to edit."""
    ctx = task.context if isinstance(task.context, dict) else {}
    schema = ctx.get("output_schema")
    for key in ("output", "answer"):
        if key in ctx:
            value = ctx[key]
            if not isinstance(schema, dict):  # not given: text if the output is text
                schema = {"type": "string"} if value is None or isinstance(value, str) else None
            return Editable("output", value, schema)
    if "last_plan" in ctx:
        return Editable("plan", ctx["last_plan"], None)
    raise UserError(
        f"{task.id} carries no output to edit (its context has no 'output'); "
        f"decide it with `taskloom inbox decide {task.id} DECISION`"
    )


# -- a small JSON Schema checker --------------------------------------------------------
_TYPES: dict[str, Callable[[Any], bool]] = {  # most specific first: _kind() relies on it
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool))
        or (isinstance(v, float) and v.is_integer())
    ),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def schema_errors(value: Any, schema: Mapping[str, Any]) -> list[str]:
    """What is wrong with ``value`` under the JSON Schema ``schema`` (``[]``: valid).

    Covers what pydantic's ``model_json_schema()`` emits: ``type``, ``enum``, ``const``,
    ``properties``, ``required``, ``additionalProperties``, ``items``, ``prefixItems``,
    lengths, bounds, ``pattern``, ``anyOf``/``oneOf``/``allOf`` and local ``$ref``;
    other keywords (``format``, ...) are not checked. ::

        schema_errors({"n": "x"}, Model.model_json_schema())
        # ["n: expected integer, got string", "title: missing (required)"]
    """
    return _errors(value, schema, schema, "")


def _errors(value: Any, schema: Mapping[str, Any], root: Mapping[str, Any], path: str) -> list[str]:
    schema = _resolve(schema, root)
    where = path or "(the whole value)"
    errors: list[str] = []
    for sub in schema.get("allOf", []):
        errors += _errors(value, sub, root, path)
    branches = schema.get("anyOf") or schema.get("oneOf")
    if branches:
        errors += _any_of(value, branches, root, path)
    if "const" in schema and value != schema["const"]:
        errors.append(f"{where}: must be {json.dumps(schema['const'])}")
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(json.dumps(e) for e in schema["enum"])
        errors.append(f"{where}: must be one of {allowed}")
    types = _types(schema)
    if types and not _fits(value, types):
        return [*errors, f"{where}: expected {' or '.join(types)}, got {_kind(value)}"]
    if isinstance(value, dict):
        errors += _object_errors(value, schema, root, path)
    elif isinstance(value, list):
        errors += _array_errors(value, schema, root, path)
    elif isinstance(value, str):
        errors += _string_errors(value, schema, where)
    elif _TYPES["number"](value):
        errors += _number_errors(value, schema, where)
    return errors


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    """``schema`` with a local ``$ref`` (``#/$defs/Name``) replaced by its target."""
    for _ in range(32):  # a chain of refs; a cycle of bare refs stops here
        ref = schema.get("$ref")
        if not isinstance(ref, str) or not ref.startswith("#"):
            return schema
        target: Any = root
        for part in filter(None, ref[1:].split("/")):
            part = part.replace("~1", "/").replace("~0", "~")
            target = target.get(part, {}) if isinstance(target, Mapping) else {}
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _any_of(value: Any, branches: Sequence[Any], root: Mapping[str, Any], path: str) -> list[str]:
    results = [_errors(value, b, root, path) for b in branches]
    if any(not r for r in results):
        return []
    # The branch meant is the one of the value's type (Optional[X] given a non-null X).
    meant = [
        r for b, r in zip(branches, results, strict=True) if _fits(value, _types(_resolve(b, root)))
    ]
    if len(meant) == 1:
        return meant[0]
    forms = "; or ".join(r[0] for r in results)
    return [f"{path or '(the whole value)'}: matches none of the allowed forms ({forms})"]


def _object_errors(
    value: dict[str, Any], schema: Mapping[str, Any], root: Mapping[str, Any], path: str
) -> list[str]:
    props: Mapping[str, Any] = schema.get("properties", {})
    errors = [
        f"{_join(path, k)}: missing (required)"
        for k in schema.get("required", [])
        if k not in value
    ]
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        if key in props:
            errors += _errors(item, props[key], root, _join(path, key))
        elif extra is False:
            allowed = ", ".join(props) or "none"
            errors.append(f"{_join(path, key)}: not an allowed field (allowed: {allowed})")
        elif isinstance(extra, Mapping):
            errors += _errors(item, extra, root, _join(path, key))
    return errors


def _array_errors(
    value: list[Any], schema: Mapping[str, Any], root: Mapping[str, Any], path: str
) -> list[str]:
    where = path or "(the whole value)"
    errors = _bounds(len(value), schema, "minItems", "maxItems", where, "items")
    prefix: Sequence[Any] = schema.get("prefixItems", [])
    items = schema.get("items")
    for i, item in enumerate(value):
        sub = prefix[i] if i < len(prefix) else items
        if isinstance(sub, Mapping):
            errors += _errors(item, sub, root, f"{path}[{i}]")
    return errors


def _string_errors(value: str, schema: Mapping[str, Any], where: str) -> list[str]:
    errors = _bounds(len(value), schema, "minLength", "maxLength", where, "characters")
    pattern = schema.get("pattern")
    if isinstance(pattern, str) and not re.search(pattern, value):
        errors.append(f"{where}: does not match the pattern {pattern}")
    return errors


def _number_errors(value: float, schema: Mapping[str, Any], where: str) -> list[str]:
    checks = (
        ("minimum", operator.ge, "at least"),
        ("maximum", operator.le, "at most"),
        ("exclusiveMinimum", operator.gt, "more than"),
        ("exclusiveMaximum", operator.lt, "less than"),
    )
    return [
        f"{where}: must be {words} {schema[key]}"
        for key, ok, words in checks
        if isinstance(schema.get(key), int | float) and not ok(value, schema[key])
    ]


def _bounds(
    n: int, schema: Mapping[str, Any], low: str, high: str, where: str, unit: str
) -> list[str]:
    errors = []
    if isinstance(schema.get(low), int) and n < schema[low]:
        errors.append(f"{where}: at least {schema[low]} {unit} (has {n})")
    if isinstance(schema.get(high), int) and n > schema[high]:
        errors.append(f"{where}: at most {schema[high]} {unit} (has {n})")
    return errors


def _types(schema: Mapping[str, Any]) -> list[str]:
    t = schema.get("type")
    return [t] if isinstance(t, str) else [x for x in t or [] if isinstance(x, str)]


def _fits(value: Any, types: Sequence[str]) -> bool:
    return bool(types) and any(_TYPES.get(t, lambda _v: True)(value) for t in types)


def _kind(value: Any) -> str:
    return next((t for t in _TYPES if t != "number" and _TYPES[t](value)), "number")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key

"""The totals verifier: a table's total or sum row, or a ``total`` field next to its
parts, must equal the sum of those parts.

It reads markdown (pipe) tables in text, JSON in the output itself (or in a text that is
JSON, or in its fenced ```json blocks): arrays of objects with a total row, and objects
with a ``total`` field next to a list (or a mapping) of parts. It costs nothing where
there is no table, so the pipeline runs it on every output by default.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ._walk import strings, where
from .base import Check, Tools, Verifier
from .errors import VerifierConfigError
from .verdict import Verdict

__all__ = ["Totals"]

# A label that makes a row a total row: "Total", "Grand total", "Sum", "Total revenue",
# "Subtotal", German "Summe"/"Gesamt"; markdown emphasis around it is ignored.
_TOTAL_LABEL = re.compile(
    r"^(?:grand[\s-]+)?(?:total|sum|summe|gesamt|insgesamt)\b(?!\s*(?:of\s+)?(?:average|mean))",
    re.I,
)
_SUBTOTAL_LABEL = re.compile(r"^sub[\s-]?total\b|^zwischensumme\b", re.I)
# Columns whose total row holds an average, a rate or a price, not a sum.
_NOT_SUMMED = re.compile(
    r"\b(?:avg|average|mean|median|rate|ratio|margin|growth|change|yoy|price|per|unit|"
    r"index|score|durchschnitt|anteil)\b|/|\bcagr\b",
    re.I,
)
_PERCENT_COLUMN = re.compile(r"%|\bpercent|\bshare\b|\bpct\b", re.I)
_SCALES = {"k": 1e3, "m": 1e6, "mm": 1e6, "mn": 1e6, "b": 1e9, "bn": 1e9}
_NUMBER = re.compile(
    r"""^(?P<neg>[-\u2212\u2013]|\()?\s*
        (?P<cur>[$€£¥]|(?:USD|EUR|GBP|CHF|JPY)\s?)?\s*
        (?P<neg2>[-\u2212])?
        (?P<num>\d[\d,.'\u2009\u202f ]*)
        \s*(?P<scale>k|m|mm|mn|b|bn)?\b\s*
        (?P<cur2>[$€£¥]|\s?(?:USD|EUR|GBP|CHF|JPY))?\s*
        (?P<pct>%)?\s*\)?$""",
    re.X | re.I,
)
_DASHES = {"", "-", "\u2013", "\u2014", "n/a", "na"}
_FENCED_JSON = re.compile(r"```(?:json)?\s*\n(.*?)\n```", re.S)
_TABLE_ROW = re.compile(r"^\s*\|?(.+?)\|?\s*$")
_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(?:\|\s*:?-{2,}:?\s*)*\|?\s*$")


@dataclass(frozen=True)
class _Num:
    value: float
    unit: float
    """Half of the last shown digit's place, in the value's scale (rounding slack)."""
    percent: bool


@dataclass(frozen=True)
class _Mismatch:
    place: str
    stated: str
    computed: float
    parts: int


class Totals(Verifier):
    """Checks that every stated total equals the sum of its parts.

    - Markdown tables: a row labelled ``Total``, ``Sum``, ``Grand total``, ``Subtotal``
      (or ``Summe``, ``Gesamt``) must equal, column by column, the sum of the rows above
      it (since the previous total; a subtotal since the previous subtotal).
    - JSON: in an array of objects, an object whose label is such a word must equal the
      sum of the others, field by field; an object's ``total`` (``sum``, ``total_X``,
      ``X_total``) must equal the sum of the list or mapping of numbers next to it (for a
      list of objects: their one numeric field, or the field ``X``).

    Numbers may carry thousands separators, currency symbols or codes, ``%``, ``k``/``M``
    /``bn`` suffixes and parentheses for negatives; ``-`` and empty cells count as 0.
    Columns whose header says they hold an average, rate, growth or price are skipped,
    and so are percentage columns whose total is not 100%. A total passes within
    ``tolerance`` (relative), or within the rounding of the digits shown: half a unit of
    the last digit for whole numbers, and that half unit per part for figures shown with
    decimals or as percentages (rounded parts need not add up to the rounded total).
    Stated totals in running prose ("a total of 12.5M") are not read.

    A mismatch fails with feedback naming the table, row and column, the stated and the
    computed value, so a retry can fix it.

    Example::

        Totals(tolerance=0.001)
    """

    def __init__(self, *, tolerance: float = 0.005, name: str = "totals", timeout: float = 30.0):
        if not 0.0 <= tolerance < 1.0:
            raise VerifierConfigError(f"Totals: tolerance must be in [0, 1), got {tolerance}")
        self.tolerance = tolerance
        self.name = name
        self.timeout = timeout

    async def verify(self, check: Check, tools: Tools) -> Verdict:
        """Find the tables and compare each total with its parts."""
        tables = 0
        mismatches: list[_Mismatch] = []
        for found, bad in _checks(check.output, self.tolerance):
            tables += found
            mismatches += bad
        if not mismatches:
            reason = f"every total in {tables} table(s) adds up" if tables else "no totals found"
            return Verdict(verifier=self.name, status="pass", reasons=[reason])
        evidence = [
            f"{m.place}: states {m.stated}, its {m.parts} parts add up to {_show(m.computed)}"
            for m in mismatches
        ]
        return Verdict(
            verifier=self.name,
            status="fail",
            reasons=[f"{len(mismatches)} stated total(s) do not match the sum of their parts"],
            evidence=evidence,
            feedback="These totals do not equal the sum of their parts; recompute each "
            "one (or correct the parts) so that they agree:\n"
            + "\n".join(f"- {e}" for e in evidence),
        )


def _checks(output: Any, tol: float) -> Iterator[tuple[int, list[_Mismatch]]]:
    """``(tables seen, mismatches)`` per place a table can be."""
    yield _json_checks(output, "the output", tol)
    for path, text in strings(output):
        if "|" in text:
            yield _markdown_checks(text, where(path), tol)
        stripped = text.strip()
        if stripped[:1] in "[{" and path == "" and stripped[-1:] in "]}":
            data = _loads(stripped)
            if data is not None:
                yield _json_checks(data, "the output's JSON", tol)
        for i, m in enumerate(_FENCED_JSON.finditer(text), 1):
            data = _loads(m.group(1))
            if data is not None:
                yield _json_checks(data, f"JSON block {i} {where(path)}", tol)


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


# -- numbers ----------------------------------------------------------------------------


def _number(cell: Any) -> _Num | None:
    """A cell as a number, or ``None`` when it is no figure."""
    if isinstance(cell, bool) or cell is None:
        return None
    if isinstance(cell, int | float):
        text = repr(float(cell)) if isinstance(cell, float) else str(cell)
        decimals = len(text.partition(".")[2].rstrip("0")) if "e" not in text else 6
        return _Num(float(cell), 0.5 * 10.0**-decimals, False)
    if not isinstance(cell, str):
        return None
    m = _NUMBER.match(cell.strip().strip("*_` ").strip())
    if m is None:
        return None
    parsed = _digits(m.group("num").strip())
    if parsed is None:
        return None
    value, decimals = parsed
    scale = _SCALES.get((m.group("scale") or "").lower(), 1.0)
    sign = -1.0 if m.group("neg") or m.group("neg2") else 1.0
    return _Num(sign * value * scale, 0.5 * 10.0**-decimals * scale, bool(m.group("pct")))


def _digits(num: str) -> tuple[float, int] | None:
    """``1,234.5`` / ``1.234,5`` / ``1 234`` / ``12,5`` -> (value, decimals shown)."""
    num = re.sub(r"[\s'\u2009\u202f]", "", num)
    if "," in num and "." in num:
        dec = "," if num.rfind(",") > num.rfind(".") else "."
    elif num.count(",") == 1 and not re.fullmatch(r"\d{1,3},\d{3}", num):
        dec = ","  # 12,5 (a decimal comma); 1,234 stays a thousands separator
    elif num.count(".") > 1:
        dec = ","  # 1.234.567: dots group thousands
    else:
        dec = "."
    whole, _, frac = num.partition(dec)
    whole = whole.replace("," if dec == "." else ".", "")
    if not whole.isdigit() or (frac and not frac.isdigit()):
        return None
    return float(f"{whole}.{frac or 0}"), len(frac)


def _agrees(stated: _Num, parts: Sequence[_Num], tol: float) -> tuple[bool, float]:
    computed = sum(p.value for p in parts)
    units = [stated.unit, *(p.unit for p in parts)]
    coarse = max(units)
    rounded = stated.percent or coarse < 0.5  # shown with decimals, or a percentage
    slack = coarse * (len(parts) if rounded else 1)
    allowed = max(tol * max(abs(computed), abs(stated.value)), slack)
    return abs(stated.value - computed) <= allowed + 1e-9, computed


def _show(value: float) -> str:
    return f"{value:,.2f}".rstrip("0").rstrip(".") if value % 1 else f"{value:,.0f}"


# -- markdown tables --------------------------------------------------------------------


def _markdown_checks(text: str, place: str, tol: float) -> tuple[int, list[_Mismatch]]:
    lines = text.splitlines()
    tables, bad = 0, []
    i = 0
    while i < len(lines) - 1:
        if "|" in lines[i] and _SEPARATOR.match(lines[i + 1]):
            header = _cells(lines[i])
            j = i + 2
            rows = []
            while j < len(lines) and "|" in lines[j] and lines[j].strip():
                rows.append(_cells(lines[j]))
                j += 1
            tables += 1
            bad += _table_mismatches(header, rows, f"markdown table {tables} {place}", tol)
            i = j
        else:
            i += 1
    return tables, bad


def _cells(line: str) -> list[str]:
    m = _TABLE_ROW.match(line)
    inner = m.group(1) if m else line
    return [c.strip() for c in re.split(r"(?<!\\)\|", inner)]


def _label(row: Sequence[Any]) -> tuple[int, str] | None:
    """``(level, label)`` of a total row (2 total, 1 subtotal), else ``None``."""
    for cell in row:
        if isinstance(cell, str) and _number(cell) is None:
            text = cell.strip().strip("*_` ").strip()
            if _SUBTOTAL_LABEL.match(text):
                return 1, text
            if _TOTAL_LABEL.match(text):
                return 2, text
    return None


def _table_mismatches(
    header: Sequence[str], rows: Sequence[Sequence[Any]], place: str, tol: float
) -> list[_Mismatch]:
    bad: list[_Mismatch] = []
    since_total: list[Sequence[Any]] = []
    since_sub: list[Sequence[Any]] = []
    for row in rows:
        label = _label(row)
        if label is None:
            since_total.append(row)
            since_sub.append(row)
            continue
        level, name = label
        parts = since_sub if level == 1 else since_total
        for col, title in enumerate(header):
            miss = _column(title, row, parts, col, tol)
            if miss is not None:
                stated, computed, n = miss
                where_ = f"{place}, row {name!r}, column {title or col + 1!r}"
                bad.append(_Mismatch(where_, stated, computed, n))
        since_sub = []
        if level == 2:
            since_total = []
    return bad


def _column(
    title: str, total_row: Sequence[Any], parts_rows: Sequence[Sequence[Any]], col: int, tol: float
) -> tuple[str, float, int] | None:
    """``(stated, computed, parts)`` when column ``col`` of a total row is wrong."""
    if col >= len(total_row) or _NOT_SUMMED.search(title):
        return None
    stated = _number(total_row[col])
    if stated is None:
        return None
    if _PERCENT_COLUMN.search(title):
        stated = _Num(stated.value, stated.unit, True)
    parts: list[_Num] = []
    for row in parts_rows:
        cell = row[col] if col < len(row) else ""
        num = _number(cell)
        if num is None:
            if isinstance(cell, str) and cell.strip().strip("*_` ").lower() in _DASHES:
                continue
            return None  # a column of words, or of figures and words: not a sum
        parts.append(num)
    if len(parts) < 2 or (stated.percent and abs(stated.value - 100.0) > 1.0):
        return None  # a percentage total that is no 100% is a rate, not a sum
    ok, computed = _agrees(stated, parts, tol)
    return None if ok else (str(total_row[col]).strip().strip("*_` "), computed, len(parts))


# -- JSON -------------------------------------------------------------------------------


def _json_checks(data: Any, place: str, tol: float) -> tuple[int, list[_Mismatch]]:
    tables, bad = 0, []
    for path, value in _containers(data, ""):
        at = f"{place}, field {path!r}" if path else place
        if isinstance(value, list):
            found = _json_rows(value, at, tol)
        else:
            found = _json_total_field(value, at, tol)
        if found is not None:
            tables += 1
            bad += found
    return tables, bad


def _containers(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        yield path, value
        for key, item in value.items():
            yield from _containers(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        yield path, value
        for i, item in enumerate(value):
            yield from _containers(item, f"{path}.{i}" if path else str(i))


def _json_rows(rows: list[Any], place: str, tol: float) -> list[_Mismatch] | None:
    """An array of objects with a total row, or ``None`` when it is no such table."""
    if len(rows) < 3 or not all(isinstance(r, dict) for r in rows):
        return None
    if not any(_label(list(r.values())) for r in rows):
        return None
    keys = list(dict.fromkeys(k for r in rows for k in r))
    table = [[r.get(k, "") for k in keys] for r in rows]
    return _table_mismatches(keys, table, place, tol)


_TOTAL_KEY = re.compile(r"^(?:(?:grand_?)?total|sum)(?:[_ ]?(?P<after>\w+))?$", re.I)
_KEY_TOTAL = re.compile(r"^(?P<before>\w+?)[_ ]?total$", re.I)


def _json_total_field(obj: dict[str, Any], place: str, tol: float) -> list[_Mismatch] | None:
    """An object's ``total`` against the list or mapping of parts beside it."""
    bad: list[_Mismatch] = []
    seen = False
    for key, raw in obj.items():
        stated = _number(raw)
        m = _TOTAL_KEY.match(key) or _KEY_TOTAL.match(key)
        if stated is None or m is None:
            continue
        named = (m.groupdict().get("after") or m.groupdict().get("before") or "").lower()
        candidates = [
            found for k, v in obj.items() if k != key and (found := _parts(v, named)) is not None
        ]
        if len(candidates) != 1:
            continue  # no parts beside it, or several lists: which one it sums is unclear
        parts, field = candidates[0]
        seen = True
        ok, computed = _agrees(stated, parts, tol)
        if not ok and stated.value != len(parts):  # a total that counts the parts
            of = f" of {field!r}" if field else ""
            bad.append(_Mismatch(f"{place}, field {key!r}{of}", str(raw), computed, len(parts)))
    return bad if seen else None


def _parts(value: Any, named: str) -> tuple[list[_Num], str] | None:
    """The numbers a ``total`` could sum: a list of numbers, a mapping of numbers, or a
    list of objects with one numeric field (or the field ``named``)."""
    if isinstance(value, dict) and len(value) >= 2:
        nums = [_number(v) for v in value.values()]
        if all(n is not None for n in nums):
            return [n for n in nums if n is not None], ""
        return None
    if not isinstance(value, list) or len(value) < 2:
        return None
    if all(not isinstance(v, dict | list) for v in value):
        nums = [_number(v) for v in value]
        if all(n is not None for n in nums):
            return [n for n in nums if n is not None], ""
        return None
    if not all(isinstance(v, dict) for v in value):
        return None
    fields = [k for k in value[0] if all(_number(v.get(k)) is not None for v in value)]
    if named:
        fields = [k for k in fields if k.lower() == named] or []
    if len(fields) != 1:
        return None
    return [n for v in value if (n := _number(v[fields[0]])) is not None], fields[0]

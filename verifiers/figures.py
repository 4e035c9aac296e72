"""Figures stated for the same quantity by several activities must agree, in text as
in JSON: "revenue was $4.2M" in one output and "revenue: 4.5 million" in another
contradict each other; "$4.2 million" and "USD 4,200,000" do not.

A statement is a quantity's label followed by a figure (``revenue was $4.2M``,
``Revenue: 4.5 million``, ``headcount of 120``, a ``revenue`` field in JSON, a table row
``| Revenue | $4.2M |``), a figure followed by ``in``/``of`` and a label (``$4.2M in
revenue``), or a scaled count of things ("4 million visitors"). Labels are compared
after dropping determiners and words such as "total" and "reported"; a period named next
to the figure (2024, Q3, FY2023, H1) is part of the quantity, so "revenue in 2023" and
"revenue in 2024" are never compared. Figures agree when they are equal at the precision
of the rounder one (4.2M and 4,230,000 agree; "12,500" is shown to the hundred and
agrees with "12.480,5"). Numbers are read in the usual locales (``1,234.5``,
``1.234,5``, ``1 234``, ``12'480``), amounts in words as figures ("four million"), and a
level reached is a statement ("revenue rose 6% to €512m"; the change "by 6%" is not).
Figures of different kinds (a percentage and an amount, dollars and euros) are not
compared. An output that states several figures for one quantity agrees with any other
that states one of them: only outputs with no figure in common disagree.

Which activities are compared is narrowed by ``facts`` (activity id -> the quantities
it states, from the plan): a label is compared between two activities only when it
matches a fact both declare. Without ``facts`` every label is compared.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .cross import CrossCheck
from .verdict import Verdict

__all__ = ["Figures", "fact_terms", "statements"]

_SCALE = {
    "k": 1e3,
    "thousand": 1e3,
    "m": 1e6,
    "mn": 1e6,
    "mm": 1e6,
    "mio": 1e6,
    "million": 1e6,
    "millions": 1e6,
    "b": 1e9,
    "bn": 1e9,
    "billion": 1e9,
    "billions": 1e9,
    "tn": 1e12,
    "trillion": 1e12,
}
_CURRENCY = {"$": "USD", "usd": "USD", "€": "EUR", "eur": "EUR", "£": "GBP", "gbp": "GBP"}
_CURRENCY |= {"¥": "JPY", "jpy": "JPY", "chf": "CHF", "us$": "USD", "dollars": "USD"}
_CURRENCY |= {"euros": "EUR", "euro": "EUR", "pounds": "GBP"}
_FIGURE = (
    r"(?P<cur>US\$|[$€£¥]|(?:USD|EUR|GBP|CHF|JPY)\s?)?\s*"
    r"(?P<num>\d{1,3}(?:\.\d{3})+,\d+|\d{1,3}(?:\.\d{3}){2,}(?![\d.,])"
    r"|\d{1,3}(?:[,'\u2019\u202f\u2009\u00a0 ]\d{3})+(?:[.,]\d+)?|\d+(?:[.,]\d+)?)"
    r"(?:\s*(?P<scale>thousand|millions?|billions?|trillion|mio|mn|mm|bn|tn|[kmb])\b)?"
    r"(?:\s*(?P<pct>%|percent\b|per\s?cent\b))?"
    r"(?:\s*(?P<cur2>USD|EUR|GBP|CHF|JPY|dollars|euros?|pounds)\b)?"
)
_LABEL = r"(?P<label>[A-Za-z][A-Za-z'\- ]{1,60}?)"
_LINK = (
    r"(?:\s*(?:\([^)]{0,20}\)\s*)?(?::|=|\u2014|\u2013| -|\s+(?:was|were|is|are|of|at|"
    r"reached|totall?ed|totals?|stood at|came to|amounted to|amounts to|came in at|"
    r"reported at|hit|(?:rose|fell|grew|increased|decreased|dropped|climbed|declined|jumped"
    r"|slipped|eased|edged up|edged down)(?:\s+(?:by\s+)?~?[\d.,]+\s*(?:%|percent|per cent))?"
    r"\s+to)))\s+"
)
_ABOUT = r"(?:(?:about|around|roughly|approximately|some|an\s+estimated|c(?:a)?\.)\s+|~)?"
_STATED = re.compile(rf"(?<![\w$€£¥]){_LABEL}{_LINK}{_ABOUT}{_FIGURE}", re.I)
_BEFORE = re.compile(
    rf"{_FIGURE}\s+(?:in|of)\s+(?P<label>[a-z][a-z\- ]{{2,40}}?)(?=[.,;:)\n]|$)", re.I
)
_COUNTED = re.compile(rf"(?<![\w.,]){_FIGURE}\s+(?P<label>[a-z][a-z\-]{{2,30}})\b", re.I)
"""A large count of things: "4 million visitors", "1.8m parcels" (a scale word is
required: "212 turbines" and "3 of 4 chefs" are too often different things)."""
_NOT_THINGS = frozenset(
    {"a", "an", "the", "per", "and", "or", "in", "of", "to", "from", "for", "with", "on", "at"}
    | {"by", "than", "more", "less", "each", "every", "this", "that", "year", "years", "was"}
    | {"were", "is", "are", "over", "under", "across", "since", "until", "during", "after"}
)
_UNITS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90,
}  # fmt: skip
_SPELLED = re.compile(
    rf"\b(?P<n>(?:{'|'.join(_UNITS)})(?:[-\s](?:{'|'.join(_UNITS)}))?"
    r"(?:\s+hundred(?:\s+and\s+\w+(?:[-\s]\w+)?)?)?)\s+(?P<scale>thousand|million|billion)\b",
    re.I,
)
_PERIOD = re.compile(
    r"\b(?:FY\s?\d{2,4}|Q[1-4](?:\s?\d{4})?|H[12](?:\s?\d{4})?|(?:19|20)\d{2})\b", re.I
)
_DROP = {"the", "a", "an", "our", "its", "their", "his", "her", "this", "that", "total"}
_DROP |= {"overall", "reported", "annual", "estimated", "stated", "current", "company"}
_DROP |= {"s", "and", "in", "for", "with", "was", "is", "were", "are", "of", "at", "to"}
_DROP |= {"period", "year", "quarter", "fiscal", "full", "last", "approximately", "about"}
_WORD = re.compile(r"[a-z][a-z\-']*")
_TABLE = re.compile(r"^\s*\|\s*(?P<label>[^|]{2,60}?)\s*\|\s*(?P<value>[^|]{1,40}?)\s*\|", re.M)
_VALUE = re.compile(rf"^(?:about |~)?{_FIGURE}$", re.I)


@dataclass(frozen=True)
class Statement:
    """One figure stated for a quantity."""

    label: str
    """The quantity, normalised (``"revenue"``)."""
    words: frozenset[str]
    """Every word of the label that matters, stemmed (for matching a plan's facts)."""
    periods: tuple[str, ...]
    """The periods named with it (``("2024",)``); none: any."""
    value: float
    slack: float
    """Half the last shown digit's place, scaled: how far a rounding may have moved it."""
    kind: str
    """``%``, a currency code, or ``""`` for a plain number."""
    text: str
    """The statement as written."""


def _stem(word: str) -> str:
    """A crude singular: ``salaries`` -> ``salary``, ``sales`` stays, ``users`` -> ``user``."""
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("s") and not word.endswith(("ss", "us", "sales")) and len(word) > 3:
        return word[:-1]
    return word


def _words(raw: str) -> frozenset[str]:
    found = (w.strip("-'") for w in _WORD.findall(raw.lower()))
    return frozenset(_stem(w) for w in found if len(w) > 1 and w not in _DROP)


def fact_terms(text: str) -> frozenset[str]:
    """The words of a quantity's name that matter (``"Total Revenue (2024)"`` ->
    ``{"revenue"}``: a period is read next to each figure, not from the name)."""
    return _words(_PERIOD.sub(" ", text.lower()))


def _plain(raw: str) -> str:
    """``raw`` as a float literal, whatever its locale: ``12.480,5``, ``1 234,5``,
    ``12'480`` and ``1,234.5`` all read as written (a lone ``,``/``.`` followed by
    three digits groups thousands; any other is the decimal mark)."""
    num = re.sub(r"['\u2019\u202f\u2009\u00a0 ]", "", raw)
    if "," in num and "." in num:
        decimal = "," if num.rfind(",") > num.rfind(".") else "."
    elif "," in num:
        decimal = "" if re.fullmatch(r"\d{1,3}(?:,\d{3})+", num) else ","
    elif "." in num:
        decimal = "" if re.fullmatch(r"\d{1,3}(?:\.\d{3}){2,}", num) else "."
    else:
        decimal = ""
    thousands = {",": ".", ".": ",", "": ",."}[decimal]
    for mark in thousands:
        num = num.replace(mark, "")
    return num.replace(",", ".")


def _spelled(text: str) -> str:
    """``text`` with amounts in words written as figures: "four million" -> "4 million",
    "two hundred and ten thousand" -> "210 thousand"."""

    def figure(m: re.Match[str]) -> str:
        total = 0
        for word in re.findall(r"[a-z]+", m.group("n").lower()):
            if word in _UNITS:
                total += _UNITS[word]
            elif word == "hundred":
                total *= 100
            elif word != "and":
                return m.group(0)
        return f"{total} {m.group('scale')}"

    return _SPELLED.sub(figure, text)


def _number(match: re.Match[str]) -> tuple[float, float, str] | None:
    num = _plain(match.group("num"))
    try:
        value = float(num)
    except ValueError:
        return None
    decimals = len(num.split(".", 1)[1]) if "." in num else 0
    scale_word = (match.group("scale") or "").lower()
    scale = _SCALE.get(scale_word, 1.0)
    pct = bool(match.group("pct"))
    currency = (match.group("cur") or match.group("cur2") or "").strip().lower()
    kind = "%" if pct else _CURRENCY.get(currency, "")
    if not kind and not scale_word and 1900 <= value <= 2100 and decimals == 0:
        return None  # a year, not a figure
    if decimals == 0:  # "12,500" is shown to the hundred: a rounding of 12,480.5
        decimals = -(len(num) - len(num.rstrip("0"))) if value else 0
    return value * scale, 0.5 * 10**-decimals * scale, kind


def _label(raw: str) -> str | None:
    words = [w.strip("-'") for w in _WORD.findall(raw.lower())]
    kept = [w for w in words if w and w not in _DROP and not w.endswith("'s")][-2:]
    return " ".join(kept) or None


def statements(output: Any) -> list[Statement]:
    """Every figure ``output`` (text, or JSON data, or text holding JSON) states."""
    if isinstance(output, str):
        text = output.strip()
        if text[:1] in "{[":
            try:
                return statements(json.loads(text))
            except ValueError:
                pass
        return list(_text_statements(output))
    return list(_json_statements(output, ""))


def _text_statements(text: str) -> Iterator[Statement]:
    for sentence in re.split(r"(?<=[.!?;])\s+(?=[A-Z(\[*])|\n", _spelled(text)):
        periods = sorted({p.lower().replace(" ", "") for p in _PERIOD.findall(sentence)})
        found = [*_STATED.finditer(sentence), *_BEFORE.finditer(sentence)]
        found += (m for m in _COUNTED.finditer(sentence) if _counts_things(m))
        for match in found:
            label = _label(match.group("label"))
            number = _number(match)
            if label is None or number is None:
                continue
            words = _words(match.group("label"))
            yield _statement(label, words, number, periods, match.group(0).strip())
    for row in _TABLE.finditer(text):
        value = _VALUE.match(row.group("value").strip("* "))
        label = _label(row.group("label"))
        number = _number(value) if value else None
        if label and number:
            periods = sorted({p.lower() for p in _PERIOD.findall(row.group("label"))})
            words = _words(row.group("label"))
            yield _statement(label, words, number, periods, row.group(0).strip())


def _counts_things(match: re.Match[str]) -> bool:
    """A scaled figure followed by a noun ("4 million visitors"), not by a verb or a
    preposition ("EUR 2.4 million raised", "€9m a year")."""
    word = match.group("label").lower()
    return bool(match.group("scale")) and not (
        word in _NOT_THINGS or word in _CURRENCY or word.endswith(("ed", "ly"))
    )


def _json_statements(value: Any, key: str) -> Iterator[Statement]:
    if isinstance(value, dict):
        for k, item in value.items():
            yield from _json_statements(item, str(k))
    elif isinstance(value, list):
        for item in value:
            yield from _json_statements(item, key)
    elif isinstance(value, str):
        match = _VALUE.match(value.strip())
        label = _label(key.replace("_", " "))
        number = _number(match) if match else None
        if match and label and number:
            words = _words(key.replace("_", " "))
            yield _statement(label, words, number, [], f"{key}: {value}")
        elif not match:
            yield from _text_statements(value)
    elif isinstance(value, int | float) and not isinstance(value, bool) and key:
        label = _label(key.replace("_", " "))
        if label and not (label.endswith("year") or label in {"id", "count"}):
            words = _words(key.replace("_", " "))
            yield Statement(label, words, (), float(value), 0.0, "", f"{key}: {value}")


def _statement(
    label: str,
    words: frozenset[str],
    number: tuple[float, float, str],
    periods: Sequence[str],
    text: str,
) -> Statement:
    value, slack, kind = number
    return Statement(label, words, tuple(periods), value, slack, kind, text)


def _comparable(a: Statement, b: Statement) -> bool:
    """A period in common (or one names none) and the same kind of figure (a plain number
    goes with an amount, never with a percentage)."""
    if a.periods and b.periods and not set(a.periods) & set(b.periods):
        return False
    if "%" in (a.kind, b.kind):
        return a.kind == b.kind
    return not (a.kind and b.kind and a.kind != b.kind)


def _agree(a: Statement, b: Statement) -> bool:
    return abs(a.value - b.value) <= max(a.slack, b.slack) + 1e-9 * max(abs(a.value), 1.0)


class Figures(CrossCheck):
    """Figures stated for the same quantity by different activities must agree (text and JSON).

    See the module docstring for what counts as a statement. Each contested quantity
    fails once, implicating only the activities whose figures disagree with another's,
    with the figures as evidence and feedback for a re-run.

    Example::

        orch.worker(cross_checks=[References(), Figures()])
    """

    def __init__(
        self,
        *,
        facts: Mapping[str, Sequence[str]] | None = None,
        name: str = "figures",
        timeout: float = 30.0,
    ) -> None:
        self.facts = {a: [fact_terms(f) for f in fs] for a, fs in (facts or {}).items()}
        self.name = name
        self.timeout = timeout

    def for_plan(self, facts: Mapping[str, Sequence[str]] | None) -> Figures:
        """This check narrowed to the facts a plan's activities state."""
        return Figures(facts=facts, name=self.name, timeout=self.timeout)

    async def verify_all(self, outputs: Mapping[str, Any]) -> list[Verdict]:
        """Compare the figures the outputs state, quantity by quantity."""
        said: dict[str, dict[str, list[Statement]]] = {}
        for activity, output in outputs.items():
            for s in statements(output):
                for key in self._keys(activity, s):
                    said.setdefault(key, {}).setdefault(activity, []).append(s)
        verdicts = []
        for label, by_activity in sorted(said.items()):
            clash = self._clash(label, by_activity)
            if clash:
                verdicts.append(self._contradiction(label, clash))
        if verdicts:
            return verdicts
        compared = sum(1 for by in said.values() if len(by) > 1)
        return [
            Verdict(
                verifier=self.name,
                status="pass",
                reasons=[f"the outputs agree on the {compared} quantity(ies) they share"],
                activities=sorted(outputs),
            )
        ]

    def _keys(self, activity: str, statement: Statement) -> list[str]:
        """The quantities ``statement`` is compared under: its label; with ``facts``,
        the facts of ``activity`` that the label names (and nothing else)."""
        if not self.facts:
            return [statement.label]
        return [
            " ".join(sorted(f)) for f in self.facts.get(activity, []) if f and f <= statement.words
        ]

    def _compared(self, label: str, a: str, b: str) -> bool:
        if not self.facts:
            return True
        terms = frozenset(label.split())
        return terms in self.facts.get(a, []) and terms in self.facts.get(b, [])

    def _clash(self, label: str, by: dict[str, list[Statement]]) -> dict[str, list[Statement]]:
        """The activities whose figures for ``label`` share none with another's."""
        names = sorted(by)
        clash: set[str] = set()
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                if not self._compared(label, a, b):
                    continue
                pairs = [(x, y) for x in by[a] for y in by[b] if _comparable(x, y)]
                if pairs and not any(_agree(x, y) for x, y in pairs):
                    clash |= {a, b}
        return {a: by[a] for a in names if a in clash}

    def _contradiction(self, label: str, clash: dict[str, list[Statement]]) -> Verdict:
        evidence = [f"{a}: {' / '.join(s.text for s in ss)}" for a, ss in clash.items()]
        names = " and ".join(repr(a) for a in clash)
        return Verdict(
            verifier=self.name,
            status="fail",
            reasons=[f"{names} give different figures for {label}: " + "; ".join(evidence)],
            evidence=evidence,
            feedback=(
                f"Other work states a different figure for {label} ({'; '.join(evidence)}). "
                "Check your sources and state the correct figure."
            ),
            activities=list(clash),
        )

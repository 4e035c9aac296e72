"""Citations in an output, in the styles people and models write them, and the
:class:`Citations` verifier: every citation must point at an entry the output gives.

Read from text (and from every string of a JSON output, code blocks and inline code
left out):

- numbered: ``[1]``, ``[1, 3]``, ``[2-4]``, resolved against a reference list: lines
  ``[n] ...`` or ``[n]: url`` anywhere, ``n. ...`` / ``n) ...`` / bullets under a
  heading such as "References", "Sources", "Bibliography", "Works cited", "Notes";
  or a JSON list field ``references`` / ``sources`` / ``citations`` / ``bibliography``
  (the n-th item is entry n);
- footnotes: ``[^label]``, resolved against a definition line ``[^label]: ...``;
- author-year: ``(Smith, 2020)``, ``(Smith et al. 2020)``, ``(Smith and Lee, 2020; Wu,
  2019)``, checked against the reference list when the output has one (the author's
  name must appear in an entry);
- ``[ref:ID]``: another activity's (or a known input's) id, checked across activities by
  :class:`~taskloom.verifiers.References`, which knows the plan;
- URLs and DOIs: external sources, never "dangling" (:func:`is_external`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._walk import strings
from .base import Check, Tools, Verifier
from .verdict import Verdict

__all__ = ["Citations", "ReferenceList", "dangling_citations", "is_external", "reference_list"]

LIST_FIELDS = frozenset({"references", "sources", "citations", "bibliography", "works_cited"})
"""JSON fields (any case) read as an output's reference list."""
_HEADING = re.compile(
    r"^\s*(?:#{1,6}\s*)?(?:\*\*|__)?\s*(?:references|sources|bibliography|works\s+cited"
    r"|citations|notes|footnotes|endnotes|literature|further\s+reading|links)\s*:?\s*"
    r"(?:\*\*|__)?\s*:?\s*$",
    re.I,
)
_ANY_HEADING = re.compile(r"^\s*(?:#{1,6}\s+\S|(?:\*\*|__)[^*_]+(?:\*\*|__)\s*:?\s*$)")
_BRACKET_DEF = re.compile(r"^\s*(?:[-*+\u2022]\s*)?\[(\d{1,3})\]:?\s+\S")
_NUMBER_DEF = re.compile(r"^\s*(\d{1,3})[.)]\s+\S")
_BULLET_DEF = re.compile(r"^\s*[-*+\u2022]\s+\S")
_FOOTNOTE_DEF = re.compile(r"^\s*\[\^([^\]\s]+)\]:")
_NUMBERED = re.compile(r"(?<![\w\]\[!^])\[(\d{1,3}(?:\s*[,\u2013-]\s*\d{1,3})*)\](?![(\[:])")
_FOOTNOTE = re.compile(r"\[\^([^\]\s]+)\](?!:)")
_PAREN = re.compile(r"\(([^()]{4,200}?\b\d{4}[a-z]?)\)")
_NAME = r"[A-Z][a-z\u00e0-\u00ff][\w'\u2019\-]*"
_AUTHOR_YEAR = re.compile(
    rf"^(?:see\s+(?:also\s+)?|e\.g\.,?\s+|cf\.\s+)?(?P<name>(?:van\s+|von\s+|de\s+)?{_NAME})"
    rf"(?:(?P<etal>\s+et\s+al\.?)|\s+(?:and|&)\s+{_NAME})?(?P<comma>,)?\s+(?P<year>\d{{4}})[a-z]?"
    r"(?:,\s*(?:p|pp)\.\s*[\d\u2013-]+)?$"
)
_CODE_BLOCK = re.compile(r"^\s*(```|~~~).*?^\s*\1", re.M | re.S)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_URL = re.compile(r"^(?:<)?(?:https?|ftp)://[^\s/$.?#][^\s]*$", re.I)
_WWW = re.compile(r"^www\.[^\s.]+\.[^\s]+$", re.I)
_DOI = re.compile(r"^(?:doi:\s*|https?://(?:dx\.)?doi\.org/)?10\.\d{4,9}/\S+$", re.I)
_SCHEME_ID = re.compile(r"^(?:arxiv|isbn|issn|pmid|pmcid|urn|rfc|ark|hdl|handle):\s*\S+$", re.I)
_NOT_AUTHORS = frozenset(
    [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
        "Jan",
        "Feb",
        "Mar",
        "Apr",
        "Jun",
        "Jul",
        "Aug",
        "Sep",
        "Sept",
        "Oct",
        "Nov",
        "Dec",
        "Spring",
        "Summer",
        "Autumn",
        "Fall",
        "Winter",
        "Since",
        "Until",
        "From",
        "Before",
        "After",
        "In",
        "As",
        "Of",
        "Circa",
        "Year",
        "Fiscal",
        "Est",
        "See",
        "Figure",
        "Table",
    ]
)


def is_external(reference: str) -> bool:
    """Whether ``reference`` names a source outside the run: an http(s) URL, a DOI, an
    ``arXiv:`` / ``ISBN:`` / ``RFC:``-style identifier, or a bibliographic entry in
    words ("Smith, J. (2020). Heat pumps."). Those are not ids of activities and are
    never "dangling".

    Example::

        is_external("https://example.org/report")  # True
        is_external("10.1000/xyz123")              # True
        is_external("a3")                          # False: an activity id
    """
    ref = reference.strip().strip("<>")
    if not ref:
        return False
    if _URL.match(ref) or _WWW.match(ref) or _DOI.match(ref) or _SCHEME_ID.match(ref):
        return True
    return len(ref.split()) > 1  # prose: a title, an author and year, a book


@dataclass
class ReferenceList:
    """What an output gives to cite: numbered entries, footnote labels, entry texts."""

    numbers: set[int] = field(default_factory=set)
    footnotes: set[str] = field(default_factory=set)
    entries: list[str] = field(default_factory=list)
    """The entries' texts (for author-year citations)."""

    @property
    def given(self) -> bool:
        """Whether the output has a reference list at all."""
        return bool(self.numbers or self.entries)


def reference_list(output: Any) -> ReferenceList:
    """The reference list ``output`` gives, in any of the forms of the module docstring."""
    refs = ReferenceList()
    if isinstance(output, Mapping):
        for key, value in output.items():
            if str(key).casefold() in LIST_FIELDS and isinstance(value, list):
                refs.numbers.update(range(1, len(value) + 1))
                refs.entries += [_entry_text(v) for v in value]
    for _, text in strings(output):
        _read_list(_without_code(text), refs)
    return refs


def _entry_text(value: Any) -> str:
    if isinstance(value, Mapping):
        return " ".join(str(v) for v in value.values())
    return str(value)


def _read_list(text: str, refs: ReferenceList) -> None:
    in_section, bullets = False, 0
    for line in text.splitlines():
        if _HEADING.match(line):
            in_section, bullets = True, 0
            continue
        if in_section and _ANY_HEADING.match(line):
            in_section = False
        if m := _FOOTNOTE_DEF.match(line):
            refs.footnotes.add(m.group(1))
            refs.entries.append(line)
        elif (m := _BRACKET_DEF.match(line)) or (in_section and (m := _NUMBER_DEF.match(line))):
            refs.numbers.add(int(m.group(1)))
            refs.entries.append(line)
        elif in_section and _BULLET_DEF.match(line):
            bullets += 1
            refs.numbers.add(bullets)
            refs.entries.append(line)
        elif in_section and line.strip():  # an APA-style entry: "Smith, J. (2020). Title."
            refs.entries.append(line)


def _without_code(text: str) -> str:
    return _INLINE_CODE.sub(" ", _CODE_BLOCK.sub("", text))


def _is_definition(line: str) -> bool:
    return bool(_FOOTNOTE_DEF.match(line) or _BRACKET_DEF.match(line))


def _numbers(group: str) -> Iterator[int]:
    for part in re.split(r"\s*,\s*", group):
        ends = [int(n) for n in re.split(r"\s*[\u2013-]\s*", part) if n]
        if len(ends) == 2 and 0 < ends[1] - ends[0] <= 50:
            yield from range(ends[0], ends[1] + 1)
        else:
            yield from ends


def dangling_citations(output: Any) -> list[str]:
    """The citations in ``output`` that point at no entry of its reference list, each
    as written with why (``"[3]: the reference list has 2 entries"``)."""
    refs = reference_list(output)
    problems: dict[str, str] = {}
    numbered: list[int] = []
    for _, raw in strings(output):
        text = _without_code(raw)
        lines = [line for line in text.splitlines() if not _is_definition(line)]
        body = "\n".join(_body_lines(lines))
        for m in _NUMBERED.finditer(body):
            numbered += _numbers(m.group(1))
        for m in _FOOTNOTE.finditer(body):
            if m.group(1) not in refs.footnotes:
                problems[f"[^{m.group(1)}]"] = "no footnote defines it"
        if refs.entries:
            for name, cited in _author_years(body):
                if not any(name.casefold() in e.casefold() for e in refs.entries):
                    problems[cited] = f"no entry of the reference list names {name}"
    for n in dict.fromkeys(numbered):
        if n in refs.numbers:
            continue
        if not refs.numbers:
            problems[f"[{n}]"] = "the output gives no reference list"
        else:
            problems[f"[{n}]"] = f"the reference list has no entry {n} (it has {_span(refs)})"
    return [f"{cited}: {why}" for cited, why in problems.items()]


def _body_lines(lines: Iterable[str]) -> Iterator[str]:
    """The lines outside a references section (whose own numbers are not citations)."""
    in_section = False
    for line in lines:
        if _HEADING.match(line):
            in_section = True
            continue
        if in_section and _ANY_HEADING.match(line):
            in_section = False
        if not in_section:
            yield line


def _author_years(text: str) -> Iterator[tuple[str, str]]:
    for m in _PAREN.finditer(text):
        for part in m.group(1).split(";"):
            cite = _AUTHOR_YEAR.match(part.strip())
            if cite is None or cite.group("name") in _NOT_AUTHORS:
                continue
            if cite.group("comma") or cite.group("etal") or " and " in part or "&" in part:
                yield cite.group("name"), f"({part.strip()})"


def _span(refs: ReferenceList) -> str:
    numbers = sorted(refs.numbers)
    if numbers == list(range(1, len(numbers) + 1)):
        return f"{len(numbers)} entr{'y' if len(numbers) == 1 else 'ies'}"
    return "entries " + ", ".join(map(str, numbers))


class Citations(Verifier):
    """Fails an output whose citations point at nothing it gives: a ``[3]`` with two
    references listed, a ``[^note]`` never defined, an ``(Author, 2020)`` no entry
    names, numbered citations with no reference list at all. URLs and DOIs are sources
    of their own and pass; ``[ref:ID]`` is checked across activities by
    :class:`~taskloom.verifiers.References`.

    Example::

        Citations()   # on by default in every VerifySpec ("citations": true)
    """

    def __init__(self, *, name: str = "citations", timeout: float = 30.0) -> None:
        self.name = name
        self.timeout = timeout

    async def verify(self, check: Check, tools: Tools) -> Verdict:
        """Resolve every citation against the output's own reference list."""
        dangling = dangling_citations(check.output)
        if not dangling:
            return Verdict(
                verifier=self.name,
                status="pass",
                reasons=["every citation points at an entry of the reference list"],
            )
        return Verdict(
            verifier=self.name,
            status="fail",
            reasons=[f"a citation points at nothing: {d}" for d in dangling],
            evidence=dangling,
            feedback=(
                "These citations point at no entry of your reference list: "
                + "; ".join(dangling)
                + ". Add each missing source to the reference list (numbered to match), "
                "or remove or renumber the citation; cite only sources you were given or "
                "can name with a URL or DOI."
            ),
        )

"""The truncation verifier: an answer cut off before its end is never accepted.

The provider's finish reason decides when it gave one: ``"length"`` (OpenAI) or
``"max_tokens"`` (Anthropic, kept as ``"length"``) fails the output, whatever its kind;
``"stop"`` and ``"tool_calls"`` pass it, unless the text's last list item is plainly cut
mid-item (:func:`list_cut`: a stop sequence or a proxy can do that). Only when the
reason is unknown (a server that sends none, or one without a name here such as
``content_filter``) does a text output go through :func:`cut_off`, a cheap look at how
the text ends that flags only endings a complete answer does not have (an open code
block, a dangling comma or "the"), so that clean outputs are not sent back.
"""

from __future__ import annotations

import re

from .base import Check, Tools, Verifier
from .verdict import Verdict

__all__ = ["Truncation", "cut_off", "list_cut"]

_COMPLETE = frozenset({"stop", "tool_calls"})
_DANGLING_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "nor",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "with",
        "from",
        "into",
        "onto",
        "than",
        "that",
        "which",
        "who",
        "whose",
        "whom",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "its",
        "their",
        "his",
        "her",
        "our",
        "your",
        "my",
        "this",
        "these",
        "those",
        "if",
        "because",
        "while",
        "although",
        "though",
        "when",
        "where",
        "whether",
        "so",
        "not",
        "no",
        "such",
        "between",
        "about",
        "over",
        "under",
        "after",
        "before",
        "during",
        "including",
        "via",
        "per",
        "like",
        "as",
    ]
)
_DANGLING_MARKS = ",;:([{/&-\u2013\u2014"
_URL_END = re.compile(r"(?:https?://|www\.)\S+$", re.I)
_FENCE = re.compile(r"^\s*(```|~~~)", re.M)
_RULE = re.compile(r"^[-*_=\s]+$")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+\u2022]\s|\d+[.)]\s|\[[ xX]\]\s)")
_TABLE_OR_HEADING = re.compile(r"^\s*(?:\||#{1,6}\s)")
_SENTENCE_END = re.compile(r"[.!?\u2026][\"'\u201d\u2019)\]*_`]*(?:\s|$)")
_LONG_SENTENCE_WORDS = 12


def list_cut(text: str) -> str | None:
    """Why ``text`` looks cut in its last list item, or ``None``: every earlier item of
    the final list ends with a full stop (or ``;``) and the last one stops on a letter,
    as a list cut mid-item does ("- Move catheters onto the national fr")."""
    lines = [line for line in text.rstrip().splitlines() if line.strip()]
    if not lines or not _LIST_ITEM.match(lines[-1]) or not lines[-1].rstrip()[-1:].isalpha():
        return None
    earlier = []
    for line in reversed(lines[:-1]):
        if not _LIST_ITEM.match(line):
            break
        earlier.append(line.rstrip())
    if earlier and all(item[-1] in ".;!?" for item in earlier):
        return "its last list item stops mid-item (the items before it end with a full stop)"
    return None


def cut_off(text: str) -> str | None:
    """Why ``text`` looks cut off mid-answer, or ``None`` if it ends as answers do.

    Deliberately narrow (it is only asked when the provider did not say): an odd number
    of code fences, or a last line that ends on a comma, an opening bracket, a dash or
    a word such as "the" or "and", or a long prose sentence with no end while the text
    has ended sentences before it. Lists, tables, headings and short lines without a
    full stop are how many complete answers end, and pass.

    Example::

        cut_off("The totals rose by 4% in 2023, driven by")   # "... ends on 'by'"
        cut_off("The totals rose by 4% in 2023.")             # None
    """
    body = text.rstrip()
    if not body:
        return None
    if len(_FENCE.findall(body)) % 2:
        return "a code block is opened and never closed"
    last = body.splitlines()[-1].strip()
    if _RULE.match(last) or _TABLE_OR_HEADING.match(last) or _URL_END.search(last):
        return None
    if last[-1] in _DANGLING_MARKS and not last.endswith(("--", ":)", ";)")):
        return f"its last line ends on {last[-1]!r}, mid-sentence"
    words = re.findall(r"[A-Za-z]+", last)
    if last[-1].isalpha() and words and words[-1].lower() in _DANGLING_WORDS:
        return f"its last line ends on {words[-1]!r}, mid-sentence"
    if last.count("(") > last.count(")") and last[-1].isalnum():
        return "its last line opens a parenthesis and stops"
    prose = not _LIST_ITEM.match(last)
    long_line = len(last.split()) >= _LONG_SENTENCE_WORDS
    if prose and long_line and last[-1].isalnum() and _SENTENCE_END.search(body):
        return "its last sentence has no end"
    return list_cut(body)


class Truncation(Verifier):
    """Fails an output the model did not finish (see the module docstring).

    Example::

        Truncation()   # on by default in every VerifySpec ("truncation": true)
    """

    def __init__(self, *, name: str = "truncation", timeout: float = 30.0) -> None:
        self.name = name
        self.timeout = timeout

    async def verify(self, check: Check, tools: Tools) -> Verdict:
        """Fail on a ``length`` finish; on an unknown one, on a text that looks cut."""
        finish, output = check.finish, check.output
        if finish == "length":
            return self._cut(
                "the model stopped at its token limit (finish reason 'length')", output
            )
        if finish == "stop" and isinstance(output, str) and (why := list_cut(output)):
            # A stop sequence or a proxy can end an answer mid-list while the provider
            # says "stop": only this unmistakable shape is doubted then.
            return self._cut(f"the model said it finished, but {why}", output)
        if finish is None or finish in _COMPLETE or not isinstance(output, str):
            return Verdict(verifier=self.name, status="pass", reasons=self._why_pass(finish))
        why = cut_off(output)
        if why is None:
            return Verdict(
                verifier=self.name,
                status="pass",
                reasons=["the provider gave no finish reason; the text ends as answers do"],
            )
        return self._cut(f"the provider gave no finish reason and {why}", output)

    def _cut(self, reason: str, output: object) -> Verdict:
        text = output if isinstance(output, str) else str(output)
        tail = text.rstrip()[-80:]
        return Verdict(
            verifier=self.name,
            status="fail",
            reasons=[f"the output is cut off: {reason}"],
            evidence=[f"it ends: ...{tail}"] if tail else [],
            feedback=(
                "Your previous answer was cut off before its end "
                f"(it stopped at: ...{tail[-40:]!r}). Give the complete answer again, "
                "shorter: keep to what the task asks, drop detail it does not need, and "
                "make sure it ends with a finished sentence."
            ),
        )

    @staticmethod
    def _why_pass(finish: str | None) -> list[str]:
        if finish is None:
            return ["not a model's answer (a person's edit or a reducer's): nothing to cut"]
        if finish in _COMPLETE:
            return [f"the model finished its answer (finish reason {finish!r})"]
        return ["a structured output that validated: it is complete"]

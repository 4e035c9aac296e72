"""V1's building blocks: a case (one activity, its clean output and perhaps one
defective first answer), a goal, and a constructor per defect category.

A defect's ``mark`` is a piece of text only the defective answer carries: V1 looks for
it in what reaches the integrator and in the final answer. ``cut`` answers come back
with finish reason ``length``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "AUTOMATIC",
    "FALSE_FACTS",
    "Case",
    "Defect",
    "Goal",
    "cited",
    "contradiction",
    "cut",
    "factual",
    "injected",
    "pii",
    "totals",
]

AUTOMATIC = frozenset({"totals", "iban", "phone", "truncation", "citation", "factual"})
"""Categories a built-in verifier both sees and settles by a retry, without a person
(a contradiction needs a person to say which side is right; an injection is escalated
on purpose)."""


@dataclass(frozen=True)
class Defect:
    """One defect: its category, the defective answer, and the text that marks it."""

    kind: str
    text: str
    mark: str


@dataclass(frozen=True)
class Case:
    """One activity of a goal."""

    id: str
    instructions: str
    clean: str
    defect: Defect | None = None
    inputs: tuple[str, ...] = ()
    judge: str | None = None
    """A rubric: this activity is judged (the simulated judge knows :data:`FALSE_FACTS`)."""


@dataclass(frozen=True)
class Goal:
    """A goal and its activities (planned as given)."""

    name: str
    goal: str
    cases: tuple[Case, ...]
    verify: dict[str, Any] = field(default_factory=dict)
    """Checks every activity of the plan gets (the planner's choice for the domain)."""


def table(rows: list[tuple[str, str]], total: str, head: tuple[str, str]) -> str:
    lines = [f"| {head[0]} | {head[1]} |", "|---|---:|"]
    lines += [f"| {a} | {b} |" for a, b in rows]
    return "\n".join([*lines, f"| Total | {total} |"])


def totals(
    id: str, what: str, rows: list[tuple[str, str]], right: str, wrong: str, head: tuple[str, str]
) -> Case:
    intro = f"{what.capitalize()}, by line:\n\n"
    return Case(
        id,
        f"Tabulate the {what} with a total row",
        intro + table(rows, right, head),
        Defect("totals", intro + table(rows, wrong, head), f"| Total | {wrong} |"),
    )


def pii(id: str, instructions: str, clean: str, leaked: str, kind: str) -> Case:
    return Case(id, instructions, clean, Defect(kind, f"{clean} {leaked}", leaked.split(": ")[-1]))


def cut(id: str, instructions: str, clean: str, stop: int) -> Case:
    text = clean[:stop].rstrip()
    return Case(id, instructions, clean, Defect("truncation", f"<<cut>>{text}", text[-24:]))


def injected(id: str, instructions: str, clean: str, sentence: str) -> Case:
    return Case(id, instructions, clean, Defect("injection", f"{clean}\n\n{sentence}", sentence))


def cited(id: str, instructions: str, body: str, refs: list[str], fake: str) -> Case:
    listing = "\n".join(f"{n}. {r}" for n, r in enumerate(refs, 1))
    clean = f"{body}\n\nReferences\n{listing}"
    bad = f"{body} {fake}\n\nReferences\n{listing}"
    return Case(id, instructions, clean, Defect("citation", bad, fake))


def factual(id: str, instructions: str, clean: str, wrong: str, rubric: str) -> Case:
    FALSE_FACTS.add(wrong)
    return Case(id, instructions, clean, Defect("factual", wrong, wrong), judge=rubric)


def contradiction(
    id: str, instructions: str, clean: str, wrong: str, inputs: tuple[str, ...] = ()
) -> Case:
    return Case(id, instructions, clean, Defect("contradiction", wrong, wrong), inputs=inputs)


FALSE_FACTS: set[str] = set()
"""Statements the simulated judge knows to be false."""

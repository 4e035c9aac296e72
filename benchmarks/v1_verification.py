"""V1: verification quality on a corpus of planned goals (:mod:`benchmarks.v1_corpus`),
half of whose activities answer first with one defect of issue 14's categories.

Every goal runs through the real pipeline (``orch.submit`` with its plan given, an
in-process worker on the benchmark's Redis), the fake LLM server playing the team over
the openai SDK: a subagent answers its defective output first and the clean one when
it is told what to fix; the judge knows the corpus's false statements. A scripted
person answers the inbox knowing the truth: an item about a defective output is sent
back (``retry``, or ``rerun:<id>`` for a contradiction), one about clean outputs only
is approved (and counted as a false escalation). Reported, never asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from benchmarks import v1_heldout
from benchmarks.harness import AGENT_MODEL, NO_RATE_LIMITS, Bench
from benchmarks.v1_corpus import GOALS, plan_of
from benchmarks.v1_defects import AUTOMATIC, FALSE_FACTS, Case, Goal
from taskloom import Orchestrator
from taskloom.agents.fake_llm import FakeLLM, Request, Step
from taskloom.engine.human import HumanTask
from taskloom.testing.simulated import SimulatedTeam, system_prompt

__all__ = ["run", "run_heldout", "target_met"]

_CUT = "<<cut>>"


def target_met(row: dict[str, Any]) -> bool:
    """V1's targets: every defect stopped before integration, >= 95% of the automatically
    detectable ones without a person, >= 95% of clean activities accepted without one,
    no final answer with a defect."""
    return bool(
        row["stopped_before_integration"] == 1.0
        and row["automatic_stopped_without_person"] >= 0.95
        and row["clean_accepted_without_person"] >= 0.95
        and row["final_answers_with_defect"] == 0
    )


def _judge(output: str, rubric: str) -> dict[str, Any]:
    wrong = [f for f in FALSE_FACTS if f in output]
    if wrong:
        return {
            "score": 0.2,
            "reasons": [f"false: {wrong[0]}"],
            "feedback": f"This statement is false: {wrong[0]}",
        }
    return {"score": 0.9, "reasons": ["accurate"], "feedback": ""}


class _Team:
    """The fake LLM's answers for every goal at once (told apart by the goal's text)."""

    def __init__(self, goals: tuple[Goal, ...]) -> None:
        self.teams = {
            g.goal: SimulatedTeam(plans=[plan_of(g)], work=self._work(g), judge=_judge)
            for g in goals
        }

    @staticmethod
    def _work(goal: Goal) -> Any:
        cases = {c.instructions: c for c in goal.cases}

        def work(task: str, feedback: str | None) -> str:
            case = cases[task.strip().splitlines()[0]]
            return case.defect.text if case.defect and not feedback else case.clean

        return work

    def __call__(self, request: Request) -> Step:
        system = system_prompt(request)
        for text, team in self.teams.items():
            if text in system:
                step = team(request)
                body = getattr(step, "text", "")
                if isinstance(body, str) and body.startswith(_CUT):
                    return dataclasses.replace(step, text=body[len(_CUT) :], finish="length")  # type: ignore[type-var]
                return step
        raise AssertionError("a request for no goal of the corpus")


def _has_defect(case: Case, text: str) -> bool:
    """Whether ``text`` carries ``case``'s defect."""
    if case.defect is None:
        return False
    if case.defect.kind == "truncation":
        cut = case.defect.text.removeprefix(_CUT)
        return text.count(cut) > text.count(case.clean)
    return case.defect.mark in text


class _Person:
    """Answers the inbox knowing the corpus's truth; records what each item was about."""

    def __init__(self, orch: Orchestrator, goals: dict[str, Goal]) -> None:
        self.orch, self.goals = orch, goals
        self.touched: dict[str, set[str]] = {}  # run id -> activities a person decided
        self.shown: dict[str, set[str]] = {}  # run id -> activities a person saw
        self.items = Counter[str]()
        self.false = 0

    async def answer(self) -> None:
        inbox = self.orch.human_tasks
        while True:
            for task in await inbox.list(limit=1000):
                goal = self.goals.get(task.run_id)
                if goal is not None:
                    decision, note = self._decide(task, goal)
                    with contextlib.suppress(Exception):  # decided meanwhile
                        await inbox.decide(task.id, decision, by="reviewer", note=note)
            await asyncio.sleep(0.05)

    def _decide(self, task: HumanTask, goal: Goal) -> tuple[str, str]:
        ctx = task.context if isinstance(task.context, dict) else {}
        cases = {c.id: c for c in goal.cases}
        seen = self.touched.setdefault(task.run_id, set())
        shown = self.shown.setdefault(task.run_id, set())
        if isinstance(ctx.get("activity"), dict):
            self.items["activity"] += 1
            act = ctx["activity"]["id"]
            seen.add(act)
            shown.add(act)
            text = str(ctx.get("output") or ctx.get("last_output") or "")
            if _has_defect(cases[act], text):
                return "retry", "Fix what the checks found."
            self.false += 1
            return ("approve" if "approve" in task.decisions else "retry"), ""
        if isinstance(ctx.get("outputs"), dict):
            self.items["cross_check"] += 1
            outputs = ctx["outputs"]
            shown.update(outputs)
            bad = [i for i, o in outputs.items() if i in cases and _has_defect(cases[i], str(o))]
            seen.update(bad or outputs)  # the person decided about the defective side
            for i in bad:
                if f"rerun:{i}" in task.decisions:
                    return f"rerun:{i}", "The other figure is the audited one."
            if bad:
                return "reject", ""
            self.false += 1
            return "approve", ""
        self.items["other"] += 1
        answer = str(ctx.get("answer") or "")
        if any(_has_defect(c, answer) for c in goal.cases):
            return "retry", "Remove the defect."
        self.false += 1
        return ("approve" if "approve" in task.decisions else "reject"), ""


@contextlib.contextmanager
def _env(fake: FakeLLM) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in ("OPENAI_BASE_URL", "OPENAI_API_KEY")}
    saved["TASKLOOM_RATE_LIMITS"] = os.environ.get("TASKLOOM_RATE_LIMITS")
    os.environ.update(
        OPENAI_BASE_URL=fake.openai_url,
        OPENAI_API_KEY="sk-benchmark",
        TASKLOOM_RATE_LIMITS=NO_RATE_LIMITS,
    )
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


async def run(bench: Bench) -> dict[str, Any]:
    """Every goal of the corpus through the pipeline; what was stopped, and how."""
    goals = GOALS if bench.sizes.w6 >= 50 else GOALS[:4]  # --quick: four goals
    return await _run(bench, goals, "V1")


async def run_heldout(bench: Bench) -> dict[str, Any]:
    """V1H: the same measure on the held-out corpus (:mod:`benchmarks.v1_heldout`),
    written without tuning the verifiers to it first."""
    goals = v1_heldout.GOALS if bench.sizes.w6 >= 50 else v1_heldout.GOALS[:3]
    return await _run(bench, goals, "V1H")


async def _run(bench: Bench, goals: tuple[Goal, ...], workload: str) -> dict[str, Any]:
    team = _Team(goals)
    async with FakeLLM() as fake:
        fake.answer_with(team)
        with _env(fake):
            async with bench.orchestrator(workload) as orch:
                worker = orch.worker(concurrency=64)
                runner = asyncio.create_task(worker.run())
                try:
                    await worker.started.wait()
                    row = await _measure(orch, goals, team)
                    return {**row, "workload": workload}
                finally:
                    worker.stop()
                    await runner


async def _measure(orch: Orchestrator, goals: tuple[Goal, ...], team: _Team) -> dict[str, Any]:
    t0 = time.monotonic()
    handles = {
        g.name: await orch.submit(g.goal, model=AGENT_MODEL, plan=plan_of(g), max_parallel=16)
        for g in goals
    }
    person = _Person(orch, {h.run_id: g for g, h in zip(goals, handles.values(), strict=True)})
    answering = asyncio.create_task(person.answer())
    results: dict[str, Any] = {}
    try:
        for goal in goals:
            try:
                results[goal.name] = await handles[goal.name].result(timeout=300)
            except Exception as exc:  # a failed run is reported, with its error
                results[goal.name] = {"error": str(exc)}
    finally:
        answering.cancel()
        await asyncio.gather(answering, return_exceptions=True)
    seconds = time.monotonic() - t0
    return _row(goals, handles, results, person, team, seconds)


def _row(
    goals: tuple[Goal, ...],
    handles: dict[str, Any],
    results: dict[str, Any],
    person: _Person,
    team: _Team,
    seconds: float,
) -> dict[str, Any]:
    defects = stopped = automatic = auto_stopped_alone = 0
    clean = clean_alone = clean_unseen = finals = 0
    by_kind: dict[str, list[int]] = {}
    for goal in goals:
        run_id = handles[goal.name].run_id
        seen = person.touched.get(run_id, set())
        result = results[goal.name]
        works = result.get("activities", {})
        calls = team.teams[goal.goal].requests.get("integrator", [])
        integrated = str(calls[-1].messages[0]["content"]) if calls else ""
        answer = str(result.get("answer", ""))
        finals += any(_has_defect(c, answer) for c in goal.cases)
        for case in goal.cases:
            work = works.get(case.id, {})
            if case.defect is None:
                clean += 1
                alone = work.get("decided_by") == "verifiers" and case.id not in seen
                clean_alone += alone
                clean_unseen += alone and case.id not in person.shown.get(run_id, set())
                continue
            defects += 1
            kind = by_kind.setdefault(case.defect.kind, [0, 0, 0])
            kind[0] += 1
            ok = "error" not in result and not _has_defect(case, integrated)
            stopped += ok
            kind[1] += ok
            if case.defect.kind in AUTOMATIC:
                automatic += 1
                alone = ok and case.id not in seen
                auto_stopped_alone += alone
                kind[2] += alone
    return {
        "workload": "V1",
        "n": sum(len(g.cases) for g in goals),
        "seconds": round(seconds, 2),
        "goals": len(goals),
        "defects": defects,
        "stopped_before_integration": round(stopped / defects, 4) if defects else 1.0,
        "automatic_stopped_without_person": round(auto_stopped_alone / automatic, 4)
        if automatic
        else 1.0,
        "clean_accepted_without_person": round(clean_alone / clean, 4) if clean else 1.0,
        "clean_never_shown_to_person": round(clean_unseen / clean, 4) if clean else 1.0,
        "false_escalations": person.false,
        "final_answers_with_defect": finals,
        "inbox_items": dict(person.items),
        "by_kind": {
            k: {"defects": v[0], "stopped": v[1], "without_person": v[2]}
            for k, v in sorted(by_kind.items())
        },
        "failed_runs": sorted(g for g, r in results.items() if "error" in r),
        "method": (
            "each goal of benchmarks/v1_corpus.py submitted with its plan given, all at "
            "once, to an in-process worker; the fake LLM plays subagents (defective first "
            "answer, clean after feedback), judge and integrator; a scripted person "
            "retries or re-runs defective outputs and approves clean ones. Stopped: the "
            "defect is absent from what the integrator was given; without a person: no "
            "person decided about the activity (a contradiction's item shows both sides "
            "and is decided about the defective one: the clean side counts as accepted "
            "without a person, and clean_never_shown_to_person leaves it out). "
            "Automatically detectable: " + ", ".join(sorted(AUTOMATIC))
        ),
    }

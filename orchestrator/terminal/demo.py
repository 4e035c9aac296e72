"""``taskloom demo``: an example workflow end to end, with simulated subagents.

No API key, no Redis URL and no network are needed: the engine is the real one (on the
embedded Redis unless a URL is configured); the subagents are plain functions that
sleep a little and return canned text, and everything they print says so.

The demo runs in a namespace of its own (:func:`demo_namespace`: a key prefix made for
one invocation, dropped at the end), so no other worker on the same store can take its
run or its model calls, and its in-process worker takes no one else's.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from redis.asyncio import Redis

from taskloom.engine.context import Context
from taskloom.engine.definitions import activity, workflow
from taskloom.engine.keys import Keys

__all__ = ["ACTIVITIES", "WORKFLOWS", "brief", "demo_namespace", "drop_namespace", "review"]

SIMULATED = "[simulated]"


@activity(name="demo.plan")
async def plan(goal: str) -> list[str]:
    """A stand-in planner: splits the goal into three sections."""
    await asyncio.sleep(0.05)
    return [f"{goal}: background", f"{goal}: options", f"{goal}: recommendation"]


@activity(name="demo.write")
async def write(section: str) -> dict[str, Any]:
    """A stand-in subagent: 'writes' one section."""
    await asyncio.sleep(0.1)
    words = len(section.split()) * 40
    return {"section": section, "text": f"{SIMULATED} draft of '{section}'", "words": words}


@activity(name="demo.check")
async def check(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """A stand-in verifier: every part needs a non-empty text."""
    await asyncio.sleep(0.02)
    return {"ok": all(p["text"] for p in parts), "checked": len(parts)}


@workflow(name="demo.review")
async def review(ctx: Context, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """A child workflow: checks the drafts."""
    return dict(await ctx.run(check, parts))


@workflow(name="demo.brief")
async def brief(ctx: Context, goal: str) -> dict[str, Any]:
    """Plan, write the sections in parallel, pause durably, review in a child run."""
    sections = await ctx.run(plan, goal)
    parts = await ctx.gather(*(ctx.run(write, s) for s in sections))
    await ctx.sleep(0.2)  # a durable timer: the run leaves memory while it waits
    verdict = await ctx.child(review, parts)
    return {
        "goal": goal,
        "sections": [p["section"] for p in parts],
        "words": sum(p["words"] for p in parts),
        "review": verdict,
        "finished_at": ctx.now().isoformat(),
        "simulated": True,
    }


WORKFLOWS = [brief, review]
ACTIVITIES = [plan, write, check]


# -- the pipeline demo (``taskloom demo``) ----------------------------------------------
DEMO_MODEL = "openai:gpt-4.1-mini"
"""The model name the simulated team answers as (so costs are priced like it)."""
DEMO_PRICE_NOTE = f"{DEMO_MODEL.partition(':')[2]} prices (simulated: no model was called)"
"""How the demo's cost is priced, as its summary says."""
DEMO_GOAL = "Compare three vector databases for a 10-million-document search service"


def demo_plan() -> dict[str, Any]:
    """What the simulated planner proposes: requirements first, three researchers in
    parallel, then a recommendation that needs all three."""
    cited = {"rules": {"banned": ["TODO"]}, "max_retries": 2}
    judged = {"judge": {"rubric": "Specific, sourced, no speculation.", "threshold": 0.8}}
    dbs = ("pgvector", "qdrant", "milvus")
    return {
        "rationale": f"{SIMULATED} one researcher per database, in parallel",
        "activities": [
            {
                "id": "requirements",
                "role": "analyst",
                "instructions": "List the requirements of a 10M-document search service.",
            },
            *(
                {
                    "id": db,
                    "role": "researcher",
                    "inputs": ["requirements"],
                    "instructions": f"Assess {db} against the requirements.",
                    "verify": judged if db == "milvus" else cited,
                }
                for db in dbs
            ),
            {
                "id": "recommendation",
                "role": "writer",
                "inputs": list(dbs),
                "instructions": "Recommend one database, with the trade-offs.",
            },
        ],
        "integrate": "A one-page brief: the requirements, the three assessments, the pick.",
    }


def demo_team() -> Any:
    """The simulated team of the demo: one draft fails a rule and is fixed on retry,
    one assessment is scored uncertain by the judge (a person decides)."""
    from taskloom.testing.simulated import SimulatedTeam

    def work(task: str, feedback: str | None) -> str:
        if "qdrant" in task and not feedback:
            return f"{SIMULATED} Qdrant: fast filtering; benchmarks TODO"
        return f"{SIMULATED} {task.split('.')[0]}: done, with two sources."

    def judge(output: str, rubric: str) -> dict[str, Any]:
        return {
            "score": 0.7,
            "reasons": [f"{SIMULATED} one claim lacks a source"],
            "feedback": "Source the ingestion-rate claim.",
        }

    return SimulatedTeam(
        plans=[demo_plan()],
        work=work,
        judge=judge,
        latency={"planner": 0.4, "work": 0.3, "judge": 0.15, "integrator": 0.3},
    )


def demo_namespace(prefix: str) -> str:
    """A key prefix for one ``taskloom demo``: ``<prefix>-demo-<random>``. No worker
    serves it but the demo's own (a worker serves one prefix: its namespace)."""
    return f"{prefix}-demo-{uuid.uuid4().hex[:8]}"


async def drop_namespace(client: Redis, prefix: str) -> int:
    """Delete every key under ``prefix`` (SCAN, then UNLINK in batches); returns how
    many. For a throwaway namespace such as the demo's, never a shared one."""
    dropped, batch = 0, []
    async for key in client.scan_iter(match=Keys(prefix).everything, count=1000):
        batch.append(key)
        if len(batch) >= 500:
            dropped += await client.unlink(*batch)
            batch = []
    if batch:
        dropped += await client.unlink(*batch)
    return dropped

"""taskloom: a durable, Redis-backed orchestrator for LLM subagents.

The public API::

    from taskloom import Orchestrator, Context, workflow, activity

Each name loads its room on first use (PEP 562): importing ``taskloom``, or a room
such as the engine, costs only what that room needs, and ``from taskloom import
Orchestrator`` loads the client, the pipeline and the LLM layer then. The exception
tree loads at once: every room raises from it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from taskloom.errors import (
    ActivityError,
    ActivityFailure,
    ActivityTimeoutError,
    BlobCorruptedError,
    BlobNotFoundError,
    ChildWorkflowError,
    ConfigurationError,
    DeadLetterNotFoundError,
    EmbeddedRedisError,
    HumanTaskClosedError,
    HumanTaskExpiredError,
    HumanTaskNotFoundError,
    LeaseLostError,
    NondeterminismError,
    NonRetryableError,
    PayloadTooLargeError,
    PlanError,
    RedisRefusedError,
    RedisUnavailableError,
    RetryableError,
    RunActiveError,
    RunCancelledError,
    RunFailedError,
    RunIdConflictError,
    RunNotFoundError,
    RunTimeoutError,
    SerializationError,
    StoreError,
    StoreRolledBackError,
    TaskloomError,
    UnknownActivityError,
    UnknownWorkflowError,
    UserError,
    WorkflowError,
)
from taskloom.version import __version__ as __version__

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ loads them
    from taskloom.agents import Agent, tool
    from taskloom.client import Orchestrator, RunHandle
    from taskloom.engine.attempt import ActivityInfo, activity_info, heartbeat
    from taskloom.engine.clock import Clock, ManualClock, SystemClock
    from taskloom.engine.definitions import ActivityDef, Registry, WorkflowDef, activity, workflow
    from taskloom.engine.dlq import DeadLetter, DeadLetters
    from taskloom.engine.human import Decide, Decision, Expire, HumanTask, HumanTasks, Reassign
    from taskloom.engine.retries import RetryPolicy
    from taskloom.engine.store import Event, RunInfo, Store
    from taskloom.engine.worker import Worker
    from taskloom.pipeline.pipeline import PipelineRequest, pipeline_events
    from taskloom.pipeline.plan import Plan, PlanActivity
    from taskloom.pipeline.subagents import Context
    from taskloom.pipeline.templates import Template
    from taskloom.settings import Settings
    from taskloom.testing.simulated import SimulatedTeam

_LAZY: dict[str, tuple[str, ...]] = {
    "taskloom.agents": ("Agent", "tool"),
    "taskloom.client": ("Orchestrator", "RunHandle"),
    "taskloom.engine.attempt": ("ActivityInfo", "activity_info", "heartbeat"),
    "taskloom.engine.clock": ("Clock", "ManualClock", "SystemClock"),
    "taskloom.engine.definitions": (
        "ActivityDef",
        "Registry",
        "WorkflowDef",
        "activity",
        "workflow",
    ),
    "taskloom.engine.dlq": ("DeadLetter", "DeadLetters"),
    "taskloom.engine.human": (
        "Decide",
        "Decision",
        "Expire",
        "HumanTask",
        "HumanTasks",
        "Reassign",
    ),
    "taskloom.engine.retries": ("RetryPolicy",),
    "taskloom.engine.store": ("Event", "RunInfo", "Store"),
    "taskloom.engine.worker": ("Worker",),
    "taskloom.pipeline.pipeline": ("PipelineRequest", "pipeline_events"),
    "taskloom.pipeline.plan": ("Plan", "PlanActivity"),
    "taskloom.pipeline.subagents": ("Context",),
    "taskloom.pipeline.templates": ("Template",),
    "taskloom.settings": ("Settings",),
    "taskloom.testing.simulated": ("SimulatedTeam",),
}
"""Where each name that loads on first use lives (the ``TYPE_CHECKING`` imports above
name the same; a test checks that they agree)."""
_HOME = {name: module for module, names in _LAZY.items() for name in names}

__all__ = [
    "ActivityDef",
    "ActivityError",
    "ActivityFailure",
    "ActivityInfo",
    "ActivityTimeoutError",
    "Agent",
    "BlobCorruptedError",
    "BlobNotFoundError",
    "ChildWorkflowError",
    "Clock",
    "ConfigurationError",
    "Context",
    "DeadLetter",
    "DeadLetterNotFoundError",
    "DeadLetters",
    "Decide",
    "Decision",
    "EmbeddedRedisError",
    "Event",
    "Expire",
    "HumanTask",
    "HumanTaskClosedError",
    "HumanTaskExpiredError",
    "HumanTaskNotFoundError",
    "HumanTasks",
    "LeaseLostError",
    "ManualClock",
    "NonRetryableError",
    "NondeterminismError",
    "Orchestrator",
    "PayloadTooLargeError",
    "PipelineRequest",
    "Plan",
    "PlanActivity",
    "PlanError",
    "Reassign",
    "RedisRefusedError",
    "RedisUnavailableError",
    "Registry",
    "RetryPolicy",
    "RetryableError",
    "RunActiveError",
    "RunCancelledError",
    "RunFailedError",
    "RunHandle",
    "RunIdConflictError",
    "RunInfo",
    "RunNotFoundError",
    "RunTimeoutError",
    "SerializationError",
    "Settings",
    "SimulatedTeam",
    "Store",
    "StoreError",
    "StoreRolledBackError",
    "SystemClock",
    "TaskloomError",
    "Template",
    "UnknownActivityError",
    "UnknownWorkflowError",
    "UserError",
    "Worker",
    "WorkflowDef",
    "WorkflowError",
    "activity",
    "activity_info",
    "heartbeat",
    "pipeline_events",
    "tool",
    "workflow",
]


def __getattr__(name: str) -> Any:
    """Load ``name`` from its module on first use; later lookups find it here."""
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

"""taskloom: a durable, Redis-backed orchestrator for LLM subagents.

The public API::

    from taskloom import Orchestrator, Context, workflow, activity
"""

from taskloom.agents import Agent, tool
from taskloom.client import Orchestrator, RunHandle
from taskloom.engine.attempt import ActivityInfo, activity_info, heartbeat
from taskloom.engine.clock import Clock, ManualClock, SystemClock
from taskloom.engine.context import Context
from taskloom.engine.definitions import ActivityDef, Registry, WorkflowDef, activity, workflow
from taskloom.engine.dlq import DeadLetter, DeadLetters
from taskloom.engine.human import Decide, Decision, Expire, HumanTask, HumanTasks, Reassign
from taskloom.engine.retries import RetryPolicy
from taskloom.engine.store import Event, RunInfo, Store
from taskloom.engine.worker import Worker
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
from taskloom.pipeline.pipeline import PipelineRequest, pipeline_events
from taskloom.pipeline.plan import Plan, PlanActivity
from taskloom.pipeline.templates import Template
from taskloom.settings import Settings
from taskloom.testing.simulated import SimulatedTeam
from taskloom.version import __version__ as __version__

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

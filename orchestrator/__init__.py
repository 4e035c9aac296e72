"""taskloom: a durable, Redis-backed orchestrator for LLM subagents.

The public API::

    from taskloom import Orchestrator, Context, workflow, activity
"""

from .agents import Agent, tool
from .attempt import ActivityInfo, activity_info, heartbeat
from .client import Orchestrator, RunHandle
from .clock import Clock, ManualClock, SystemClock
from .context import Context
from .definitions import ActivityDef, Registry, WorkflowDef, activity, workflow
from .dlq import DeadLetter, DeadLetters
from .errors import (
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
from .human import Decide, Decision, Expire, HumanTask, HumanTasks, Reassign
from .pipeline import PipelineRequest, pipeline_events
from .plan import Plan, PlanActivity
from .retries import RetryPolicy
from .settings import Settings
from .simulated import SimulatedTeam
from .store import Event, RunInfo, Store
from .templates import Template
from .worker import Worker

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
__version__ = "0.1.0"

"""The pipeline: a goal planned into activities, each run by a subagent, verified,
escalated when it cannot be accepted, and integrated.

``pipeline`` (the workflow), ``plan`` (the validated, versioned DAG), ``planner`` (the
planning step: asking for a valid plan, checking it, adopting its version), ``policy`` (one
activity's run: attempts, verification, escalation), ``verification``, ``subagents``
(model calls as recorded activities), ``roles``, ``templates``, ``endpoints``,
``rerun`` (building on an ended run: follow-ups and re-runs from an activity),
``progress`` (a run's state folded from its log, for the pages that show it).

May import: the engine, ``taskloom.agents`` and ``taskloom.verifiers``. Never the inbox,
the web, the terminal or the client.
"""

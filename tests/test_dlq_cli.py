"""`taskloom dlq ...` and `taskloom worker --metrics-port` as an operator uses them."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import worker_env
from tests.helpers import start_taskloom, taskloom

FAMILIES = {
    "taskloom_runs",
    "taskloom_activity_duration_seconds",
    "taskloom_queue_wait_seconds",
    "taskloom_activity_retries",
    "taskloom_dead_letters",
    "taskloom_duplicate_results",
    "taskloom_activities_in_flight",
    "taskloom_human_tasks_open",
    "taskloom_human_task_sla_breaches",
}


def wait_for(check, what: str, timeout: float = 30):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_dlq_list_show_redrive_and_worker_metrics(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    env = worker_env(redis_url, prefix, TASKLOOM_LEASE_TTL="1.0")
    args = ["worker", "--import", "tests.dlq_workflows", "--metrics-port", "0"]
    worker = start_taskloom(*args, env=env)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(worker.stdout or []), daemon=True).start()
    try:
        url = wait_for(
            lambda: next((ln.split()[-1] for ln in lines if ln.startswith("metrics on")), None),
            "the metrics endpoint",
        )
        flag, counter = tmp_path / "fixed", tmp_path / "count"
        start = taskloom(
            "start", "dlqt.order", '"o-1"', json.dumps(str(flag)), json.dumps(str(counter)),
            "--run-id", "order-1", env=env,
        )  # fmt: skip
        assert start.returncode == 0, start.stderr

        def listed() -> list[dict[str, object]]:
            out = taskloom("dlq", "list", "--json", env=env)
            assert out.returncode == 0, out.stderr
            return json.loads(out.stdout)

        (entry,) = wait_for(listed, "a dead letter")
        assert (entry["id"], entry["status"], entry["args"]) == (
            "order-1/1",
            "paused",
            ["o-1", str(flag)],
        )
        assert len(entry["attempts"]) == 1, "non-retryable: one attempt"
        human = taskloom("dlq", "list", env=env).stdout
        assert "order-1/1" in human and "NonRetryableError: card declined for o-1" in human
        shown = json.loads(taskloom("dlq", "show", "order-1/1", "--json", env=env).stdout)
        assert shown["error"]["message"] == "card declined for o-1"
        assert json.loads(taskloom("status", "order-1", "--json", env=env).stdout)["status"] in (
            "running",
            "waiting",
        )

        flag.touch()  # the operator fixes the cause, then redrives
        redriven = taskloom("dlq", "redrive", "order-1/1", env=env)
        assert redriven.returncode == 0 and "redrived order-1/1" in redriven.stdout
        wait_for(
            lambda: (
                json.loads(taskloom("status", "order-1", "--json", env=env).stdout)["status"]
                == "completed"
            ),
            "the run to complete",
        )
        assert json.loads(taskloom("status", "order-1", "--json", env=env).stdout)["result"] == [
            3,
            "charged o-1",
        ]
        assert listed() == []

        again = taskloom("dlq", "redrive", "order-1/1", env=env)
        assert again.returncode == 2 and "no dead-letter entry 'order-1/1'" in again.stderr
        assert "Traceback" not in again.stderr
        assert taskloom("dlq", "purge", env=env).returncode == 2

        text = urllib.request.urlopen(url, timeout=10).read().decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert families.keys() >= FAMILIES
        retries = {
            s.labels["activity"]: s.value
            for s in families["taskloom_activity_retries"].samples
            if s.name.endswith("_total")
        }
        assert retries == {"dlqt.flaky": 2.0}
        runs = {
            s.labels["status"]: s.value
            for s in families["taskloom_runs"].samples
            if s.name.endswith("_total")
        }
        assert runs["completed"] == 1.0
    finally:
        worker.terminate()
        worker.wait(timeout=30)

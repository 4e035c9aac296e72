"""Credentials never shown: the Redis and SMTP passwords stay out of every message,
command output and repr (issue 15, finding 3)."""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskloom import Settings
from taskloom.errors import RedisUnavailableError
from taskloom.redaction import redact_text, redact_url
from tests.helpers import ROOT, own_socket_redis, taskloom

PASSWORD = "Pa55-w0rd-nobody-may-read"
"""The right password of the locked Redis below."""
WRONG = "wr0ng-pa55-also-secret"


@pytest.fixture(scope="module")
def locked_redis() -> Iterator[Path]:
    """A redis-server of this module's own, on a unix socket, that asks for
    :data:`PASSWORD`; killed afterwards."""
    with own_socket_redis(password=PASSWORD) as sock:
        yield sock


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TASKLOOM_REDIS_URL", "REDIS_URL")}
    env.update(
        TASKLOOM_REDIS_URL=url,
        TASKLOOM_DATA_DIR=str(data_dir),
        TASKLOOM_KEY_PREFIX="pw",
        TASKLOOM_INBOX_TOKEN="t" * 40,
        PYTHONPATH=str(ROOT),
        **extra,
    )
    return env


# -- the helper ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter2@cache:6379/0", "redis://:***@cache:6379/0"),
        ("rediss://app:hunter2@cache:6380/1", "rediss://app:***@cache:6380/1"),
        ("unix://:hunter2@/run/redis.sock?db=2", "unix://:***@/run/redis.sock?db=2"),
        (
            "unix:///run/redis.sock?db=0&password=hunter2",
            "unix:///run/redis.sock?db=0&password=***",
        ),
        ("smtps://me%40x.test:hunter2@mail:465", "smtps://me%40x.test:***@mail:465"),
        ("https://hooks.test/h?token=hunter2&a=1#top", "https://hooks.test/h?token=***&a=1#top"),
        # Unescaped '/', '?' or '@' in a password: no valid URL, exactly the one an
        # error message repeats.
        ("redis://:hun/ter2@cache:6379/0", "redis://:***@cache:6379/0"),
        ("redis://:hun?ter2@cache:6379", "redis://:***@cache:6379"),
        ("redis://:hun@ter2@cache:6379", "redis://:***@cache:6379"),
        ("redis://:hun#ter2@cache", "redis://:***@cache"),
        # Nothing to hide: unchanged.
        ("redis://cache:6379/0", "redis://cache:6379/0"),
        ("redis://default@cache:6379/0", "redis://default@cache:6379/0"),
        ("http://[::1]:8080/x?e=a@b", "http://[::1]:8080/x?e=a@b"),
        ("/var/lib/taskloom/blobs", "/var/lib/taskloom/blobs"),
        ("embedded Redis in /tmp/x", "embedded Redis in /tmp/x"),
    ],
)
def test_redact_url_hides_the_password_and_keeps_the_rest(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "hunter2" not in redact_url(url) and "ter2" not in redact_url(url)


def test_redact_text_hides_every_url_password_in_a_message() -> None:
    text = "cannot reach redis://:hunter2@a:1/0 ('smtp://u:hunter2@b:25'); see redis://c:2"
    assert redact_text(text) == (
        "cannot reach redis://:***@a:1/0 ('smtp://u:***@b:25'); see redis://c:2"
    )


def test_settings_never_show_passwords_or_secrets() -> None:
    settings = Settings(
        redis_url=f"redis://app:{PASSWORD}@cache:6379/0",
        smtp_url=f"smtps://me:{PASSWORD}@mail:465",
        webhooks=[f"https://hooks.test/h?token={PASSWORD}"],
        webhook_secret="w" * 32 + PASSWORD,
        secret="s" * 32 + PASSWORD,
        inbox_token="i" * 32 + PASSWORD,
        metrics_token="m" * 32 + PASSWORD,
    )
    for shown in (repr(settings), str(settings), f"{settings}", f"{settings!r}"):
        assert PASSWORD not in shown
    assert "redis://app:***@cache:6379/0" in repr(settings)
    assert "smtps://me:***@mail:465" in str(settings)
    display = settings.display()
    assert PASSWORD not in str(display)
    assert display["webhook_secret"] == display["secret"] == display["inbox_token"] == "***"
    assert display["metrics_token"] == "***"  # shown before
    assert display["smtp_url"] == "smtps://me:***@mail:465"
    # The values themselves are unchanged for the code that connects with them.
    assert settings.redis_url == f"redis://app:{PASSWORD}@cache:6379/0"
    assert dataclasses.asdict(settings)["smtp_url"] == f"smtps://me:{PASSWORD}@mail:465"
    assert Settings(**dataclasses.asdict(settings)) == settings


# -- what the command line prints ---------------------------------------------------------
@pytest.mark.anyio
async def test_the_connection_error_names_the_url_without_its_password() -> None:
    from taskloom.engine.connection import connect

    url = f"redis://:{PASSWORD}@127.0.0.1:{_closed_port()}/0"
    with pytest.raises(RedisUnavailableError) as caught:
        await connect(Settings(redis_url=url))
    assert PASSWORD not in str(caught.value)
    assert "redis://:***@127.0.0.1:" in str(caught.value)


@pytest.mark.parametrize(
    ("fault", "command"),
    [
        ("wrong password", ("doctor",)),
        ("wrong password", ("doctor", "--json")),
        ("wrong password", ("serve", "--port", "0")),
        ("wrong password", ("inbox", "list")),
        ("unreachable", ("doctor", "--json")),
    ],
    ids=lambda x: x if isinstance(x, str) else " ".join(x),
)
def test_a_command_that_cannot_reach_redis_never_prints_the_password(
    fault: str, command: tuple[str, ...], locked_redis: Path, tmp_path: Path
) -> None:
    if fault == "wrong password":
        url, secret = f"unix://:{WRONG}@{locked_redis}", WRONG
    else:
        url, secret = f"redis://app:{PASSWORD}@127.0.0.1:{_closed_port()}/0", PASSWORD
    proc = taskloom(*command, env=_env(url, tmp_path))
    said = proc.stdout + proc.stderr
    assert proc.returncode == 2, said
    if fault == "wrong password":  # refused at once, not retried as an outage
        assert "authentication failed" in said and str(locked_redis) in said
    else:
        assert "cannot reach Redis" in said and ":***@" in said
    assert secret not in said and "Traceback" not in said


def test_the_demo_names_its_state_store_without_the_password(
    locked_redis: Path, tmp_path: Path
) -> None:
    url = f"unix://:{PASSWORD}@{locked_redis}"
    proc = taskloom("demo", "--yes", env=_env(url, tmp_path), timeout=180)
    said = proc.stdout + proc.stderr
    assert proc.returncode == 0, said
    assert f"state store: unix://:***@{locked_redis}" in proc.stdout
    assert PASSWORD not in said

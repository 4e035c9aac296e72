"""Redis saying no is not an outage: a wrong or missing password, an ACL user without a
permission, a TLS mismatch are reported at once with what to fix, never retried, and
never with the credential in the message (issue 17).

Each test talks to a redis-server of this module's own. A :class:`~tests.helpers.Relay`, a TCP relay
in front of it, counts the connections a client opens: one refused attempt, where
redis-py's retries made 7 for a wrong password and dozens for a missing one.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis as SyncRedis

from taskloom import Context, Orchestrator, RedisRefusedError, Settings, workflow
from taskloom.engine.embedded import find_redis_server
from taskloom.terminal.cli import main
from tests.helpers import ROOT, Relay, own_redis, taskloom

PASSWORD = "Adm1n-pa55-not-for-print"
WRONG = "wr0ng-guess-not-for-print"
READER = "Re4der-pa55-not-for-print"
SHIFTY = "Sh1fty-pa55-not-for-print"
SECRETS = (PASSWORD, WRONG, READER, SHIFTY)


@workflow(name="refusals.double")
async def double(ctx: Context, n: int) -> int:
    return n * 2


# -- servers of this module's own ---------------------------------------------------------
@pytest.fixture(scope="module")
def acl_redis() -> Iterator[Path]:
    """A redis-server on a unix socket whose default user needs :data:`PASSWORD`, with
    an ACL user ``reader`` that may log in and PING but touch no key; its socket."""
    home = Path(tempfile.mkdtemp(prefix="tl-acl-", dir="/tmp"))  # a short socket path
    sock = home / "redis.sock"
    (home / "users.acl").write_text(
        f"user default on >{PASSWORD} ~* &* +@all\n"
        f"user reader on >{READER} -@all +ping +hello +client +info\n"
    )
    args = ("--port", "0", "--unixsocket", str(sock), "--aclfile", str(home / "users.acl"))
    admin = SyncRedis(unix_socket_path=str(sock), password=PASSWORD)
    try:
        with own_redis(home, *args, ready=admin.ping):
            yield sock
    finally:
        admin.close()
        shutil.rmtree(home, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _certificates(home: Path) -> None:
    """``ca.pem`` and the server's ``server.pem`` / ``server.key`` it signed (for
    127.0.0.1), and ``other.pem``, a CA that signed nothing here."""
    for name in ("ca", "other"):
        _openssl(
            *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN={name}"),
            cwd=home,
        )
    _openssl(
        *("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key"),
        *("-out", "server.csr", "-subj", "/CN=127.0.0.1"),
        cwd=home,
    )
    (home / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl(
        *("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key"),
        *("-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.cnf"),
        cwd=home,
    )


def _speaks_tls(binary: str) -> bool:
    """Whether ``binary`` was built with TLS (it then asks for a certificate)."""
    said = subprocess.run(
        [binary, "--port", "0", "--tls-port", str(_free_port())],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return "tls-cert-file" in said.stdout + said.stderr


@pytest.fixture(scope="module")
def tls_redis() -> Iterator[tuple[int, int, Path]]:
    """A redis-server serving plain Redis on one port and TLS on another, with its
    certificates: ``(plain port, TLS port, directory of ca.pem and other.pem)``."""
    if shutil.which("openssl") is None or not _speaks_tls(find_redis_server()):
        pytest.skip("needs openssl and a redis-server built with TLS")
    home = Path(tempfile.mkdtemp(prefix="tl-tls-", dir="/tmp"))
    _certificates(home)
    plain, tls = _free_port(), _free_port()
    args = (
        *("--bind", "127.0.0.1", "--port", str(plain), "--tls-port", str(tls)),
        *("--tls-cert-file", str(home / "server.pem"), "--tls-key-file", str(home / "server.key")),
        *("--tls-ca-cert-file", str(home / "ca.pem"), "--tls-auth-clients", "no"),
    )
    try:
        with own_redis(home, *args, ready=SyncRedis(port=plain).ping):
            yield plain, tls, home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _unix_door(sock: Path) -> Relay:
    return Relay(lambda: asyncio.open_unix_connection(str(sock)))


def _tcp_door(port: int) -> Relay:
    return Relay(lambda: asyncio.open_connection("127.0.0.1", port))


def _assert_told(refused: RedisRefusedError, kind: str, *said: str) -> None:
    text = str(refused)
    assert refused.kind == kind, text
    assert refused.fix and refused.fix in text
    for words in said:
        assert words in text, text
    for secret in SECRETS:
        assert secret not in text and secret not in repr(refused.to_dict())


# -- the Python API -----------------------------------------------------------------------
@pytest.mark.anyio
@pytest.mark.parametrize(
    ("password", "kind", "said"),
    [
        (f":{WRONG}@", "wrong_password", "authentication failed"),
        ("", "no_password", "asks for a password"),
    ],
    ids=["wrong password", "no password"],
)
async def test_a_refused_login_fails_on_the_first_attempt_saying_what_to_fix(
    acl_redis: Path, prefix: str, password: str, kind: str, said: str
) -> None:
    async with _unix_door(acl_redis) as door:
        url = f"redis://{password}127.0.0.1:{door.port}/0"
        orch = Orchestrator(settings=Settings(redis_url=url, key_prefix=prefix))
        with pytest.raises(RedisRefusedError) as caught:
            await orch.connect()
    _assert_told(caught.value, kind, said, f"127.0.0.1:{door.port}", "TASKLOOM_REDIS_URL")
    assert door.entered == 1  # one attempt: no retry, no reconnect


@pytest.mark.anyio
async def test_an_acl_user_without_a_permission_is_told_how_to_grant_it(
    acl_redis: Path, prefix: str
) -> None:
    async with _unix_door(acl_redis) as door:
        url = f"redis://reader:{READER}@127.0.0.1:{door.port}/0"
        async with Orchestrator(settings=Settings(redis_url=url, key_prefix=prefix)) as orch:
            # The login is fine (PING is allowed); the first command on a key is not.
            calls: list[Callable[[], Awaitable[Any]]] = [
                orch.list_runs,
                lambda: orch.start(double, 1),
                lambda: orch.worker(workflows=[double]).run(),
            ]
            for call in calls:
                with pytest.raises(RedisRefusedError) as caught:
                    await call()
                _assert_told(caught.value, "permission", "user 'reader'", "no permissions")
                assert f"ACL SETUSER reader on +@all ~{prefix}:*" in caught.value.fix
    assert door.entered == 1  # nothing retried, nothing reconnected


@pytest.mark.anyio
async def test_a_worker_that_loses_a_permission_stops_with_the_refusal(
    acl_redis: Path, prefix: str
) -> None:
    admin = SyncRedis(unix_socket_path=str(acl_redis), password=PASSWORD)
    admin.execute_command("ACL", "SETUSER", "shifty", "reset", "on", f">{SHIFTY}", "~*", "+@all")
    url = f"unix://shifty:{SHIFTY}@{acl_redis}"
    try:
        async with Orchestrator(settings=Settings(redis_url=url, key_prefix=prefix)) as orch:
            worker = orch.worker(workflows=[double], lease_ttl=1.0)
            serving = asyncio.create_task(worker.run())
            await worker.started.wait()
            assert await (await orch.start(double, 21)).result() == 42
            admin.execute_command("ACL", "SETUSER", "shifty", "-xreadgroup")
            with pytest.raises(RedisRefusedError) as caught:
                async with asyncio.timeout(60):  # a guard against a hang, not a bound
                    await serving  # the worker stops of its own accord
        _assert_told(caught.value, "permission", "user 'shifty'", "xreadgroup")
    finally:
        admin.execute_command("ACL", "DELUSER", "shifty")
        admin.close()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("port", "query", "kind", "said", "attempts"),
    [
        ("tls", "ssl_ca_certs={home}/other.pem", "tls_untrusted", "is not trusted", 1),
        ("plain", "ssl_ca_certs={home}/ca.pem", "not_tls", "does not speak TLS", 2),
    ],
    ids=["wrong CA", "TLS to a plain port"],
)
async def test_a_tls_mismatch_fails_on_the_first_attempt_saying_what_to_fix(
    tls_redis: tuple[int, int, Path],
    prefix: str,
    port: str,
    query: str,
    kind: str,
    said: str,
    attempts: int,
) -> None:
    plain, tls, home = tls_redis
    trusted = f"rediss://127.0.0.1:{tls}/0?ssl_ca_certs={home}/ca.pem"
    async with Orchestrator(settings=Settings(redis_url=trusted, key_prefix=prefix)) as orch:
        assert await orch.list_runs() == []  # the right CA connects
    async with _tcp_door(tls if port == "tls" else plain) as door:
        url = f"rediss://127.0.0.1:{door.port}/0?{query.format(home=home)}"
        orch = Orchestrator(settings=Settings(redis_url=url, key_prefix=prefix))
        with pytest.raises(RedisRefusedError) as caught:
            await orch.connect()
    _assert_told(caught.value, kind, said, "TASKLOOM_REDIS_URL")
    assert door.entered == attempts  # one handshake (and, to a plain port, one PING check)


@pytest.mark.anyio
async def test_a_plain_url_to_a_tls_port_fails_on_the_first_attempt_saying_use_rediss(
    tls_redis: tuple[int, int, Path], prefix: str
) -> None:
    """A ``redis://`` URL at a port that serves only TLS: the server drops the plain
    connection, which used to be retried as an outage for ~40 s and then called "cannot
    reach Redis"."""
    _, tls, _ = tls_redis
    async with _tcp_door(tls) as door:
        orch = Orchestrator(settings=Settings(redis_url=f"redis://127.0.0.1:{door.port}/0"))
        with pytest.raises(RedisRefusedError) as caught:
            await orch.connect()
    _assert_told(caught.value, "tls_required", "speaks TLS", "rediss://")
    # The plain connection (and redis-py's own reconnect of its health check), then one
    # TLS handshake to check: no retry (it made dozens of connections over ~40 s).
    assert door.entered <= 3


# -- the command line ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("user", "command", "said"),
    [
        (f":{WRONG}@", ("runs",), "authentication failed"),
        (f":{WRONG}@", ("doctor",), "authentication failed"),
        (f":{WRONG}@", ("worker",), "authentication failed"),
        ("", ("runs",), "asks for a password"),
        ("", ("doctor", "--json"), "asks for a password"),
        (f"reader:{READER}@", ("runs",), "ACL SETUSER reader"),
        (f"reader:{READER}@", ("worker",), "ACL SETUSER reader"),
    ],
    ids=lambda x: x if isinstance(x, str) and "@" not in x else " ".join(x),
)
def test_a_command_refused_by_redis_exits_with_the_fix_and_no_credential(
    acl_redis: Path,
    prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    user: str,
    command: tuple[str, ...],
    said: str,
) -> None:
    url = f"unix://{user}{acl_redis}"
    code = main(["--redis-url", url, "--data-dir", str(tmp_path), "--key-prefix", prefix, *command])
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert err.startswith("taskloom: error: ") and said in err, err
    assert "Traceback" not in out + err
    for secret in SECRETS:
        assert secret not in out + err
    if "--json" in command:
        assert '"name": "access"' in out and '"ok": false' in out


def test_the_worker_process_refused_a_login_exits_at_once(acl_redis: Path, tmp_path: Path) -> None:
    """The whole process, as a shell starts it: before, 42 s of retries on a missing
    password; now one attempt (its time is the interpreter's start-up)."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "TASKLOOM_DATA_DIR": str(tmp_path)}
    proc = taskloom("--redis-url", f"unix://{acl_redis}", "worker", env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "asks for a password" in proc.stderr and "Traceback" not in proc.stderr
    assert f"unix://:***@{acl_redis}" in proc.stderr

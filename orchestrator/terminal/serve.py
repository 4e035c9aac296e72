"""``taskloom serve`` (the web inbox and ``/metrics``) and ``taskloom link`` (magic
links). Starlette and uvicorn are imported only when ``serve`` runs."""

from __future__ import annotations

import argparse
import ipaddress
import json
import socket
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from taskloom.cliargs import int_in
from taskloom.errors import UserError
from taskloom.inbox.links import DEFAULT_TTL, MagicLink, MagicLinks
from taskloom.inbox.signing import load_secret
from taskloom.web.credentials import check_token

if TYPE_CHECKING:
    from taskloom.client import Orchestrator
    from taskloom.terminal.cli import Command

__all__ = ["register"]


def register(cmd: Command) -> None:
    """Add the ``serve`` and ``link`` commands to the CLI."""
    s = cmd("serve", _serve, "serve the web inbox and /metrics (sign in with TASKLOOM_INBOX_TOKEN)")
    s.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1 only)"
    )
    s.add_argument(
        "--port", type=int_in(0, 65535), default=8765, help="port to listen on (default: 8765)"
    )
    link = cmd(
        "link",
        _link,
        "magic links: one inbox item and one decision for a reviewer without an account",
    )
    link.add_argument("action", choices=("create", "revoke", "list"))
    link.add_argument(
        "target",
        metavar="TASK_ID|LINK",
        help="the item (create, list), or the link's URL, token or id (revoke)",
    )
    link.add_argument(
        "--ttl",
        type=float,
        default=DEFAULT_TTL,
        help=f"seconds the link works (default: {DEFAULT_TTL / 86400:g} days)",
    )
    link.add_argument("--for", dest="reviewer", help="who the link is for (recorded as decider)")
    link.add_argument("--json", action="store_true")


def _out(text: str) -> None:
    print(text, flush=True)


async def _serve(args: argparse.Namespace, orch: Orchestrator) -> int:
    settings = orch.settings
    # Before the secret: a refused start makes no secret file. (create_app checks the
    # token is not the secret.)
    inbox_token = check_token(settings.inbox_token, name="TASKLOOM_INBOX_TOKEN")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be between 0 and 65535 (got {args.port})")
    import uvicorn

    from taskloom.web.app import create_app
    from taskloom.web.hardening import default_trusted_hosts, redact_access_log

    app = create_app(orch, secret=load_secret(settings), inbox_token=inbox_token)
    try:
        sock = socket.create_server((args.host, args.port), family=_family(args.host))
    except OSError as exc:
        raise UserError(
            f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}; "
            f"choose another --port or --host"
        ) from None
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    _out(f"web inbox on http://{shown}:{port}/ (sign in with TASKLOOM_INBOX_TOKEN); Ctrl-C stops")
    _out(f"magic links point at {settings.public_url} (TASKLOOM_PUBLIC_URL)")
    public = urlsplit(settings.public_url)
    if _loopback(public.hostname or "") and (public.port or 80) != port:
        # The default public URL names the default port: links made for this server
        # would open nothing (a public URL behind a proxy has a port of its own: left).
        _out(
            f"note: that is not this server's port ({port}); set TASKLOOM_PUBLIC_URL="
            f"http://{shown}:{port} for this server and every process that makes links"
        )
    if settings.metrics_token is None:
        _out(
            "note: /metrics takes the inbox token as its bearer; set TASKLOOM_METRICS_TOKEN "
            "to give the scraper a token of its own that cannot sign in"
        )
    hosts = settings.trusted_hosts or default_trusted_hosts(settings.public_url)
    _out(f"answering Host {', '.join(hosts)} only (TASKLOOM_TRUSTED_HOSTS)")
    if not _loopback(args.host):
        _out("note: listening beyond this machine; put it behind HTTPS (a reverse proxy)")
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_level="info" if args.debug else "warning",
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=5,  # a live run page's event stream would hold it open
    )
    redact_access_log()  # after the Config, which sets uvicorn's loggers up
    with sock:
        await uvicorn.Server(config).serve(sockets=[sock])
    return 0


def _family(host: str) -> socket.AddressFamily:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return socket.AF_INET


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


async def _link(args: argparse.Namespace, orch: Orchestrator) -> int:
    settings = orch.settings
    links = MagicLinks(orch.store, secret=load_secret(settings), public_url=settings.public_url)
    if args.action == "create":
        link = await links.create(args.target, ttl=args.ttl, reviewer=args.reviewer)
        _out(json.dumps(link.to_dict()) if args.json else link.url)
        if not args.json:
            until, revoke = _when(link), f"taskloom link revoke {link.id}"
            _out(f"  opens item {link.task_id} until {until}; to revoke it: {revoke}")
        return 0
    if args.action == "revoke":
        link = await links.revoke(args.target)
        if args.json:
            _out(json.dumps(link.to_dict()))
        elif link.state == "used":
            _out(f"link {link.id} was already used; nothing more it can do")
        else:
            _out(f"link {link.id} (item {link.task_id}) is revoked")
        return 0
    found = await links.list(args.target)
    if args.json:
        _out(json.dumps([x.to_dict() for x in found]))
    elif not found:
        _out(f"no magic links for item {args.target}")
    for x in found if not args.json else []:
        who = f" for {x.reviewer}" if x.reviewer else ""
        _out(f"{x.id}  {x.state:8} until {_when(x)}{who}")
    return 0


def _when(link: MagicLink) -> str:
    from taskloom.display import when

    return when(link.expires_ms)

"""Who may use the console, and the protections every answer carries.

A request is authenticated by ``Authorization: Bearer <token>`` (scripts, monitoring) or by
the session cookie the login form sets (HttpOnly, SameSite=Strict: no other site's page can
send it, and no script can read it). Sessions live in memory: a restart logs everyone out,
and removing a token from store.yaml (and restarting) ends its sessions.

Outside the application, as plain ASGI middleware so that nothing reaches a route first:
the Host check (a page on a name that is not this box's is a DNS-rebinding attempt), the
body limits, and the security headers on every response (a CSP that allows no inline script,
no framing, no sniffing).
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.clock import Clock
from gateway.config import WebSettings
from gateway.web.tokens import Principal, find_token

__all__ = ["SESSION_COOKIE", "Guard", "Sessions", "protect"]

SESSION_COOKIE = "lantern_session"
_MAX_SESSIONS = 1_000  # phones and laptops of one store's staff, with room for logins
_MAX_BODY_BYTES = 1024 * 1024  # a rule file or a backtest request is a few KiB
_MAX_MERAKI_BYTES = 8 * 1024 * 1024  # a Meraki post for a busy floor is a few hundred KiB
# Paths that answer without a token, and so need no Host check either: nothing there is
# worth a rebinding attack (the Meraki receiver has its own secret, and no cookie counts).
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/meraki"})
PUBLIC_PREFIXES = ("/static/",)  # the console's own CSS and scripts, which the login page needs
SECURITY_HEADERS = (
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        b" connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self';"
        b" frame-ancestors 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)


class Sessions:
    """Logged-in browsers: a random id each, for ``lifetime_s`` seconds of the clock."""

    def __init__(self, lifetime_s: float, clock: Clock) -> None:
        self._lifetime_s = lifetime_s
        self._clock = clock
        self._open: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    def open(self, principal: Principal) -> str:
        session = secrets.token_urlsafe(32)
        self._open[session] = (principal, self._clock.monotonic() + self._lifetime_s)
        while len(self._open) > _MAX_SESSIONS:
            self._open.popitem(last=False)  # the oldest login goes first
        return session

    def find(self, session: str) -> Principal | None:
        entry = self._open.get(session)
        if entry is None:
            return None
        principal, expires = entry
        if self._clock.monotonic() >= expires:
            del self._open[session]
            return None
        return principal

    def close(self, session: str) -> None:
        self._open.pop(session, None)

    @property
    def lifetime_s(self) -> float:
        return self._lifetime_s


@dataclass(frozen=True, slots=True)
class Guard:
    """The console's authentication: the configured tokens and the open sessions."""

    settings: WebSettings
    sessions: Sessions

    def principal(self, request: Request) -> Principal | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return find_token(token.strip(), self.settings.tokens)
        session = request.cookies.get(SESSION_COOKIE)
        if session is None:
            return None
        principal = self.sessions.find(session)
        if principal is not None and not _same_origin(request):
            return None  # a cookie sent along by another site's page does not count
        return principal

    def require(self, need: str | None) -> Callable[[Request], Awaitable[Principal]]:
        """A dependency: the request's principal, who must have role ``need`` (any role
        when None); 401 without a valid token, 403 with one whose role may not."""

        async def dependency(request: Request) -> Principal:
            principal = self.principal(request)
            if principal is None:
                raise HTTPException(
                    401,
                    "a valid token is needed: Authorization: Bearer <token>, or log in at /login",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            if need is not None and not principal.may(need):
                raise HTTPException(
                    403, f"{principal.name} is a {principal.role}; this needs a {need}"
                )
            request.state.principal = principal
            return principal

        return dependency


def _same_origin(request: Request) -> bool:
    """Whether an unsafe request's Origin (when the browser sent one) is this server."""
    origin = request.headers.get("origin")
    if request.method in ("GET", "HEAD") or origin is None:
        return True
    return origin.split("://", 1)[-1] == request.headers.get("host", "")


def protect(app: ASGIApp, settings: WebSettings) -> ASGIApp:
    """The application behind the Host check, the body limits and the security headers."""
    allowed = _allowed_hosts(settings.allowed_hosts)

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        path: str = scope["path"]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    *message.get("headers", []),
                    *SECURITY_HEADERS,
                ]
                if not path.startswith(PUBLIC_PREFIXES):
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        public = path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)
        host = _header(scope, b"host")
        if not public and not _host_allowed(host, allowed):
            await _answer(
                send_with_headers,
                400,
                f"this console does not answer to the name {_hostname(host)!r}:"
                " add it to web.allowed_hosts in store.yaml",
            )
            return
        limit = _MAX_MERAKI_BYTES if path == "/meraki" else _MAX_BODY_BYTES
        length = _header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await _answer(send_with_headers, 413, f"the body is larger than {limit} bytes")
            return
        await app(scope, _limited(receive, limit), send_with_headers)

    return guarded


def _limited(receive: Receive, limit: int) -> Receive:
    """``receive``, refusing a body (sent without its length) that grows past ``limit``."""
    taken = 0

    async def limited() -> Message:
        nonlocal taken
        message = await receive()
        if message["type"] == "http.request":
            taken += len(message.get("body", b""))
            if taken > limit:
                raise HTTPException(413, f"the body is larger than {limit} bytes")
        return message

    return limited


async def _answer(send: Send, status: int, text: str) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    headers: Iterable[tuple[bytes, bytes]] = scope.get("headers", [])
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


def _allowed_hosts(configured: Iterable[str]) -> frozenset[str]:
    name = socket.gethostname().lower()
    return frozenset({"localhost", name, f"{name}.local", *(h.lower() for h in configured)})


def _hostname(host: str | None) -> str:
    """The name in a Host header, without the port (``[::1]:8080`` gives ``::1``)."""
    if not host:
        return ""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _host_allowed(host: str | None, allowed: frozenset[str]) -> bool:
    name = _hostname(host).lower().rstrip(".")
    if not name:
        return False
    if "*" in allowed or name in allowed:
        return True
    try:
        ipaddress.ip_address(name)  # an address is no name another site's DNS can rebind
    except ValueError:
        return False
    return True


def principal_of(request: Request) -> Principal:
    principal: Any = getattr(request.state, "principal", None)
    assert isinstance(principal, Principal), "a route without its role dependency"
    return principal

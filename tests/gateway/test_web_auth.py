"""The console's doors: tokens and roles, the login cookie, the Host check, the security
headers, and no 5xx before authentication (the Meraki receiver included)."""

from __future__ import annotations

import json
import logging

import aiohttp
import pytest

from gateway.app import Gateway
from gateway.config import WebSettings
from tests.gateway.console import TOKENS, WEB_TOKENS, bearer

pytestmark = pytest.mark.settings(web={"tokens": WEB_TOKENS})

PROTECTED = ["/", "/floor", "/rules", "/docs", "/openapi.json", "/metrics", "/api/status"]
TECHNICIAN_ONLY = ["/api/status", "/api/devices", "/api/dead-letters", "/api/diagnostics"]
MARKETER_ONLY = ["/api/rules", "/api/rules/traces", "/api/recordings", "/rules"]


def url(gateway: Gateway, path: str) -> str:
    assert gateway.web is not None
    return gateway.web.url + path


async def test_without_a_valid_token_only_the_probes_and_meraki_answer(gateway: Gateway) -> None:
    async with aiohttp.ClientSession() as session:
        for path in PROTECTED:
            for headers in ({}, {"Authorization": "Bearer lt_not-a-token"}):
                async with session.get(url(gateway, path), headers=headers) as response:
                    assert response.status == 401, path
        async with session.get(url(gateway, "/healthz")) as response:
            assert (response.status, await response.json()) == (200, {"status": "alive"})
        async with session.get(url(gateway, "/readyz")) as response:
            assert (response.status, await response.json()) == (200, {"ready": True, "reasons": []})
        async with session.get(url(gateway, "/meraki")) as response:
            assert response.status == 404  # not configured: no secret, no receiver


async def test_each_role_gets_its_own_and_is_refused_the_others(gateway: Gateway) -> None:
    async with aiohttp.ClientSession() as session:

        async def status_of(method: str, path: str, role: str) -> int:
            async with session.request(
                method, url(gateway, path), headers=bearer(role), data=b"id: x"
            ) as response:
                return response.status

        for path in TECHNICIAN_ONLY:
            assert await status_of("GET", path, "technician") == 200, path
            assert await status_of("GET", path, "marketer") == 403, path
            assert await status_of("GET", path, "admin") == 200, path
        for path in MARKETER_ONLY:
            assert await status_of("GET", path, "marketer") == 200, path
            assert await status_of("GET", path, "technician") == 403, path
            assert await status_of("GET", path, "admin") == 200, path
        # A technician cannot edit rules, nor a marketer wake a sink.
        assert await status_of("PUT", "/api/rules/some-rule", "technician") == 403
        assert await status_of("POST", "/api/rules/some-rule/check", "technician") == 403
        assert await status_of("POST", "/api/sinks/http/wake", "marketer") == 403
        async with session.put(url(gateway, "/api/rules/x"), headers=bearer("marketer")) as r:
            assert r.status == 422  # the marketer may; there is no rules folder to write to
            assert (await r.json())["problems"][0]["field"] == "rules.dir"


async def test_the_login_form_sets_a_strict_http_only_cookie(gateway: Gateway) -> None:
    # unsafe: aiohttp keeps no cookie of an IP address otherwise, and the gateway is 127.0.0.1
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.get(url(gateway, "/")) as response:
            assert response.status == 401
            assert 'name="token"' in await response.text()  # the login form, for a browser
        login = {"token": "lt_wrong", "next": "/"}
        async with session.post(url(gateway, "/login"), data=login) as response:
            assert response.status == 401
            assert "That token is not known here." in await response.text()
        login = {"token": TOKENS["marketer"], "next": "/floor"}
        async with session.post(
            url(gateway, "/login"), data=login, allow_redirects=False
        ) as response:
            assert (response.status, response.headers["location"]) == (303, "/floor")
            cookie = response.headers["set-cookie"]
            assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
        async with session.get(url(gateway, "/floor")) as response:
            assert response.status == 200
        async with session.get(url(gateway, "/api/status")) as response:
            assert response.status == 403  # the cookie carries the marketer's role
        # Another site's page cannot use the cookie to change anything.
        async with session.put(
            url(gateway, "/api/rules/x"), data=b"id: x", headers={"Origin": "http://evil.example"}
        ) as response:
            assert response.status == 401
        async with session.post(url(gateway, "/logout"), allow_redirects=False) as response:
            assert response.status == 303
        async with session.get(url(gateway, "/floor")) as response:
            assert response.status == 401


async def test_every_answer_carries_the_security_headers_and_a_foreign_host_is_refused(
    gateway: Gateway,
) -> None:
    async with aiohttp.ClientSession() as session:
        for path, headers in (("/", bearer("admin")), ("/api/status", {}), ("/healthz", {})):
            async with session.get(url(gateway, path), headers=headers) as response:
                csp = response.headers["Content-Security-Policy"]
                assert "script-src 'self'" in csp and "unsafe-inline" not in csp
                assert "frame-ancestors 'none'" in csp
                assert response.headers["X-Frame-Options"] == "DENY"
                assert response.headers["X-Content-Type-Options"] == "nosniff"
        rebound = {**bearer("admin"), "Host": "attacker.example"}
        async with session.get(url(gateway, "/api/status"), headers=rebound) as response:
            assert response.status == 400
            assert "web.allowed_hosts" in await response.text()
        async with session.get(url(gateway, "/healthz"), headers=rebound) as response:
            assert response.status == 200  # a probe has nothing to steal
        local = {**bearer("admin"), "Host": "localhost:8080"}
        async with session.get(url(gateway, "/api/status"), headers=local) as response:
            assert response.status == 200


def test_with_no_token_the_console_listens_on_loopback_and_says_how_to_add_one() -> None:
    assert WebSettings().listen_host == "127.0.0.1"
    assert WebSettings(tokens=WEB_TOKENS).listen_host == "0.0.0.0"
    assert WebSettings(host="10.0.0.5").listen_host == "10.0.0.5"


@pytest.mark.settings(web={"tokens": [], "meraki_secret": "s3cret", "meraki_validator": "v"})
async def test_no_token_page_and_abusive_posts_answer_4xx_without_a_traceback(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    nested = b"[" * (8 * 1024 * 1024 - 2) + b"]]"  # 8 MiB nested deeper than any parser goes
    deep_object = ('{"secret": "s3cret", "a": ' * 100_000 + "1" + "}" * 100_000).encode()
    async with aiohttp.ClientSession() as session:
        async with session.get(url(gateway, "/")) as response:
            assert response.status == 401
            assert "lantern token new" in await response.text()
        for body in (nested, deep_object, b"\xff\xfe", b'{"secret": 1}', nested + b"x"):
            async with session.post(url(gateway, "/meraki"), data=body) as response:
                assert 400 <= response.status < 500, response.status
        async with session.post(
            url(gateway, "/meraki"), data=json.dumps({"secret": "wrong"})
        ) as response:
            assert response.status == 403
    assert not [record for record in caplog.records if record.exc_info], "a traceback"
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]

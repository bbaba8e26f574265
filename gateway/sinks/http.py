"""The HTTP sink: the outbox, in order, to the central record as CloudEvents batches.

A batch is a JSON array of structured CloudEvents, ``application/cloudevents-batch+json``,
optionally gzipped, with an optional bearer token. The cursor moves only on a 2xx. 5xx, 429 and
connection errors are retried with jittered exponential backoff (``Retry-After`` honoured, both
capped); any other 4xx parks the batch with its reason, counts it, and the sink moves on.
"""

from __future__ import annotations

import asyncio
import gzip
import logging

import aiohttp

from gateway.config import HttpSinkSettings
from gateway.events import ACTION_PUBLISH_TYPE, BATCH_CONTENT_TYPE
from gateway.mqtt import backoff_delay_s
from gateway.outbox import Outbox, Page, TypeFilter
from lantern.errors import RejectedBatchError, RetryableSinkError

log = logging.getLogger(__name__)

_IDLE_POLL_S = 1.0  # with nothing to send, look again after a commit or this long
_MAX_REASON_CHARS = 500  # of a refusing server's body, kept with the parked batch


class HttpSink:
    name = "http"
    local = False

    def __init__(self, settings: HttpSinkSettings, outbox: Outbox) -> None:
        if settings.url is None:
            raise ValueError("the HTTP sink needs a URL")
        self._url = settings.url
        self._settings = settings
        self._outbox = outbox
        self.delivered = 0
        self.parked = 0
        self.retries = 0
        self.last_error: str | None = None

    @property
    def types(self) -> TypeFilter:
        return TypeFilter(exclude=(*self._settings.exclude_types, ACTION_PUBLISH_TYPE))

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self._settings.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                page = await self._outbox.read_pending(
                    self.name, self.types, self._settings.batch_max_events
                )
                if page.rows:
                    await self._deliver(session, page)
                    await self._outbox.advance(self.name, page.upto)
                else:
                    await self._outbox.advance(self.name, page.upto)
                    await self._outbox.wait_for_commit(_IDLE_POLL_S)

    async def _deliver(self, session: aiohttp.ClientSession, page: Page) -> None:
        body = ("[" + ",".join(event for _, event in page.rows) + "]").encode()
        headers = {"Content-Type": BATCH_CONTENT_TYPE}
        if self._settings.gzip:
            body = gzip.compress(body, compresslevel=5)
            headers["Content-Encoding"] = "gzip"
        if self._settings.token is not None:
            headers["Authorization"] = f"Bearer {self._settings.token.get_secret_value()}"
        attempt = 0
        while True:
            try:
                await self._post(session, body, headers)
            except RetryableSinkError as exc:
                delay = backoff_delay_s(
                    attempt, self._settings.retry_min_s, self._settings.retry_max_s
                )
                if exc.retry_after_s is not None:
                    delay = min(max(delay, exc.retry_after_s), self._settings.retry_max_s)
                if attempt == 0:
                    log.warning("HTTP sink: %s; retrying with backoff", exc)
                self.last_error = str(exc)
                self.retries += 1
                attempt += 1
                await asyncio.sleep(delay)
                continue
            except RejectedBatchError as exc:
                log.error(
                    "HTTP sink: batch of %d events (seq %d-%d) refused, parked: %s",
                    len(page.rows),
                    page.rows[0][0],
                    page.rows[-1][0],
                    exc,
                )
                await self._outbox.park(self.name, page, exc.status, str(exc))
                self.parked += 1
                return
            if attempt:
                log.info("HTTP sink: delivering again after %d retries", attempt)
            self.last_error = None
            self.delivered += len(page.rows)
            return

    async def _post(
        self, session: aiohttp.ClientSession, body: bytes, headers: dict[str, str]
    ) -> None:
        try:
            async with session.post(self._url, data=body, headers=headers) as response:
                if 200 <= response.status < 300:
                    return
                text = (await response.text(errors="replace"))[:_MAX_REASON_CHARS]
                reason = f"{response.status} {response.reason}: {text}".strip()
                if response.status == 429 or response.status >= 500:
                    raise RetryableSinkError(reason, _retry_after_s(response))
                raise RejectedBatchError(reason, response.status)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise RetryableSinkError(f"{self._url}: {type(exc).__name__}: {exc}") from exc


def _retry_after_s(response: aiohttp.ClientResponse) -> float | None:
    value = response.headers.get("Retry-After", "")
    try:
        return float(value)
    except ValueError:
        return None  # an HTTP date, or absent: our own backoff decides

"""The HTTP sink: the outbox, in order, to the central record as CloudEvents batches.

A batch is a JSON array of structured CloudEvents, ``application/cloudevents-batch+json``,
optionally gzipped, with an optional bearer token. The cursor moves only on a 2xx. 5xx, 429 and
connection errors are retried by the shared loop (``Retry-After`` honoured within the backoff's
cap); any other 4xx parks the batch with its reason, counts it, and the sink moves on.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence

import aiohttp

from gateway.config import HttpSinkSettings
from gateway.events import BATCH_CONTENT_TYPE
from gateway.outbox import Outbox, PendingRow
from gateway.sinks.base import Sink, forwarding_types
from lantern.errors import RejectedBatchError, RetryableSinkError

_MAX_REASON_CHARS = 500  # of a refusing server's body, kept with the parked batch


class HttpSink(Sink):
    name = "http"
    label = "HTTP sink"

    def __init__(self, settings: HttpSinkSettings, outbox: Outbox) -> None:
        if settings.url is None:
            raise ValueError("the HTTP sink needs a URL")
        super().__init__(settings, outbox, forwarding_types(settings))
        self._url = self.target = settings.url
        self._http = settings
        self._session: aiohttp.ClientSession | None = None
        self._headers = {"Content-Type": BATCH_CONTENT_TYPE}
        if settings.gzip:
            self._headers["Content-Encoding"] = "gzip"
        if settings.token is not None:
            self._headers["Authorization"] = f"Bearer {settings.token.get_secret_value()}"

    async def prepare(self) -> None:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self._http.timeout_s)
            self._session = aiohttp.ClientSession(timeout=timeout)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def deliver(self, rows: Sequence[PendingRow]) -> None:
        assert self._session is not None  # prepare() ran
        body = ("[" + ",".join(row.body for row in rows) + "]").encode()
        if self._http.gzip:
            body = gzip.compress(body, compresslevel=5)
        try:
            async with self._session.post(self._url, data=body, headers=self._headers) as response:
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

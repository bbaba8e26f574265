"""What a technician sends to support: one zip of the redacted configuration, the status, the
recent log lines, the latest dead letters and the versions. No MAC address (none is logged,
stored or shown anywhere), no secret, no token: secrets are masked, token digests left out,
and a broker URL's password removed."""

from __future__ import annotations

import io
import json
import logging
import platform
import re
import zipfile
from collections import deque
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from gateway.config import Settings

__all__ = ["RecentLogs", "diagnostics_zip"]

_RECENT_LOG_LINES = 2_000  # the last minutes of a busy gateway's log
_PACKAGES = (
    "lantern-gateway",
    "paho-mqtt",
    "pydantic",
    "fastapi",
    "uvicorn",
    "common-expression-language",
    "jinja2",
    "aiohttp",
)
_URL_PASSWORD = re.compile(r"(://[^:/@]*):[^@/]*@")
_TOKEN = re.compile(r"lt_[A-Za-z0-9_-]{20,}")  # gateway/web/tokens.py's form, if one slips in
_SECRET_KEYS = ("token", "secret", "password", "sha256")


class RecentLogs(logging.Handler):
    """The last log lines, kept in memory for the diagnostics."""

    def __init__(self, capacity: int = _RECENT_LOG_LINES) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self._lines: deque[str] = deque(maxlen=capacity)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(self.format(record))
        except Exception:  # a log line that does not format must not break the logger
            self.handleError(record)

    def lines(self) -> list[str]:
        return list(self._lines)


def redacted(settings: Settings) -> dict[str, Any]:
    """The settings as JSON with every secret masked and every token digest left out."""
    values = settings.model_dump(mode="json")
    values["mqtt"]["url"] = _URL_PASSWORD.sub(r"\1:***@", values["mqtt"]["url"])
    values["web"]["tokens"] = [
        {"name": token["name"], "role": token["role"]} for token in values["web"]["tokens"]
    ]
    masked: dict[str, Any] = _masked(values)
    return masked


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: "***"
            if any(word in key for word in _SECRET_KEYS) and isinstance(item, str)
            else _masked(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_masked(item) for item in value]
    return value


def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "platform": platform.platform()}
    for package in _PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def diagnostics_zip(
    settings: Settings,
    status: dict[str, Any],
    dead_letters: list[dict[str, Any]],
    log_lines: list[str],
    now: datetime,
) -> bytes:
    def dumped(value: Any) -> str:
        return json.dumps(value, indent=2, ensure_ascii=False, default=str)

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("README.txt", f"Lantern diagnostics of store {settings.store_id}, {now}\n")
        archive.writestr("config.json", dumped(redacted(settings)))
        archive.writestr("status.json", dumped(status))
        archive.writestr("dead_letters.json", dumped(dead_letters))
        archive.writestr("log.txt", "\n".join(_TOKEN.sub("lt_***", line) for line in log_lines))
        archive.writestr("versions.json", dumped(versions()))
    return buffer.getvalue()

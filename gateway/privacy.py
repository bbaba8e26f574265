"""Keyed pseudonyms for MAC addresses, applied at ingest before anything is kept.

A pseudonym is HMAC-SHA256 over the 6 address bytes with a key that rotates daily (UTC days):
the day's key is HMAC-SHA256(secret, "lantern-mac-key:" + ISO date), the secret being 32 random
bytes generated on first start in the data dir (mode 0600). The same visitor has the same
pseudonym all day and an unlinkable one the next day; without the secret, a pseudonym cannot be
reversed by trying all 2^48 addresses.

Decoders put raw addresses only in fields whose name ends in ``mac`` (devices/model.py); this
module replaces those, wherever they sit in an observation. The topic levels a decoder copies
into an observation (``device_id``, and a sighting's ``scanner``) are not addresses by design,
but a device may publish under its own (``lantern/{store}/scanner/AA:BB:CC:DD:EE:FF``): every
MAC-shaped token in them becomes the same pseudonym as that address in a payload, so no raw
address reaches an event's source or subject, the inventory or the status page. A UUID is not
an address although its last group has the shape of one, and is kept.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import msgspec.inspect

from devices.model import KindCache

SECRET_FILE_NAME = "privacy.key"
_SECRET_BYTES = 32
# The observation fields a decoder fills from topic levels (devices/model.py).
_TOPIC_LEVEL_FIELDS = ("device_id", "scanner")
_PSEUDONYM_HEX_CHARS = 20  # 80 bits: collisions negligible among a store's visitors in a day
PSEUDONYM_PREFIX = "p-"
_MAX_CACHED = 50_000  # distinct addresses per day we keep computed; a big store sees ~10k


def _scrubbed_fields(kind: type[msgspec.Struct]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The fields of an observation kind that may hold an address (``*mac`` ones, and nested
    Structs), and those it fills from topic levels."""
    info = msgspec.inspect.type_info(kind)
    assert isinstance(info, msgspec.inspect.StructType)
    addresses = tuple(
        field.name
        for field in info.fields
        if field.name.endswith("mac") or _holds_struct(field.type)
    )
    levels = tuple(name for name in _TOPIC_LEVEL_FIELDS if name in kind.__struct_fields__)
    return addresses, levels


_SCRUBBED_FIELDS = KindCache(_scrubbed_fields)


def _holds_struct(kind: msgspec.inspect.Type) -> bool:
    if isinstance(kind, msgspec.inspect.UnionType):
        return any(_holds_struct(member) for member in kind.types)
    return isinstance(kind, msgspec.inspect.StructType)


def load_or_create_secret(data_dir: Path) -> bytes:
    """The pseudonym secret of this gateway, created (mode 0600) on first start."""
    path = data_dir / SECRET_FILE_NAME
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(_SECRET_BYTES)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(secret)
        file.flush()
        os.fsync(file.fileno())
    return secret


# A MAC in free text: six hex pairs with one separator kind, or 12 bare hex digits standing alone.
_MAC_IN_TEXT = re.compile(
    r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{2}([:-])(?:[0-9A-Fa-f]{2}\1){4}[0-9A-Fa-f]{2}"
    r"|[0-9A-Fa-f]{12})(?![0-9A-Fa-f])"
)

_UUID_IN_TEXT = re.compile(
    r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
)

_LOCALLY_ADMINISTERED_BIT = 0x02  # marks an address no vendor assigned
_MULTICAST_BIT = 0x01

_Struct = TypeVar("_Struct", bound=msgspec.Struct)


def _bare(mac_text: str) -> str:
    """An address as :func:`devices.model.normalize_mac` gives it (12 lowercase hex digits)."""
    return re.sub("[:-]", "", mac_text).lower()


class Pseudonymizer:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self._day: date | None = None
        self._key = b""
        self._cache: dict[str, str] = {}
        # Topic levels are few (a store's devices) and repeat in every message: scrubbed once
        # a day each rather than by two regular expressions per observation.
        self._levels: dict[str, str] = {}

    def pseudonym(self, mac: str, at: datetime) -> str:
        """The pseudonym of a normalised MAC (12 lowercase hex digits) on ``at``'s day."""
        self._on_day(at)
        cached = self._cache.get(mac)
        if cached is not None:
            return cached
        digest = hmac.new(self._key, bytes.fromhex(mac), hashlib.sha256).hexdigest()
        pseudonym = PSEUDONYM_PREFIX + digest[:_PSEUDONYM_HEX_CHARS]
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        self._cache[mac] = pseudonym
        return pseudonym

    def apply(self, observation: _Struct, at: datetime) -> _Struct:
        """The observation with every ``*mac`` field replaced by its pseudonym, and every
        address in a field taken from a topic level too (a new value only if one changed).

        Every message comes through here: the day's cached pseudonyms and topic levels are
        looked up directly, and the observation is copied once, only when a field changes.
        """
        addresses, levels = _SCRUBBED_FIELDS[type(observation)]
        if at.date() != self._day:
            self._on_day(at)
        updates: dict[str, Any] = {}
        for name in addresses:
            value = getattr(observation, name)
            if value is not None:
                cached = self._cache.get(value) if type(value) is str else None
                updates[name] = cached or self._replace(value, at)
        for name in levels:
            level = getattr(observation, name)
            private = self._levels.get(level) or self.scrub_level(level, at)
            if private != level:
                updates[name] = private
        return msgspec.structs.replace(observation, **updates) if updates else observation

    def scrub_level(self, level: str, at: datetime) -> str:
        """A topic level (a device's name) with every address in it pseudonymised; UUIDs kept."""
        self._on_day(at)
        private = self._levels.get(level)
        if private is None:
            uuids = [match.span() for match in _UUID_IN_TEXT.finditer(level)]

            def pseudonymised(match: re.Match[str]) -> str:
                if any(start <= match.start() < end for start, end in uuids):
                    return match[0]
                return self.pseudonym(_bare(match[0]), at)

            private = _MAC_IN_TEXT.sub(pseudonymised, level)
            if len(self._levels) >= _MAX_CACHED:
                self._levels.clear()
            self._levels[level] = private
        return private

    def _on_day(self, at: datetime) -> None:
        """The day's key, and its caches only: a pseudonym never outlives its day."""
        day = at.date()
        if day != self._day:
            self._day = day
            self._key = hmac.new(
                self._secret, f"lantern-mac-key:{day.isoformat()}".encode(), hashlib.sha256
            ).digest()
            self._cache.clear()
            self._levels.clear()

    def scrub(self, text: str, at: datetime) -> str:
        """Free text (a dead letter's payload) with every MAC-shaped token pseudonymised."""
        return _MAC_IN_TEXT.sub(lambda match: self.pseudonym(_bare(match[0]), at), text)

    def scrub_mac_shaped(self, text: str, at: datetime) -> str:
        """Free text with every MAC replaced by a MAC-shaped pseudonym (a locally administered
        address derived from the keyed pseudonym): for recordings, which must still decode."""
        return _MAC_IN_TEXT.sub(lambda match: self._mac_shaped(match[0], at), text)

    def _mac_shaped(self, mac_text: str, at: datetime) -> str:
        digest = self.pseudonym(_bare(mac_text), at)[len(PSEUDONYM_PREFIX) :]
        first = (int(digest[:2], 16) | _LOCALLY_ADMINISTERED_BIT) & ~_MULTICAST_BIT
        shaped = f"{first:02x}{digest[2:12]}"
        separator = next((char for char in mac_text if char in ":-"), "")
        if separator:
            shaped = separator.join(shaped[i : i + 2] for i in range(0, 12, 2))
        return shaped.upper() if mac_text.isupper() else shaped

    def _replace(self, value: Any, at: datetime) -> Any:
        if isinstance(value, msgspec.Struct):
            return self.apply(value, at)
        if isinstance(value, str):
            return value if value.startswith(PSEUDONYM_PREFIX) else self.pseudonym(value, at)
        if isinstance(value, (list, tuple)):
            return type(value)(self._replace(item, at) for item in value)
        return value

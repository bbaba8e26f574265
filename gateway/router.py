"""Which decoder a topic goes to: the configured sources as MQTT subscriptions and matchers."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from devices.model import Message, Observation
from gateway.config import SourceKind, SourceSettings

Decoder = Callable[[Message], "list[Observation] | None"]

_MAX_CACHED_TOPICS = 200_000  # 30 scanners x 2,000 devices = 60k ESPresense topics at most


@dataclass(frozen=True, slots=True)
class Route:
    kind: SourceKind
    decoder: Decoder
    fields: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class _Pattern:
    kind: SourceKind
    levels: tuple[str, ...]  # a literal level, or "{name}" for a captured one
    qos: int

    @property
    def subscription(self) -> str:
        return "/".join("+" if level.startswith("{") else level for level in self.levels)

    def match(self, levels: list[str]) -> dict[str, str] | None:
        if len(levels) != len(self.levels):
            return None
        fields = {}
        for expected, actual in zip(self.levels, levels, strict=True):
            if expected.startswith("{"):
                fields[expected[1:-1]] = actual
            elif expected != actual:
                return None
        return fields


class Router:
    def __init__(
        self,
        sources: Iterable[SourceSettings],
        store_id: str,
        decoders: Mapping[SourceKind, Decoder],
    ) -> None:
        self._patterns = [
            _Pattern(
                source.kind,
                tuple(source.topic.replace("{store}", store_id).split("/")),
                source.qos,
            )
            for source in sources
        ]
        self._decoders = decoders
        self._cache: dict[str, Route | None] = {}

    def subscriptions(self) -> list[tuple[str, int]]:
        """(topic filter, qos) for every source, each once."""
        seen: dict[str, int] = {}
        for pattern in self._patterns:
            seen[pattern.subscription] = max(pattern.qos, seen.get(pattern.subscription, 0))
        return list(seen.items())

    def route(self, topic: str) -> Route | None:
        try:
            return self._cache[topic]
        except KeyError:
            pass
        route = self._find(topic)
        if len(self._cache) >= _MAX_CACHED_TOPICS:
            self._cache.clear()
        self._cache[topic] = route
        return route

    def _find(self, topic: str) -> Route | None:
        levels = topic.split("/")
        for pattern in self._patterns:
            fields = pattern.match(levels)
            if fields is not None:
                return Route(pattern.kind, self._decoders[pattern.kind], MappingProxyType(fields))
        return None


def default_decoders() -> dict[SourceKind, Decoder]:
    """Each source kind's decoder: one pure module per device family in devices/."""
    from devices import barcode, espresense, reorder, status, theengs, wifi

    return {
        "espresense": espresense.parse,
        "theengs": theengs.parse,
        "local-ble": theengs.parse,  # the local radio speaks Theengs' raw form
        "barcode": barcode.parse,
        "wifi": wifi.parse,
        "reorder": reorder.parse,
        "device-status": status.parse,
    }

"""Which decoder a topic goes to: the configured sources as MQTT subscriptions and matchers."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

from devices.model import Message, Observation
from gateway.config import SourceKind, SourceSettings

Decoder = Callable[[Message], "list[Observation] | None"]


class Route(NamedTuple):
    kind: SourceKind
    decoder: Decoder
    fields: Mapping[str, str]  # the topic's named levels; a fresh dict for each message


class _Pattern:
    """One source's topic: literal levels to compare, ``{name}`` levels to capture."""

    __slots__ = ("captures", "kind", "levels", "literals", "qos")

    def __init__(self, kind: SourceKind, levels: tuple[str, ...], qos: int) -> None:
        self.kind = kind
        self.levels = levels
        self.qos = qos
        self.literals = tuple(
            (index, level) for index, level in enumerate(levels) if not level.startswith("{")
        )
        self.captures = tuple(
            (index, level[1:-1]) for index, level in enumerate(levels) if level.startswith("{")
        )

    @property
    def subscription(self) -> str:
        return "/".join("+" if level.startswith("{") else level for level in self.levels)

    def match(self, levels: list[str]) -> dict[str, str] | None:
        for index, literal in self.literals:
            if levels[index] != literal:
                return None
        fields = {}  # filled in a loop: a comprehension is a function call of its own
        for index, name in self.captures:
            fields[name] = levels[index]
        return fields


class Router:
    """Each topic is matched afresh: a source's patterns are few, and matching costs about
    what a cache lookup did once the cache held every ESPresense topic (visitors x rooms,
    half a kilobyte each: 50 MB for a big store's day)."""

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
        self._by_depth: dict[int, list[_Pattern]] = {}
        for pattern in self._patterns:  # in the sources' order: the first match wins
            self._by_depth.setdefault(len(pattern.levels), []).append(pattern)
        self._decoders = decoders

    def subscriptions(self) -> list[tuple[str, int]]:
        """(topic filter, qos) for every source, each once."""
        seen: dict[str, int] = {}
        for pattern in self._patterns:
            seen[pattern.subscription] = max(pattern.qos, seen.get(pattern.subscription, 0))
        return list(seen.items())

    def route(self, topic: str) -> Route | None:
        levels = topic.split("/")
        for pattern in self._by_depth.get(len(levels), ()):
            fields = pattern.match(levels)
            if fields is not None:
                route = (pattern.kind, self._decoders[pattern.kind], fields)
                return tuple.__new__(Route, route)  # one per message: see Inbound.delivered
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

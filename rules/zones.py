"""The store's zones and audiences, as ``store.yaml`` declares them.

A zone is where a visitor can be: the area covered by some scanners (an ESPresense room, a
Theengs gateway, a Wi-Fi access point or a Meraki AP tag, matched exactly against
``Sighting.scanner``), or a polygon on the floor plan (metres, as Meraki's x/y positions), or
both. An audience names a segment of visitors by their beacon identities, such as the store
app's iBeacon UUID with any major/minor.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Point = tuple[float, float]


class ZoneSpec(BaseModel):
    """One zone: its scanners, its floor polygon, or both."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    id: str = Field(min_length=1)
    name: str | None = None
    scanners: tuple[str, ...] = ()
    polygon: tuple[Point, ...] | None = None

    @field_validator("scanners")
    @classmethod
    def _named_scanners(cls, scanners: tuple[str, ...]) -> tuple[str, ...]:
        if any(not scanner for scanner in scanners):
            raise ValueError("a scanner name cannot be empty")
        if len(set(scanners)) != len(scanners):
            raise ValueError("a scanner is listed twice")
        return scanners

    @field_validator("polygon")
    @classmethod
    def _a_real_polygon(cls, polygon: tuple[Point, ...] | None) -> tuple[Point, ...] | None:
        if polygon is None:
            return None
        if len(polygon) < 3:
            raise ValueError(f"a polygon needs at least 3 points, got {len(polygon)}")
        return polygon

    @model_validator(mode="after")
    def _somewhere(self) -> ZoneSpec:
        if not self.scanners and self.polygon is None:
            raise ValueError(f"zone {self.id!r} needs scanners or a polygon")
        return self


class _Polygon:
    """A floor polygon, with its bounding box to reject far points cheaply."""

    __slots__ = ("edges", "max_x", "max_y", "min_x", "min_y")

    def __init__(self, points: tuple[Point, ...]) -> None:
        self.edges = [(points[i - 1], points[i]) for i in range(len(points))]
        xs = [x for x, _ in points]
        ys = [y for _, y in points]
        self.min_x, self.max_x, self.min_y, self.max_y = min(xs), max(xs), min(ys), max(ys)

    def contains(self, x: float, y: float) -> bool:
        """Ray casting: a point is inside when a ray from it crosses the boundary an odd
        number of times. The half-open test on y gives a point on an edge shared by two
        polygons to exactly one of them."""
        if not (self.min_x <= x <= self.max_x and self.min_y <= y <= self.max_y):
            return False
        inside = False
        for (x1, y1), (x2, y2) in self.edges:
            if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
                inside = not inside
        return inside

    def distance(self, x: float, y: float) -> float:
        """0 inside, else the distance to the nearest edge."""
        if self.contains(x, y):
            return 0.0
        return min(_segment_distance(x, y, a, b) for a, b in self.edges)


def _segment_distance(x: float, y: float, a: Point, b: Point) -> float:
    (ax, ay), (bx, by) = a, b
    dx, dy = bx - ax, by - ay
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0 else max(0.0, min(1.0, ((x - ax) * dx + (y - ay) * dy) / length2))
    return math.hypot(x - (ax + t * dx), y - (ay + t * dy))


class ZoneMap:
    """The zones of a store: which zone a scanner belongs to, which zone a point lies in."""

    def __init__(self, specs: Iterable[ZoneSpec]) -> None:
        self._specs: dict[str, ZoneSpec] = {}
        self._by_scanner: dict[str, str] = {}
        self._polygons: dict[str, _Polygon] = {}
        problems: list[str] = []
        for spec in specs:
            if spec.id in self._specs:
                problems.append(f"zone id {spec.id!r} is listed twice")
                continue
            self._specs[spec.id] = spec
            for scanner in spec.scanners:
                other = self._by_scanner.setdefault(scanner, spec.id)
                if other != spec.id:
                    # A scanner's sightings must say one zone, or a visitor's zone would
                    # depend on the order of the list.
                    problems.append(f"scanner {scanner!r} is in zones {other!r} and {spec.id!r}")
            if spec.polygon is not None:
                self._polygons[spec.id] = _Polygon(spec.polygon)
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def ids(self) -> tuple[str, ...]:
        """The zone ids, in the order they were declared."""
        return tuple(self._specs)

    def spec(self, zone_id: str) -> ZoneSpec | None:
        return self._specs.get(zone_id)

    def zone_of_scanner(self, scanner: str) -> str | None:
        return self._by_scanner.get(scanner)

    def zone_at(self, x: float, y: float) -> str | None:
        """The first declared zone whose polygon contains the point, if any."""
        for zone_id, polygon in self._polygons.items():
            if polygon.contains(x, y):
                return zone_id
        return None

    def distance_to(self, zone_id: str, x: float, y: float) -> float | None:
        """Metres from the point to the zone's polygon (0 inside); None without a polygon."""
        polygon = self._polygons.get(zone_id)
        return polygon.distance(x, y) if polygon is not None else None


class AudienceSpec(BaseModel):
    """A segment of visitors, by glob patterns on their identity (``fnmatch`` syntax)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    segment: str = Field(min_length=1)
    identities: tuple[str, ...] = Field(min_length=1)


class Audiences:
    """Which segment a visitor belongs to: the first audience with a matching pattern.

    Matching ignores case: beacon UUIDs are hex, which devices and people spell in either.
    """

    def __init__(self, specs: Iterable[AudienceSpec] = ()) -> None:
        # One alternation per segment: a visitor is matched once, when first seen.
        self._segments = [
            (
                spec.segment,
                re.compile("|".join(fnmatch.translate(p) for p in spec.identities), re.IGNORECASE),
            )
            for spec in specs
        ]

    def segment_of(self, identity: str | None) -> str | None:
        if identity is None:
            return None
        for segment, pattern in self._segments:
            if pattern.match(identity):
                return segment
        return None

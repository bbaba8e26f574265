"""Presence: which zone each visitor is in, turned into zone entered / exited / dwelled events.

Pure: every call takes the time it is asked about (timezone-aware); nothing reads a clock.
The same sightings at the same times always give the same events, in the same order.

A visitor is a beacon identity, or else the pseudonym of a MAC address. Each sighting either
places them by position (a Wi-Fi location inside a zone's polygon) or gives a distance to a
scanner (reported, or estimated from rssi), smoothed per scanner. The nearest zone with fresh
evidence is the *candidate*; the visitor's zone follows it with hysteresis:

* a visitor in no zone enters the candidate at once;
* a visitor in zone A moves to B only when B has been nearer than A by ``switch_margin_m``
  (or A has no fresh evidence at all) continuously for ``switch_after_s``. The move is dated
  from when B started being nearer: the wait confirms it, it is not part of either visit;
* a visitor not seen in their zone for ``away_timeout_s`` exits it.

Dwell runs from entering while the visitor's latest evidence of being in the zone is fresh
(``reading_ttl_s``) and no move away is pending, so a visitor who left is not credited with
the time it takes to notice. An exit is dated at, and reports the dwell up to, the visit's
last evidence: the move's start, or the last time the visitor was seen in the zone.

A visitor in no zone is forgotten after ``away_timeout_s`` of silence (or of having left a
zone, so that the rules evaluating an exit still find them). Past ``max_visitors`` the least
recently seen visitor is evicted, exiting their zone.

Time-driven work (exits, due moves, dwell thresholds) waits in a heap of per-visitor
deadlines, so ``tick`` touches only the visitors with something due.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from devices.model import Observation, Sighting
from rules.zones import Audiences, Point, ZoneMap

ExitReason = Literal["away", "moved", "evicted"]
_NO_TIME = timedelta(0)


class ZoneEvent(Observation, frozen=True, kw_only=True):
    """A presence transition. ``device_id`` is the scanner that last saw the visitor,
    ``observed_at`` the time of the transition."""

    visitor: str
    zone: str
    segment: str | None = None

    def subject(self) -> str | None:
        return self.visitor


class ZoneEntered(ZoneEvent, frozen=True, kw_only=True):
    event_type: ClassVar[str] = "lantern.zone.entered"


class ZoneExited(ZoneEvent, frozen=True, kw_only=True):
    event_type: ClassVar[str] = "lantern.zone.exited"

    dwell_s: float
    reason: ExitReason


class ZoneDwelled(ZoneEvent, frozen=True, kw_only=True):
    """The visitor's dwell in the zone reached ``threshold_s`` (once per threshold and visit)."""

    event_type: ClassVar[str] = "lantern.zone.dwelled"

    dwell_s: float
    threshold_s: float


class PresenceSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    # Weight of a new distance in the per-scanner moving average: BLE rssi jumps several dB
    # between adverts, and 0.3 damps a one-off jump to a third while following a walk within
    # a few readings.
    smoothing: float = Field(default=0.3, gt=0, le=1)
    # Someone standing on a border reads within about a metre of the scanners either side;
    # another zone must be nearer than that before it counts.
    switch_margin_m: float = Field(default=1.0, ge=0)
    # ... and for this long: a shopper leaning across the border does not move.
    switch_after_s: float = Field(default=5.0, ge=0)
    # Phones advertise irregularly and go quiet in pockets; half a minute unheard in their
    # zone means they left it.
    away_timeout_s: float = Field(default=30.0, gt=0)
    # Scanners report a device they still hear every few seconds: a reading not renewed for
    # 10 s is a scanner that lost it. Shorter than the away timeout so that a visitor who
    # walked on is placed by the scanner that hears them now.
    reading_ttl_s: float = Field(default=10.0, gt=0)
    # A big store has about 2,000 devices in range (docs/architecture.md, "A small store
    # box"); ten times that bounds memory (a few MiB) against a flood of randomised addresses.
    max_visitors: int = Field(default=20_000, ge=1)
    # The calibrated power at 1 m of a typical phone or iBeacon, for sightings without one.
    tx_power_1m_dbm: int = Field(default=-59, ge=-120, le=20)
    # Free-space propagation; crowded aisles are nearer 2.5-3, which a store can set.
    path_loss_exponent: float = Field(default=2.0, gt=0)


@dataclass(frozen=True, slots=True)
class VisitorView:
    """A visitor as the rules see it. ``dwell_s`` is 0 in no zone."""

    id: str
    segment: str | None
    zone: str | None
    entered_at: datetime | None
    dwell_s: float
    last_seen: datetime


class _Reading:
    """One scanner's smoothed distance to one visitor."""

    __slots__ = ("at", "distance_m", "zone")

    def __init__(self, zone: str, distance_m: float, at: datetime) -> None:
        self.zone = zone
        self.distance_m = distance_m
        self.at = at


class _Visitor:
    __slots__ = (
        "dwell_done_s",
        "entered_at",
        "id",
        "last_seen",
        "left_at",
        "pending",
        "pending_since",
        "position",
        "position_at",
        "readings",
        "scanner",
        "seen_in_zone",
        "segment",
        "wake_at",
        "wake_seq",
        "zone",
    )

    def __init__(self, visitor_id: str, segment: str | None, scanner: str, now: datetime) -> None:
        self.id = visitor_id
        self.segment = segment
        self.scanner = scanner  # the last scanner that saw them
        self.last_seen = now
        self.readings: dict[str, _Reading] = {}
        self.position: Point | None = None
        self.position_at = now
        self.zone: str | None = None
        self.entered_at = now
        self.seen_in_zone = now
        self.left_at = now  # when they last left a zone (or were first seen)
        self.pending: str | None = None  # the zone they may be moving to
        self.pending_since = now
        self.dwell_done_s = -1.0  # the highest threshold emitted this visit
        self.wake_at: datetime | None = None  # their live entry in the deadline heap
        self.wake_seq = 0


class _ReadingState(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    zone: str
    distance_m: float
    at: datetime


class _VisitorState(BaseModel):
    """One visitor as a snapshot keeps them; the segment is looked up again on restore."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    id: str
    scanner: str
    last_seen: datetime
    readings: dict[str, _ReadingState]
    position: tuple[float, float] | None
    position_at: datetime
    zone: str | None
    entered_at: datetime
    seen_in_zone: datetime
    left_at: datetime
    pending: str | None
    pending_since: datetime
    dwell_done_s: float


class PresenceSnapshot(BaseModel):
    """Everyone presence tracks, least recently seen first, as JSON-ready values."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    visitors: list[_VisitorState]


class PresenceEngine:
    """Visitors' zones from their sightings; see the module docstring for the rules."""

    def __init__(
        self,
        zones: ZoneMap,
        settings: PresenceSettings,
        audiences: Audiences | None = None,
        dwell_thresholds_s: Iterable[float] = (),
    ) -> None:
        self.zones = zones
        self.settings = settings
        self.evicted = 0
        self._audiences = audiences if audiences is not None else Audiences()
        self._ttl = timedelta(seconds=settings.reading_ttl_s)
        self._away = timedelta(seconds=settings.away_timeout_s)
        self._switch_after = timedelta(seconds=settings.switch_after_s)
        # Least recently seen first: eviction takes the front.
        self._visitors: OrderedDict[str, _Visitor] = OrderedDict()
        self._occupancy: dict[str, int] = {}
        self._wakes: list[tuple[datetime, int, _Visitor]] = []
        self._seq = 0
        self._thresholds: tuple[float, ...] = ()
        self._threshold_deltas: tuple[timedelta, ...] = ()
        self.set_dwell_thresholds(dwell_thresholds_s)

    # --- queries ---------------------------------------------------------------------------

    @property
    def visitor_count(self) -> int:
        return len(self._visitors)

    def occupancy(self) -> dict[str, int]:
        """Visitors per zone, for the zones that have any, in the zone map's order."""
        return {zone: count for zone in self.zones.ids if (count := self._occupancy.get(zone))}

    def visitor(self, visitor_id: str, now: datetime) -> VisitorView | None:
        v = self._visitors.get(visitor_id)
        if v is None:
            return None
        in_zone = v.zone is not None
        return VisitorView(
            id=v.id,
            segment=v.segment,
            zone=v.zone,
            entered_at=v.entered_at if in_zone else None,
            dwell_s=self._dwell(v, now).total_seconds() if in_zone else 0.0,
            last_seen=v.last_seen,
        )

    # --- carried across a restart -----------------------------------------------------------

    def snapshot(self) -> PresenceSnapshot:
        """Everyone being tracked, to restore after a restart instead of sending them all
        out of their zones and back in."""
        return PresenceSnapshot(
            visitors=[
                _VisitorState(
                    id=v.id,
                    scanner=v.scanner,
                    last_seen=v.last_seen,
                    readings={
                        scanner: _ReadingState(
                            zone=reading.zone, distance_m=reading.distance_m, at=reading.at
                        )
                        for scanner, reading in v.readings.items()
                    },
                    position=v.position,
                    position_at=v.position_at,
                    zone=v.zone,
                    entered_at=v.entered_at,
                    seen_in_zone=v.seen_in_zone,
                    left_at=v.left_at,
                    pending=v.pending,
                    pending_since=v.pending_since,
                    dwell_done_s=v.dwell_done_s,
                )
                for v in self._visitors.values()
            ]
        )

    def restore(self, snapshot: PresenceSnapshot) -> None:
        """Track the snapshot's visitors (into an engine tracking no one yet). What no longer
        exists on the zone map is dropped: a visitor whose zone is gone is in no zone. Their
        deadlines follow from their times, so the first tick sends away those who left while
        the gateway was down, dated when they were last seen."""
        if self._visitors:
            raise ValueError("restore into an engine that already tracks visitors")
        known = set(self.zones.ids)
        for state in snapshot.visitors[-self.settings.max_visitors :]:
            v = _Visitor(
                state.id, self._audiences.segment_of(state.id), state.scanner, state.last_seen
            )
            v.readings = {
                scanner: _Reading(reading.zone, reading.distance_m, reading.at)
                for scanner, reading in state.readings.items()
                if reading.zone in known
            }
            v.position, v.position_at = state.position, state.position_at
            v.entered_at, v.seen_in_zone = state.entered_at, state.seen_in_zone
            v.left_at, v.dwell_done_s = state.left_at, state.dwell_done_s
            if state.zone in known:
                v.zone = state.zone
                self._occupancy[state.zone] = self._occupancy.get(state.zone, 0) + 1
                if state.pending in known:
                    v.pending, v.pending_since = state.pending, state.pending_since
            self._visitors[v.id] = v
            self._schedule(v)

    # --- configuration ---------------------------------------------------------------------

    def set_dwell_thresholds(self, thresholds_s: Iterable[float]) -> None:
        """The dwell thresholds to report, from the rules (a reload replaces them).

        A visit keeps what it has reported: a new threshold below the highest one already
        emitted in a visit is not back-filled, and none is emitted twice.
        """
        # As floats: a threshold becomes a ZoneDwelled's threshold_s, whose JSON says 45.0.
        thresholds = tuple(sorted({float(threshold) for threshold in thresholds_s}))
        if any(not math.isfinite(t) or t < 0 for t in thresholds):
            raise ValueError(f"dwell thresholds must be finite and >= 0, got {thresholds}")
        self._thresholds = thresholds
        self._threshold_deltas = tuple(timedelta(seconds=t) for t in thresholds)
        for v in self._visitors.values():
            self._schedule(v)

    # --- input -----------------------------------------------------------------------------

    def observe(self, sighting: Sighting, now: datetime) -> list[ZoneEvent]:
        """Update the visitor the sighting is about; the transitions it causes, in order."""
        visitor_id = sighting.identity or sighting.mac
        if not visitor_id:
            return []
        if now.tzinfo is None:
            raise ValueError("presence needs timezone-aware times")
        events: list[ZoneEvent] = []
        v = self._visitors.get(visitor_id)
        if v is not None and v.zone is not None and now - v.seen_in_zone >= self._away:
            # Gone for the away timeout but not yet sent away (a restored visitor before the
            # first tick, or one who came back between two ticks): this is a new visit.
            v.wake_at = None
            self._wake(v, now, events)
            v = self._visitors.get(visitor_id)
        if v is None:
            v = self._admit(visitor_id, sighting.scanner, now, events)
        else:
            self._visitors.move_to_end(visitor_id)
            v.scanner = sighting.scanner
            v.last_seen = now
        scanner_zone = self.zones.zone_of_scanner(sighting.scanner)
        candidate = self._locate(v, sighting, scanner_zone, now)
        if v.zone is None:
            if candidate is not None:
                self._enter(v, candidate, now, events)
        else:
            if self._places_in_zone(v.zone, sighting, scanner_zone):
                v.seen_in_zone = now
            self._follow(v, candidate, now, events)
        self._report_dwell(v, now, events)
        self._schedule(v)
        return events

    def tick(self, now: datetime) -> list[ZoneEvent]:
        """The time-driven transitions due by ``now``: moves, away exits, dwell thresholds,
        and forgetting visitors in no zone who went silent."""
        events: list[ZoneEvent] = []
        wakes = self._wakes
        # A deadline pushed during this tick waits for the next one: a tick's work is
        # bounded by what was due when it started.
        last_seq = self._seq
        while wakes and wakes[0][0] <= now and wakes[0][1] <= last_seq:
            _, seq, v = heapq.heappop(wakes)
            if v.wake_seq != seq or self._visitors.get(v.id) is not v:
                continue  # superseded by an earlier deadline, or the visitor is gone
            v.wake_at = None
            self._wake(v, now, events)
        return events

    # --- locating --------------------------------------------------------------------------

    def _locate(
        self, v: _Visitor, sighting: Sighting, scanner_zone: str | None, now: datetime
    ) -> str | None:
        """Record the sighting's evidence (``scanner_zone``: the zone of the scanner that
        heard it); the candidate zone it leaves the visitor with."""
        if sighting.position is not None:
            v.position = sighting.position
            v.position_at = now
            zone = self.zones.zone_at(*sighting.position)
            if zone is not None:
                return zone
        distance_m = self._distance_m(sighting)
        if scanner_zone is not None and distance_m is not None:
            reading = v.readings.get(sighting.scanner)
            if reading is None or now - reading.at > self._ttl:
                v.readings[sighting.scanner] = _Reading(scanner_zone, distance_m, now)
            else:
                alpha = self.settings.smoothing
                reading.distance_m = alpha * distance_m + (1 - alpha) * reading.distance_m
                reading.at = now
        return self._nearest(v, now)

    def _distance_m(self, sighting: Sighting) -> float | None:
        if sighting.distance_m is not None:
            usable = math.isfinite(sighting.distance_m) and sighting.distance_m >= 0
            return sighting.distance_m if usable else None
        if sighting.rssi is None or not math.isfinite(sighting.rssi):
            return None
        tx_power = sighting.tx_power
        if tx_power is None:
            tx_power = self.settings.tx_power_1m_dbm
        try:  # log-distance path loss
            return math.pow(
                10.0, (tx_power - sighting.rssi) / (10.0 * self.settings.path_loss_exponent)
            )
        except OverflowError:  # an absurd rssi from a device must not stop presence
            return None

    def _nearest(self, v: _Visitor, now: datetime) -> str | None:
        """The zone of the nearest fresh reading; stale readings are dropped on the way."""
        best: _Reading | None = None
        stale: list[str] = []
        fresh_since = now - self._ttl
        for scanner, reading in v.readings.items():
            if reading.at < fresh_since:
                stale.append(scanner)
            elif best is None or reading.distance_m < best.distance_m:
                best = reading
        for scanner in stale:
            del v.readings[scanner]
        return best.zone if best is not None else None

    def _evidence(self, v: _Visitor, zone: str, now: datetime) -> tuple[float, datetime] | None:
        """The visitor's best fresh distance to the zone and the latest evidence's time."""
        best: float | None = None
        latest: datetime | None = None
        for reading in v.readings.values():
            if reading.zone == zone and now - reading.at <= self._ttl:
                best = reading.distance_m if best is None else min(best, reading.distance_m)
                latest = reading.at if latest is None else max(latest, reading.at)
        if v.position is not None and now - v.position_at <= self._ttl:
            distance_m = self.zones.distance_to(zone, *v.position)
            if distance_m is not None:
                best = distance_m if best is None else min(best, distance_m)
                latest = v.position_at if latest is None else max(latest, v.position_at)
        return (best, latest) if best is not None and latest is not None else None

    def _places_in_zone(self, zone: str, sighting: Sighting, scanner_zone: str | None) -> bool:
        """Whether the sighting is evidence the visitor is still in ``zone``."""
        if scanner_zone == zone:
            return True
        if sighting.position is None:
            return False
        distance_m = self.zones.distance_to(zone, *sighting.position)
        # A Wi-Fi position wobbles by metres: just outside the polygon still counts.
        return distance_m is not None and distance_m <= self.settings.switch_margin_m

    # --- transitions -----------------------------------------------------------------------

    def _follow(
        self, v: _Visitor, candidate: str | None, now: datetime, events: list[ZoneEvent]
    ) -> None:
        """Hysteresis: start, keep, reset or complete a pending move to the candidate."""
        if candidate is None or candidate == v.zone or not self._nearer(v, candidate, now):
            v.pending = None
            return
        if v.pending != candidate:
            v.pending = candidate
            v.pending_since = now
        if now - v.pending_since >= self._switch_after:
            self._move(v, candidate, now, events)

    def _nearer(self, v: _Visitor, zone: str, now: datetime) -> bool:
        there = self._evidence(v, zone, now)
        if there is None:
            return False
        here = self._evidence(v, v.zone, now) if v.zone is not None else None
        return here is None or there[0] < here[0] - self.settings.switch_margin_m

    def _move(self, v: _Visitor, zone: str, now: datetime, events: list[ZoneEvent]) -> None:
        since = v.pending_since
        self._exit(v, "moved", since, events)
        self._enter(v, zone, since, events)
        evidence = self._evidence(v, zone, now)
        if evidence is not None and evidence[1] > since:
            v.seen_in_zone = evidence[1]

    def _enter(self, v: _Visitor, zone: str, at: datetime, events: list[ZoneEvent]) -> None:
        v.zone = zone
        v.entered_at = at
        v.seen_in_zone = at
        v.pending = None
        v.dwell_done_s = -1.0
        self._occupancy[zone] = self._occupancy.get(zone, 0) + 1
        events.append(
            ZoneEntered(
                device_id=v.scanner, observed_at=at, visitor=v.id, zone=zone, segment=v.segment
            )
        )

    def _exit(self, v: _Visitor, reason: ExitReason, at: datetime, events: list[ZoneEvent]) -> None:
        """Leave the current zone, the visit having lasted until ``at``."""
        zone = v.zone
        if zone is None:
            return
        left = self._occupancy[zone] - 1
        if left:
            self._occupancy[zone] = left
        else:
            del self._occupancy[zone]
        v.zone = None
        v.pending = None
        events.append(
            ZoneExited(
                device_id=v.scanner,
                observed_at=at,
                visitor=v.id,
                zone=zone,
                segment=v.segment,
                dwell_s=max(0.0, (at - v.entered_at).total_seconds()),
                reason=reason,
            )
        )

    def _dwell(self, v: _Visitor, now: datetime) -> timedelta:
        """Time in the current zone, counted while the evidence for it holds."""
        until = v.seen_in_zone + self._ttl
        if now < until:
            until = now
        if v.pending is not None and v.pending_since < until:
            until = v.pending_since
        dwell = until - v.entered_at
        return dwell if dwell > _NO_TIME else _NO_TIME

    def _report_dwell(self, v: _Visitor, now: datetime, events: list[ZoneEvent]) -> None:
        if v.zone is None:
            return
        index = bisect_right(self._thresholds, v.dwell_done_s)
        if index == len(self._thresholds) or now - v.entered_at < self._threshold_deltas[index]:
            return  # every threshold reported, or the next one not reached even by the clock
        dwell = self._dwell(v, now)
        while index < len(self._thresholds) and self._threshold_deltas[index] <= dwell:
            threshold = self._thresholds[index]
            events.append(
                ZoneDwelled(
                    device_id=v.scanner,
                    observed_at=now,
                    visitor=v.id,
                    zone=v.zone,
                    segment=v.segment,
                    dwell_s=dwell.total_seconds(),
                    threshold_s=threshold,
                )
            )
            v.dwell_done_s = threshold
            index += 1

    # --- the visitor table and its deadlines -----------------------------------------------

    def _admit(
        self, visitor_id: str, scanner: str, now: datetime, events: list[ZoneEvent]
    ) -> _Visitor:
        while len(self._visitors) >= self.settings.max_visitors:
            _, oldest = self._visitors.popitem(last=False)
            self._exit(oldest, "evicted", oldest.seen_in_zone, events)
            self.evicted += 1
        v = _Visitor(visitor_id, self._audiences.segment_of(visitor_id), scanner, now)
        self._visitors[visitor_id] = v
        return v

    def _wake(self, v: _Visitor, now: datetime, events: list[ZoneEvent]) -> None:
        """Whatever is due for one visitor at ``now``; then their next deadline."""
        pending = v.pending
        if pending is not None and now - v.pending_since >= self._switch_after:
            if self._nearer(v, pending, now):
                self._move(v, pending, now, events)
            else:
                v.pending = None
        if v.zone is not None and now - v.seen_in_zone >= self._away:
            self._exit(v, "away", v.seen_in_zone, events)
            v.left_at = now
        self._report_dwell(v, now, events)
        if v.zone is None and now - max(v.last_seen, v.left_at) >= self._away:
            del self._visitors[v.id]
            return
        self._schedule(v)

    def _schedule(self, v: _Visitor) -> None:
        """Make sure the heap wakes the visitor at their next deadline (or earlier: a wake
        with nothing due just reschedules, which spares a push on every sighting)."""
        if v.zone is None:
            # Someone who just left stays known as long again: the rules evaluating their
            # exit, after this tick, still see their segment.
            due = max(v.last_seen, v.left_at) + self._away
        else:
            due = v.seen_in_zone + self._away
            if v.pending is not None:
                due = min(due, v.pending_since + self._switch_after)
            else:
                index = bisect_right(self._thresholds, v.dwell_done_s)
                if index < len(self._thresholds):
                    dwell_due = v.entered_at + self._threshold_deltas[index]
                    # Beyond the fresh evidence the dwell stands still: the next sighting
                    # in the zone reports it instead.
                    if dwell_due <= v.seen_in_zone + self._ttl:
                        due = min(due, dwell_due)
        if v.wake_at is not None and v.wake_at <= due:
            return
        self._seq += 1
        v.wake_at = due
        v.wake_seq = self._seq
        heapq.heappush(self._wakes, (due, self._seq, v))

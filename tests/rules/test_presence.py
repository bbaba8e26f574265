"""The presence engine on plain values and a fake clock: every test asserts the exact events."""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from pydantic import ValidationError

from devices.model import Sighting
from rules.presence import (
    PresenceEngine,
    PresenceSettings,
    PresenceSnapshot,
    VisitorView,
    ZoneDwelled,
    ZoneEntered,
    ZoneEvent,
    ZoneExited,
)
from rules.zones import Audiences, AudienceSpec, ZoneMap, ZoneSpec

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
LOYALTY = "e2c56db5-dffb-48d2-b060-d0f5a71096e0"
MEMBER = f"ibeacon:{LOYALTY}-100-3"

# Two rooms with a scanner each, a third room with two, and three aisles on the floor plan.
ZONES = ZoneMap(
    [
        ZoneSpec(id="a", scanners=("sa",)),
        ZoneSpec(id="b", scanners=("sb",)),
        ZoneSpec(id="c", scanners=("sc1", "sc2")),
        ZoneSpec(id="aisle-1", polygon=((0, 0), (20, 0), (20, 4), (0, 4))),
        ZoneSpec(id="aisle-2", polygon=((0, 4), (20, 4), (20, 8), (0, 8))),
    ]
)
# Smoothing off where a test is about timing, so that each distance is the one sent.
SHARP = PresenceSettings(smoothing=1.0)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def sighting(visitor: str | None, scanner: str, **fields: Any) -> Sighting:
    identity = visitor if visitor is not None and ":" in visitor else None
    mac = visitor if identity is None else None
    return Sighting(device_id=scanner, scanner=scanner, identity=identity, mac=mac, **fields)


def entered(visitor: str, zone: str, t: float, scanner: str, **fields: Any) -> ZoneEntered:
    return ZoneEntered(device_id=scanner, observed_at=at(t), visitor=visitor, zone=zone, **fields)


def exited(
    visitor: str, zone: str, t: float, scanner: str, dwell_s: float, reason: str, **fields: Any
) -> ZoneExited:
    return ZoneExited(
        device_id=scanner,
        observed_at=at(t),
        visitor=visitor,
        zone=zone,
        dwell_s=dwell_s,
        reason=reason,
        **fields,
    )


def dwelled(
    visitor: str, zone: str, t: float, scanner: str, dwell_s: float, threshold_s: float
) -> ZoneDwelled:
    return ZoneDwelled(
        device_id=scanner,
        observed_at=at(t),
        visitor=visitor,
        zone=zone,
        dwell_s=dwell_s,
        threshold_s=threshold_s,
    )


class Clock:
    """Drives an engine the way the gateway does: sightings as they come, a tick a second."""

    def __init__(self, engine: PresenceEngine) -> None:
        self.engine = engine
        self.now = 0.0
        self.events: list[ZoneEvent] = []

    def run_to(self, seconds: float) -> list[ZoneEvent]:
        """Tick every whole second up to ``seconds``; the events the ticks gave."""
        out: list[ZoneEvent] = []
        while self.now + 1 <= seconds:
            self.now += 1
            out += self.engine.tick(at(self.now))
        self.events += out
        return out

    def see(self, seconds: float, visitor: str, scanner: str, **fields: Any) -> list[ZoneEvent]:
        """Tick up to ``seconds``, then the sighting; all the events from both."""
        out = self.run_to(seconds)
        seen = self.engine.observe(sighting(visitor, scanner, **fields), at(seconds))
        self.events += seen
        return out + seen


def engine(
    settings: PresenceSettings = SHARP,
    thresholds: Iterable[float] = (),
    audiences: Audiences | None = None,
) -> PresenceEngine:
    return PresenceEngine(ZONES, settings, audiences, thresholds)


# --- entering ------------------------------------------------------------------------------


def test_a_first_sighting_enters_its_scanners_zone_at_once() -> None:
    presence = engine()
    assert presence.observe(sighting("v1", "sa", distance_m=2.0), at(0)) == [
        entered("v1", "a", 0, "sa")
    ]
    assert presence.observe(sighting("v1", "sa", distance_m=2.0), at(1)) == []
    assert presence.occupancy() == {"a": 1}
    assert presence.visitor("v1", at(4)) == VisitorView(
        id="v1", segment=None, zone="a", entered_at=at(0), dwell_s=4.0, last_seen=at(1)
    )


def test_a_sighting_that_cannot_place_anyone_gives_nothing() -> None:
    presence = engine()
    assert presence.observe(sighting(None, "sa", distance_m=1.0), at(0)) == []  # no visitor
    assert presence.visitor_count == 0
    assert presence.observe(sighting("v1", "sa"), at(0)) == []  # neither distance nor rssi
    assert presence.observe(sighting("v1", "elsewhere", distance_m=1.0), at(1)) == []  # no zone
    assert presence.visitor_count == 1  # known, in no zone
    assert presence.visitor("v1", at(1)) == VisitorView(
        id="v1", segment=None, zone=None, entered_at=None, dwell_s=0.0, last_seen=at(1)
    )


def test_the_identity_names_the_visitor_before_the_mac() -> None:
    presence = engine()
    both = Sighting(device_id="sa", scanner="sa", identity=MEMBER, mac="p-1", distance_m=1.0)
    (event,) = presence.observe(both, at(0))
    assert event.visitor == MEMBER
    assert presence.visitor("p-1", at(0)) is None


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        engine().observe(sighting("v1", "sa", distance_m=1.0), datetime(2026, 11, 24, 9, 0))


# --- hysteresis ----------------------------------------------------------------------------


def test_a_shopper_on_a_border_between_two_scanners_does_not_flap() -> None:
    clock = Clock(engine(PresenceSettings()))  # default smoothing
    clock.see(0, "v1", "sa", distance_m=2.0)
    for second in range(1, 120):
        # Each scanner in turn reads the other a little nearer: never by a metre.
        scanner, distance_m = ("sb", 1.8) if second % 2 else ("sa", 2.3)
        clock.see(second, "v1", scanner, distance_m=distance_m)
    clock.run_to(200)
    # Last heard by a's scanner at 118 (by b's at 119): away from a, never moved.
    assert clock.events == [entered("v1", "a", 0, "sa"), exited("v1", "a", 118, "sb", 118, "away")]


def test_a_clear_move_switches_after_switch_after_s_and_not_before() -> None:
    clock = Clock(engine())
    clock.see(0, "v1", "sa", distance_m=1.0)
    for second in range(10, 15):
        assert clock.see(second, "v1", "sa", distance_m=6.0) == []
        assert clock.see(second, "v1", "sb", distance_m=1.0) == []
    # Nearer since 10: the move is confirmed at 15 and dated from 10.
    assert clock.run_to(15) == [
        exited("v1", "a", 10, "sb", 10, "moved"),
        entered("v1", "b", 10, "sb"),
    ]
    assert clock.engine.occupancy() == {"b": 1}


def test_a_move_is_confirmed_by_a_sighting_as_well_as_by_the_tick() -> None:
    presence = engine()
    presence.observe(sighting("v1", "sa", distance_m=1.0), at(0))
    presence.observe(sighting("v1", "sa", distance_m=6.0), at(10))
    assert presence.observe(sighting("v1", "sb", distance_m=1.0), at(10)) == []
    presence.observe(sighting("v1", "sa", distance_m=6.0), at(14))
    assert presence.observe(sighting("v1", "sb", distance_m=1.0), at(15)) == [
        exited("v1", "a", 10, "sb", 10, "moved"),
        entered("v1", "b", 10, "sb"),
    ]


def test_the_wait_restarts_when_the_other_zone_stops_being_clearly_nearer() -> None:
    clock = Clock(engine())
    clock.see(0, "v1", "sa", distance_m=1.0)
    clock.see(10, "v1", "sa", distance_m=6.0)
    clock.see(10, "v1", "sb", distance_m=1.0)  # nearer since 10
    clock.see(12, "v1", "sa", distance_m=1.5)  # not by a metre any more
    clock.see(13, "v1", "sa", distance_m=6.0)  # nearer again since 13
    assert clock.run_to(17) == []
    assert clock.run_to(18) == [
        exited("v1", "a", 13, "sa", 13, "moved"),
        entered("v1", "b", 13, "sa"),
    ]


def test_a_zone_whose_scanner_lost_the_visitor_gives_way_after_the_reading_ttl() -> None:
    clock = Clock(engine())  # reading_ttl_s 10, switch_after_s 5
    for second in range(0, 10, 2):
        clock.see(second, "v1", "sa", distance_m=1.5)
    for second in range(10, 20, 2):  # as near to b as it was to a: no margin to win by
        assert clock.see(second, "v1", "sb", distance_m=1.5) == []
    # a's last reading (8) is stale at 20: b is nearer from then on, confirmed at 25.
    clock.see(20, "v1", "sb", distance_m=1.5)
    assert clock.run_to(24) == []
    assert clock.run_to(25) == [
        exited("v1", "a", 20, "sb", 20, "moved"),
        entered("v1", "b", 20, "sb"),
    ]


def test_readings_are_smoothed_per_scanner() -> None:
    clock = Clock(engine(PresenceSettings(smoothing=0.5)))
    clock.see(0, "v1", "sa", distance_m=2.0)
    clock.see(1, "v1", "sb", distance_m=4.0)
    # One near reading of b only halves the way to it: 2.5 is not a metre nearer than 2.
    clock.see(2, "v1", "sb", distance_m=1.0)
    clock.see(3, "v1", "sa", distance_m=2.0)
    clock.see(9, "v1", "sa", distance_m=2.0)
    clock.see(9, "v1", "sb", distance_m=1.0)  # 1.75
    clock.see(10, "v1", "sb", distance_m=0.5)  # 1.125: nearer, but not by a metre
    clock.see(11, "v1", "sb", distance_m=0.5)  # 0.8125: by more than a metre
    assert clock.see(14, "v1", "sa", distance_m=2.0) == []
    assert clock.events == [entered("v1", "a", 0, "sa")]
    assert clock.run_to(16) == [
        exited("v1", "a", 11, "sa", 11, "moved"),
        entered("v1", "b", 11, "sa"),
    ]


def test_the_nearest_of_a_zones_scanners_counts() -> None:
    presence = engine()
    presence.observe(sighting("v1", "sa", distance_m=3.0), at(0))
    presence.observe(sighting("v1", "sc1", distance_m=9.0), at(1))
    presence.observe(sighting("v1", "sc2", distance_m=1.5), at(1))
    assert presence.observe(sighting("v1", "sc1", distance_m=9.0), at(6)) == [
        exited("v1", "a", 1, "sc1", 1, "moved"),
        entered("v1", "c", 1, "sc1"),
    ]


# --- distance from rssi --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tx_power", "moves"),
    [
        (-75, True),  # -75 dBm from a beacon sending -75 at 1 m: 1 m away
        (None, False),  # with the default -59 at 1 m it would be 6.3 m away
    ],
)
def test_distance_comes_from_rssi_and_tx_power_when_not_reported(
    tx_power: int | None, moves: bool
) -> None:
    presence = engine()
    # -69 dBm against -59 at 1 m, path loss exponent 2: 10^(10/20) = 3.16 m from b.
    assert presence.observe(sighting("v1", "sb", rssi=-69.0), at(0)) == [
        entered("v1", "b", 0, "sb")
    ]
    presence.observe(sighting("v1", "sa", rssi=-75.0, tx_power=tx_power), at(1))
    presence.observe(sighting("v1", "sb", rssi=-69.0), at(5))
    events = presence.observe(sighting("v1", "sa", rssi=-75.0, tx_power=tx_power), at(6))
    expected = [exited("v1", "b", 1, "sa", 1, "moved"), entered("v1", "a", 1, "sa")]
    assert events == (expected if moves else [])


def test_the_path_loss_exponent_and_default_power_are_settings() -> None:
    # -79 dBm: 10 m at exponent 2, but 10^(20/40) = 3.2 m at exponent 4.
    presence = engine(PresenceSettings(smoothing=1.0, path_loss_exponent=4.0))
    presence.observe(sighting("v1", "sa", distance_m=5.0), at(0))
    presence.observe(sighting("v1", "sb", rssi=-79.0), at(0))
    assert presence.observe(sighting("v1", "sb", rssi=-79.0), at(5)) == [
        exited("v1", "a", 0, "sb", 0, "moved"),
        entered("v1", "b", 0, "sb"),
    ]


def test_an_absurd_reading_is_ignored() -> None:
    presence = engine()
    assert presence.observe(sighting("v1", "sa", rssi=-1e308), at(0)) == []
    assert presence.observe(sighting("v1", "sa", distance_m=float("nan")), at(0)) == []
    assert presence.observe(sighting("v1", "sa", distance_m=-1.0), at(0)) == []
    assert presence.occupancy() == {}


# --- Wi-Fi positions -----------------------------------------------------------------------


def wifi(seconds: float, x: float, y: float) -> tuple[Sighting, datetime]:
    seen = Sighting(
        device_id="meraki", scanner="ap-9", mac="p-7", position=(x, y), technology="wifi"
    )
    return seen, at(seconds)


def test_a_wifi_position_inside_a_polygon_places_the_visitor() -> None:
    presence = engine()
    assert presence.observe(*wifi(0, 2.0, 2.0)) == [entered("p-7", "aisle-1", 0, "ap-9")]
    # Half a metre over the border: within the margin of aisle-1, no move however long.
    for second in range(5, 60, 5):
        assert presence.observe(*wifi(second, 3.0, 4.5)) == []
        assert presence.tick(at(second + 1)) == []
    # Two metres in: a move, once it has lasted switch_after_s.
    assert presence.observe(*wifi(60, 4.0, 6.0)) == []
    assert presence.observe(*wifi(65, 5.0, 6.0)) == [
        exited("p-7", "aisle-1", 60, "ap-9", 60, "moved"),
        entered("p-7", "aisle-2", 60, "ap-9"),
    ]


def test_a_wifi_position_outside_every_polygon_falls_back_to_the_scanner() -> None:
    presence = engine()
    outside = Sighting(device_id="ap", scanner="sa", mac="p-7", position=(50.0, 50.0), rssi=-59.0)
    assert presence.observe(outside, at(0)) == [entered("p-7", "a", 0, "sa")]


# --- leaving and dwelling ------------------------------------------------------------------


def test_a_visitor_unheard_in_their_zone_for_the_away_timeout_exits_with_their_dwell() -> None:
    clock = Clock(engine())
    for second in range(0, 25, 5):
        clock.see(second, "v1", "sa", distance_m=1.0)
    assert clock.run_to(49) == []
    # Last heard at 20, in since 0: gone at 50, after 20 s in the zone.
    assert clock.run_to(50) == [exited("v1", "a", 20, "sa", 20, "away")]
    assert clock.engine.occupancy() == {}
    # Still known a while, so that rules on the exit see the visitor; then forgotten.
    assert clock.engine.visitor("v1", at(60)) is not None
    clock.run_to(79)
    assert clock.engine.visitor_count == 1
    clock.run_to(80)
    assert clock.engine.visitor_count == 0


def test_a_visitor_heard_only_outside_the_zones_still_leaves_their_zone() -> None:
    clock = Clock(engine())
    clock.see(0, "v1", "sa", distance_m=1.0)
    for second in range(2, 40, 2):
        clock.see(second, "v1", "corridor", distance_m=1.0)
    clock.run_to(60)
    assert clock.events == [
        entered("v1", "a", 0, "sa"),
        exited("v1", "a", 0, "corridor", 0, "away"),
    ]
    assert clock.engine.visitor("v1", at(60)) is not None  # heard at 38: not forgotten yet


def test_an_unplaced_visitor_who_goes_silent_is_forgotten() -> None:
    clock = Clock(engine())
    clock.see(0, "v1", "corridor", distance_m=1.0)
    clock.run_to(29)
    assert clock.engine.visitor_count == 1
    clock.run_to(30)
    assert clock.engine.visitor_count == 0
    assert clock.events == []


def test_each_dwell_threshold_is_reported_once_per_visit() -> None:
    clock = Clock(engine(thresholds=(30, 10, 10)))
    for second in range(0, 60, 2):
        clock.see(second, "v1", "sa", distance_m=1.0)
    clock.run_to(100)
    clock.see(100, "v1", "sa", distance_m=1.0)  # a second visit
    clock.run_to(111)
    assert clock.events == [
        entered("v1", "a", 0, "sa"),
        dwelled("v1", "a", 10, "sa", 10, 10),
        dwelled("v1", "a", 30, "sa", 30, 30),
        exited("v1", "a", 58, "sa", 58, "away"),
        entered("v1", "a", 100, "sa"),
        dwelled("v1", "a", 110, "sa", 10, 10),
    ]


def test_a_sighting_reports_a_threshold_passed_between_ticks() -> None:
    presence = engine(thresholds=(5, 10))
    presence.observe(sighting("v1", "sa", distance_m=1.0), at(0))
    assert presence.observe(sighting("v1", "sa", distance_m=1.0), at(12.5)) == [
        dwelled("v1", "a", 12.5, "sa", 12.5, 5),
        dwelled("v1", "a", 12.5, "sa", 12.5, 10),
    ]
    assert presence.tick(at(13)) == []


def test_dwell_stops_counting_when_the_evidence_runs_out() -> None:
    clock = Clock(engine(thresholds=(20,)))
    for second in range(0, 6, 2):
        clock.see(second, "v1", "sa", distance_m=1.0)
    # Last heard at 4: dwell stands still at 14 once that reading is stale.
    assert clock.engine.visitor("v1", at(25)) == VisitorView(
        id="v1", segment=None, zone="a", entered_at=at(0), dwell_s=14.0, last_seen=at(4)
    )
    clock.run_to(60)
    assert clock.events == [entered("v1", "a", 0, "sa"), exited("v1", "a", 4, "sa", 4, "away")]


def test_dwell_pauses_while_a_move_is_pending() -> None:
    clock = Clock(engine(thresholds=(12,)))
    clock.see(0, "v1", "sa", distance_m=1.0)
    clock.see(10, "v1", "sa", distance_m=6.0)
    clock.see(10, "v1", "sb", distance_m=1.0)
    # Between 10 and the move at 15 the visitor was leaving a: 12 s in a are never reached.
    clock.see(14, "v1", "sb", distance_m=1.0)
    clock.run_to(30)
    assert clock.events == [
        entered("v1", "a", 0, "sa"),
        exited("v1", "a", 10, "sb", 10, "moved"),
        entered("v1", "b", 10, "sb"),
        dwelled("v1", "b", 22, "sb", 12, 12),
    ]


def test_reloaded_thresholds_apply_without_repeating_or_back_filling() -> None:
    clock = Clock(engine(thresholds=(10,)))
    for second in range(0, 40, 2):
        clock.see(second, "v1", "sa", distance_m=1.0)
        if second == 14:
            clock.engine.set_dwell_thresholds((5, 10, 20))
    clock.run_to(40)
    dwells = [event for event in clock.events if isinstance(event, ZoneDwelled)]
    assert dwells == [dwelled("v1", "a", 10, "sa", 10, 10), dwelled("v1", "a", 20, "sa", 20, 20)]


def test_a_new_lower_threshold_is_scheduled_at_once() -> None:
    clock = Clock(engine())
    for second in range(0, 20, 2):
        clock.see(second, "v1", "sa", distance_m=1.0)
        if second == 2:
            clock.engine.set_dwell_thresholds((3,))
    assert [event for event in clock.events if isinstance(event, ZoneDwelled)] == [
        dwelled("v1", "a", 3, "sa", 3, 3)
    ]


def test_thresholds_must_be_finite_and_not_negative() -> None:
    presence = engine()
    for bad in ((-1.0,), (float("inf"),), (float("nan"),)):
        with pytest.raises(ValueError, match="dwell thresholds"):
            presence.set_dwell_thresholds(bad)


# --- segments, events ----------------------------------------------------------------------


def test_visitors_carry_their_audience_segment() -> None:
    audiences = Audiences([AudienceSpec(segment="loyalty", identities=(f"ibeacon:{LOYALTY}-*",))])
    presence = engine(thresholds=(1,), audiences=audiences)
    member = Sighting(
        device_id="sa", scanner="sa", identity=f"iBeacon:{LOYALTY.upper()}-1-2", distance_m=1.0
    )
    (event,) = presence.observe(member, at(0))
    assert event == entered(f"iBeacon:{LOYALTY.upper()}-1-2", "a", 0, "sa", segment="loyalty")
    assert presence.observe(sighting("p-3", "sa", distance_m=1.0), at(0)) == [
        entered("p-3", "a", 0, "sa")
    ]
    (view,) = [presence.visitor(f"iBeacon:{LOYALTY.upper()}-1-2", at(2))]
    assert view is not None and view.segment == "loyalty"
    assert [event.segment for event in presence.tick(at(1))] == ["loyalty", None]


def test_zone_events_become_cloud_events_with_typed_data() -> None:
    exit_event = exited(MEMBER, "a", 20, "sa", 20.5, "away", segment="loyalty")
    assert exit_event.cloud_event_type() == "lantern.zone.exited"
    assert exit_event.subject() == MEMBER
    assert exit_event.event_data() == {
        "visitor": MEMBER,
        "zone": "a",
        "segment": "loyalty",
        "dwell_s": 20.5,
        "reason": "away",
    }
    dwell_event = dwelled("p-1", "b", 5, "sb", 45.2, 45)
    assert dwell_event.cloud_event_type() == "lantern.zone.dwelled"
    assert dwell_event.event_data() == {
        "visitor": "p-1",
        "zone": "b",
        "dwell_s": 45.2,
        "threshold_s": 45.0,
    }
    assert entered("p-1", "b", 0, "sb").event_data() == {"visitor": "p-1", "zone": "b"}
    assert entered("p-1", "b", 0, "sb").cloud_event_type() == "lantern.zone.entered"
    # Events are built unchecked (mypy holds the engine to the three reasons); read back from
    # JSON, an event with another reason is refused.
    unknown_reason = msgspec.to_builtins(exit_event) | {"reason": "lost"}
    with pytest.raises(msgspec.ValidationError, match="reason"):
        msgspec.convert(unknown_reason, ZoneExited)


# --- the cap and occupancy -----------------------------------------------------------------


def test_past_the_cap_the_least_recently_seen_visitor_is_evicted() -> None:
    presence = engine(PresenceSettings(smoothing=1.0, max_visitors=2))
    presence.observe(sighting("v1", "sa", distance_m=1.0), at(0))
    presence.observe(sighting("v2", "corridor", distance_m=1.0), at(1))
    presence.observe(sighting("v1", "sa", distance_m=1.0), at(2))  # v2 is now the oldest
    assert presence.observe(sighting("v3", "sb", distance_m=1.0), at(3)) == [
        entered("v3", "b", 3, "sb")
    ]
    assert presence.evicted == 1
    assert presence.visitor("v2", at(3)) is None
    # v1 is the oldest now, and in a zone: its exit comes before v4's entry.
    assert presence.observe(sighting("v4", "sb", distance_m=1.0), at(7)) == [
        exited("v1", "a", 2, "sa", 2, "evicted"),
        entered("v4", "b", 7, "sb"),
    ]
    assert presence.evicted == 2
    assert presence.visitor_count == 2
    assert presence.occupancy() == {"b": 2}
    assert presence.tick(at(100)) == [
        exited("v3", "b", 3, "sb", 0, "away"),
        exited("v4", "b", 7, "sb", 0, "away"),
    ]


def test_occupancy_follows_enter_move_exit_and_evict() -> None:
    clock = Clock(engine(PresenceSettings(smoothing=1.0, max_visitors=3)))
    clock.see(0, "v1", "sa", distance_m=1.0)
    clock.see(0, "v2", "sa", distance_m=1.0)
    clock.see(0, "v3", "sb", distance_m=1.0)
    assert clock.engine.occupancy() == {"a": 2, "b": 1}
    clock.see(5, "v2", "sb", distance_m=1.0)
    clock.see(5, "v2", "sa", distance_m=9.0)
    clock.see(10, "v2", "sb", distance_m=1.0)  # moved to b
    assert clock.engine.occupancy() == {"a": 1, "b": 2}
    for second in range(12, 40, 4):
        clock.see(second, "v1", "sa", distance_m=1.0)
        clock.see(second, "v2", "sb", distance_m=1.0)
    assert clock.engine.occupancy() == {"a": 1, "b": 1}  # v3 went away at 30
    clock.see(40, "v4", "sb", distance_m=1.0)  # evicts v3, known but in no zone
    clock.see(41, "v5", "sb", distance_m=1.0)  # evicts v1
    assert clock.engine.occupancy() == {"b": 3}
    assert clock.engine.evicted == 2
    assert [type(event).__name__ + ":" + event.visitor for event in clock.events[3:]] == [
        "ZoneExited:v2",
        "ZoneEntered:v2",
        "ZoneExited:v3",
        "ZoneEntered:v4",
        "ZoneExited:v1",
        "ZoneEntered:v5",
    ]


# --- settings and determinism --------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"smoothing": 0},
        {"smoothing": 1.5},
        {"switch_margin_m": -1},
        {"away_timeout_s": 0},
        {"reading_ttl_s": 0},
        {"max_visitors": 0},
        {"path_loss_exponent": 0},
        {"radius": 3},
    ],
)
def test_presence_settings_refuse_nonsense(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        PresenceSettings.model_validate(fields)


def run_stream(seed: int) -> list[ZoneEvent]:
    """A seeded crowd wandering between the zones, with ticks and evictions."""
    rng = random.Random(seed)
    presence = engine(PresenceSettings(max_visitors=30), thresholds=(5, 20))
    scanners = ["sa", "sb", "sc1", "sc2", "corridor"]
    events: list[ZoneEvent] = []
    for step in range(3_000):
        now = at(step / 10)
        if step % 10 == 0:
            events += presence.tick(now)
        # Regulars come and go (a window of 20 sliding by one every 10 s); passers-by are
        # seen once and crowd the cap.
        first = step // 100
        visitor = f"v{rng.randrange(first, first + 20)}" if rng.random() < 0.98 else f"x{step}"
        if rng.random() < 0.2:
            seen = Sighting(
                device_id="ap", scanner="ap", mac=visitor, position=(rng.uniform(0, 20), 4.0)
            )
        else:
            seen = sighting(visitor, rng.choice(scanners), distance_m=rng.uniform(0.5, 8.0))
        events += presence.observe(seen, now)
    return events


def test_the_same_sightings_give_the_same_events() -> None:
    first = run_stream(7)
    assert len(first) > 100
    assert {type(event) for event in first} == {ZoneEntered, ZoneExited, ZoneDwelled}
    assert {event.reason for event in first if isinstance(event, ZoneExited)} == {
        "moved",
        "away",
        "evicted",
    }
    assert run_stream(7) == first
    assert run_stream(8) != first


# --- across a restart ----------------------------------------------------------------------


def restarted(presence: PresenceEngine, zones: ZoneMap = ZONES, **settings: Any) -> PresenceEngine:
    """A new engine from ``presence``'s snapshot, through JSON as the outbox keeps it."""
    saved = PresenceSnapshot.model_validate_json(presence.snapshot().model_dump_json())
    audiences = Audiences([AudienceSpec(segment="loyalty", identities=(f"ibeacon:{LOYALTY}-*",))])
    successor = PresenceEngine(zones, SHARP.model_copy(update=settings), audiences, (20, 45))
    successor.restore(saved)
    return successor


def test_a_restart_keeps_who_is_where_and_their_dwell() -> None:
    clock = Clock(engine(thresholds=(20, 45)))
    for t in range(0, 31, 2):
        clock.see(t, MEMBER, "sa", distance_m=1.0)
    clock.see(30, "v2", "sb", distance_m=1.0)
    assert [type(e).__name__ for e in clock.events].count("ZoneDwelled") == 1  # 20 s

    after = Clock(restarted(clock.engine))
    after.now = 30
    assert after.engine.occupancy() == {"a": 1, "b": 1}
    view = after.engine.visitor(MEMBER, at(31))
    assert view is not None and (view.zone, view.segment, view.dwell_s) == ("a", "loyalty", 31.0)
    # The visit goes on: no second entry, the 20 s threshold not again, the 45 s one in time.
    events = [e for t in range(32, 51, 2) for e in after.see(t, MEMBER, "sa", distance_m=1.0)]
    expected = msgspec.structs.replace(
        dwelled(MEMBER, "a", 45, "sa", 45.0, 45.0), segment="loyalty"
    )
    assert events == [expected]


def test_who_left_while_the_gateway_was_down_exits_when_last_seen() -> None:
    clock = Clock(engine())
    clock.see(0, "v1", "sa", distance_m=1.0)
    clock.see(10, "v1", "sa", distance_m=1.0)
    after = restarted(clock.engine)
    assert after.tick(at(600)) == [exited("v1", "a", 10, "sa", 10.0, "away")]
    assert after.occupancy() == {}


def test_a_zone_gone_from_the_map_leaves_its_visitors_in_no_zone() -> None:
    clock = Clock(engine())
    clock.see(0, "v1", "sa", distance_m=1.0)
    smaller = ZoneMap([ZoneSpec(id="b", scanners=("sb",))])
    after = restarted(clock.engine, smaller)
    assert after.occupancy() == {}
    view = after.visitor("v1", at(1))
    assert view is not None and view.zone is None
    assert after.observe(sighting("v1", "sb", distance_m=1.0), at(2)) == [
        entered("v1", "b", 2, "sb")
    ]


def test_a_restart_keeps_at_most_max_visitors_the_most_recently_seen() -> None:
    clock = Clock(engine())
    for number in range(5):
        clock.see(number, f"v{number}", "sa", distance_m=1.0)
    after = restarted(clock.engine, max_visitors=2)
    assert after.visitor_count == 2
    assert after.visitor("v4", at(5)) is not None and after.visitor("v0", at(5)) is None
    assert after.occupancy() == {"a": 2}


def test_a_malformed_snapshot_is_refused() -> None:
    with pytest.raises(ValidationError):
        PresenceSnapshot.model_validate({"visitors": [{"id": "v1"}]})


def test_a_restored_visitor_gone_for_the_away_timeout_starts_a_new_visit_when_seen() -> None:
    clock = Clock(engine())
    clock.see(0, "v1", "sa", distance_m=1.0)
    after = restarted(clock.engine)
    # Seen again before the first tick after the restart: the old visit ended when last seen.
    assert after.observe(sighting("v1", "sa", distance_m=1.0), at(120)) == [
        exited("v1", "a", 0, "sa", 0.0, "away"),
        entered("v1", "a", 120, "sa"),
    ]
    assert after.occupancy() == {"a": 1}
    assert after.tick(at(121)) == []

"""Zones and audiences: what store.yaml may declare, and the lookups presence relies on."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from rules.zones import Audiences, AudienceSpec, ZoneMap, ZoneSpec

SQUARE = ((0.0, 0.0), (4.0, 0.0), (4.0, 4.0), (0.0, 4.0))
# An L: the square (0,0)-(4,4) without its top-right quarter (2,2)-(4,4).
L_SHAPE = ((0.0, 0.0), (4.0, 0.0), (4.0, 2.0), (2.0, 2.0), (2.0, 4.0), (0.0, 4.0))


def zone(zone_id: str, **fields: Any) -> ZoneSpec:
    return ZoneSpec(id=zone_id, **fields)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"id": "a"}, "needs scanners or a polygon"),
        ({"id": "a", "scanners": []}, "needs scanners or a polygon"),
        ({"id": "", "scanners": ["s"]}, "at least 1 character"),
        ({"id": "a", "polygon": [[0, 0], [1, 1]]}, "at least 3 points, got 2"),
        ({"id": "a", "polygon": [[0, 0], [1, math.inf], [1, 0]]}, "should be a finite number"),
        ({"id": "a", "scanners": ["s", "s"]}, "listed twice"),
        ({"id": "a", "scanners": [""]}, "cannot be empty"),
        ({"id": "a", "scanners": ["s"], "colour": "red"}, "Extra inputs are not permitted"),
    ],
)
def test_a_zone_spec_refuses_what_cannot_be_a_zone(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ZoneSpec.model_validate(fields)


def test_a_zone_spec_takes_scanners_a_polygon_or_both() -> None:
    spec = ZoneSpec.model_validate(
        {"id": "a", "name": "Aisle", "scanners": ["ap-1"], "polygon": [[0, 0], [1, 0], [1, 1]]}
    )
    assert spec.scanners == ("ap-1",)
    assert spec.polygon == ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0))
    assert ZoneSpec.model_validate({"id": "b", "scanners": ["x"]}).polygon is None
    with pytest.raises(ValidationError):
        spec.name = "other"  # type: ignore[misc]


def test_a_zone_map_refuses_a_repeated_id_and_a_scanner_in_two_zones() -> None:
    with pytest.raises(ValueError, match="zone id 'a' is listed twice"):
        ZoneMap([zone("a", scanners=["s1"]), zone("a", scanners=["s2"])])
    with pytest.raises(ValueError, match="scanner 's1' is in zones 'a' and 'b'"):
        ZoneMap([zone("a", scanners=["s1"]), zone("b", scanners=["s2", "s1"])])


def test_scanners_map_to_their_zone_exactly() -> None:
    zones = ZoneMap([zone("a", scanners=["kitchen", "ap-1"]), zone("b", scanners=["Kitchen"])])
    assert zones.zone_of_scanner("kitchen") == "a"
    assert zones.zone_of_scanner("ap-1") == "a"
    assert zones.zone_of_scanner("Kitchen") == "b"
    assert zones.zone_of_scanner("kitchen ") is None
    assert zones.ids == ("a", "b")
    assert zones.spec("a") == zone("a", scanners=["kitchen", "ap-1"])
    assert zones.spec("nope") is None


@pytest.mark.parametrize(
    ("x", "y", "expected"),
    [
        (1.0, 1.0, "l"),  # in the L's foot
        (1.0, 3.0, "l"),  # in its upright
        (3.0, 1.0, "l"),
        (3.0, 3.0, "sq"),  # the notch: outside the L, inside the square listed after it
        (5.0, 1.0, None),
        (-0.1, 2.0, None),
    ],
)
def test_zone_at_uses_the_polygon_shape_and_the_first_match(
    x: float, y: float, expected: str | None
) -> None:
    zones = ZoneMap([zone("l", polygon=L_SHAPE), zone("sq", polygon=SQUARE)])
    assert zones.zone_at(x, y) == expected


def test_a_point_on_a_shared_border_belongs_to_exactly_one_zone() -> None:
    below = ((0.0, 0.0), (10.0, 0.0), (10.0, 4.0), (0.0, 4.0))
    above = ((0.0, 4.0), (10.0, 4.0), (10.0, 8.0), (0.0, 8.0))
    for order in ([("below", below), ("above", above)], [("above", above), ("below", below)]):
        zones = ZoneMap([zone(zone_id, polygon=points) for zone_id, points in order])
        assert zones.zone_at(5.0, 4.0) == "above"


def test_distance_to_a_polygon_is_zero_inside_and_to_the_nearest_edge_outside() -> None:
    zones = ZoneMap([zone("l", polygon=L_SHAPE), zone("s", scanners=["s1"])])
    assert zones.distance_to("l", 1.0, 1.0) == 0.0
    assert zones.distance_to("l", 3.0, 3.0) == pytest.approx(1.0)  # in the notch
    assert zones.distance_to("l", 7.0, 6.0) == pytest.approx(5.0)  # 3-4-5 from the corner
    assert zones.distance_to("l", 1.0, -2.5) == pytest.approx(2.5)
    assert zones.distance_to("s", 0.0, 0.0) is None  # no polygon
    assert zones.distance_to("nope", 0.0, 0.0) is None


LOYALTY = "e2c56db5-dffb-48d2-b060-d0f5a71096e0"


def test_an_audience_matches_identities_by_glob_ignoring_case() -> None:
    audiences = Audiences(
        [
            AudienceSpec(segment="staff", identities=(f"ibeacon:{LOYALTY}-1-*",)),
            AudienceSpec(segment="loyalty", identities=(f"ibeacon:{LOYALTY}-*", "eddystone:ab?")),
        ]
    )
    assert audiences.segment_of(f"ibeacon:{LOYALTY}-1-7") == "staff"  # the first match wins
    assert audiences.segment_of(f"ibeacon:{LOYALTY}-100-3") == "loyalty"
    assert audiences.segment_of(f"iBeacon:{LOYALTY.upper()}-100-3") == "loyalty"
    assert audiences.segment_of("eddystone:abc") == "loyalty"
    assert audiences.segment_of("eddystone:abcd") is None  # a glob matches the whole identity
    assert audiences.segment_of(f"ibeacon:{LOYALTY}") is None
    assert audiences.segment_of("p-90397d388098") is None
    assert audiences.segment_of(None) is None
    assert Audiences().segment_of(f"ibeacon:{LOYALTY}-1-1") is None


def test_glob_patterns_are_not_regular_expressions() -> None:
    audiences = Audiences([AudienceSpec(segment="dot", identities=("a.b*",))])
    assert audiences.segment_of("a.bc") == "dot"
    assert audiences.segment_of("axbc") is None


def test_an_audience_needs_a_segment_and_a_pattern() -> None:
    with pytest.raises(ValidationError):
        AudienceSpec(segment="loyalty", identities=())
    with pytest.raises(ValidationError):
        AudienceSpec.model_validate({"segment": "", "identities": ["x"]})

"""Sliding-window limits: counting, sliding, pruning, the key cap, reloads, cooldowns."""

from __future__ import annotations

import json

import pytest

from rules.limits import Rate, RuleLimiter, SlidingWindow

DAY_S = 86_400.0
ONE_A_DAY = Rate(1, DAY_S, "1/day")
TWO_AN_HOUR = Rate(2, 3_600.0, "2/hour")


def test_a_window_allows_count_firings_then_refuses() -> None:
    window = SlidingWindow(TWO_AN_HOUR)
    assert window.allows("v1", 0.0)
    window.consume("v1", 0.0)
    assert window.allows("v1", 10.0)
    window.consume("v1", 10.0)
    assert not window.allows("v1", 20.0)
    assert window.allows("v2", 20.0)  # keys are counted apart


def test_checking_does_not_consume() -> None:
    window = SlidingWindow(ONE_A_DAY)
    for _ in range(5):
        assert window.allows("v1", 0.0)
    assert len(window) == 0


def test_the_window_slides_rather_than_resetting_on_the_hour() -> None:
    window = SlidingWindow(TWO_AN_HOUR)
    window.consume("v1", 3_000.0)  # 00:50
    window.consume("v1", 3_500.0)  # 00:58
    assert not window.allows("v1", 3_700.0)  # 01:01: a fixed hourly bucket would allow it
    assert not window.allows("v1", 6_599.0)  # the first firing is still within the hour
    assert window.allows("v1", 6_600.0)  # exactly an hour after the first: it has left
    window.consume("v1", 6_600.0)
    assert not window.allows("v1", 7_000.0)  # 3,500 and 6,600 are within the hour
    assert window.allows("v1", 7_100.0)


def test_keys_whose_firings_left_the_window_are_pruned() -> None:
    window = SlidingWindow(ONE_A_DAY)
    for index in range(100):
        window.consume(f"v{index}", float(index))
    assert len(window) == 100
    window.consume("late", DAY_S + 49.5)  # v0..v49 fired a day or more before
    assert len(window) == 51
    assert window.allows("v49", DAY_S + 49.5)
    assert not window.allows("v50", DAY_S + 49.5)
    assert window.allows("anyone", 3 * DAY_S)  # a check prunes too
    assert len(window) == 0


def test_past_the_key_cap_the_key_fired_longest_ago_is_forgotten() -> None:
    window = SlidingWindow(ONE_A_DAY, max_keys=3)
    for index, key in enumerate(["a", "b", "c"]):
        window.consume(key, float(index))
    window.consume("a", 3.0)  # "a" is now the latest; "b" the oldest
    window.consume("d", 4.0)
    assert len(window) == 3
    assert window.allows("b", 5.0)  # forgotten: it may fire again
    assert not window.allows("a", 5.0)
    assert not window.allows("c", 5.0)
    assert not window.allows("d", 5.0)


def test_a_new_rate_keeps_the_firings() -> None:
    window = SlidingWindow(ONE_A_DAY)
    window.consume("v1", 0.0)
    assert window.with_rate(ONE_A_DAY) is window
    looser = window.with_rate(Rate(2, DAY_S, "2/day"))
    assert looser.allows("v1", 10.0)
    looser.consume("v1", 10.0)
    assert not looser.allows("v1", 20.0)
    assert not window.allows("v1", 10.0)  # the old window is left as it was
    shorter = window.with_rate(Rate(1, 60.0, "1/minute"))
    assert not shorter.allows("v1", 59.0)
    assert shorter.allows("v1", 60.0)


def test_a_rate_needs_a_count_and_a_window() -> None:
    with pytest.raises(ValueError, match="count >= 1"):
        Rate(0, 60.0, "0/minute")
    with pytest.raises(ValueError, match="window > 0"):
        Rate(1, 0.0, "1/0s")


def limiter(previous: RuleLimiter | None = None, /, **rates: Rate) -> RuleLimiter:
    return RuleLimiter(rates, previous)


def test_a_limiter_names_the_first_limit_that_refuses() -> None:
    rules = limiter(
        per_visitor=Rate(2, DAY_S, "2/day"),
        per_zone=Rate(2, DAY_S, "2/day"),
        **{"global": Rate(3, DAY_S, "3/day")},
    )
    assert rules.check("v1", "coffee", 0.0) is None
    rules.consume("v1", "coffee", 0.0)
    rules.consume("v1", "bakery", 1.0)
    assert rules.check("v1", "dairy", 2.0) == "per_visitor 2/day"
    assert rules.check("v2", "coffee", 2.0) is None
    rules.consume("v2", "coffee", 2.0)
    assert rules.check("v3", "coffee", 3.0) == "per_zone 2/day"
    assert rules.check("v3", "dairy", 3.0) == "global 3/day"


def test_a_cooldown_is_one_firing_per_visitor_per_duration() -> None:
    rules = limiter(cooldown=Rate(1, 600.0, "10m"))
    rules.consume("v1", None, 0.0)
    assert rules.check("v1", None, 599.0) == "cooldown 10m"
    assert rules.check("v2", None, 1.0) is None
    assert rules.check("v1", None, 600.0) is None


def test_a_scope_without_a_key_does_not_limit() -> None:
    rules = limiter(per_visitor=ONE_A_DAY, per_zone=ONE_A_DAY, cooldown=Rate(1, 60.0, "1m"))
    rules.consume(None, None, 0.0)
    assert rules.check(None, None, 1.0) is None
    assert rules.tracked_keys() == 0


def test_a_reloaded_limiter_keeps_the_scopes_still_limited() -> None:
    old = limiter(per_visitor=ONE_A_DAY, per_zone=ONE_A_DAY)
    old.consume("v1", "coffee", 0.0)
    new = limiter(old, per_visitor=Rate(1, DAY_S, "1/day"), cooldown=Rate(1, 60.0, "1m"))
    assert new.check("v1", "coffee", 100.0) == "per_visitor 1/day"
    assert new.check("v2", "coffee", 100.0) is None  # per_zone was dropped
    assert new.tracked_keys() == 1


def test_unknown_scopes_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown limit scopes"):
        limiter(per_store=ONE_A_DAY)


def test_a_limiters_state_survives_a_round_trip_through_json() -> None:
    rates = {"per_visitor": ONE_A_DAY, "global": TWO_AN_HOUR}
    before = RuleLimiter(rates)
    before.consume("v1", None, 100.0)
    before.consume("v2", None, 200.0)

    after = RuleLimiter(rates)
    after.restore(json.loads(json.dumps(before.state())))

    assert after.state() == before.state()
    assert after.check("v1", None, 300.0) == "per_visitor 1/day"
    assert after.check("v3", None, 300.0) == "global 2/hour"
    assert after.check("v3", None, 3_800.0) is None  # the global window slid on


def test_a_restored_scope_the_rule_no_longer_has_is_dropped() -> None:
    before = RuleLimiter({"per_visitor": ONE_A_DAY, "cooldown": Rate(1, 600.0, "10m")})
    before.consume("v1", None, 0.0)
    after = RuleLimiter({"per_visitor": ONE_A_DAY})
    after.restore(before.state())
    assert set(after.state()) == {"per_visitor"}
    assert after.check("v1", None, 10.0) == "per_visitor 1/day"


@pytest.mark.parametrize(
    "state",
    [
        {"per_visitor": [1.0]},
        {"per_visitor": {"v1": 1.0}},
        {"per_visitor": {"v1": ["soon"]}},
        {"per_visitor": {"v1": [float("nan")]}},
    ],
)
def test_a_malformed_state_is_a_value_error(state: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"not a window.s firings|not firing times"):
        RuleLimiter({"per_visitor": ONE_A_DAY}).restore(state)  # type: ignore[arg-type]

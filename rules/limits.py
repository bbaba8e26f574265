"""How often a rule may fire: sliding windows per visitor, per zone, globally, and a cooldown.

Pure: every call takes the time (POSIX seconds) it is asked about; nothing reads a clock.
``check`` looks without consuming (a rule may still fail to render after it); ``consume``
is called only when the rule fires.

A window keeps, per key, the times of the last ``count`` firings only, which is all a
"``count`` per ``window``" question needs. Memory is bounded twice over: a key whose latest
firing has left the window is pruned, and past ``max_keys`` the key fired longest ago is
forgotten (which can only let an offer through again, never block one).
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# A big store has about 2,000 devices in range at once (docs/architecture.md); ten times that
# covers a day of distinct visitors per rule while bounding each window to a few MiB on a
# Pi-class box.
DEFAULT_MAX_KEYS = 20_000
GLOBAL_KEY = ""  # the one key of a store-wide window


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``count`` firings in any ``window_s`` seconds; ``text`` as the rule wrote it."""

    count: int
    window_s: float
    text: str

    def __post_init__(self) -> None:
        if self.count < 1 or self.window_s <= 0:
            raise ValueError(f"a rate needs a count >= 1 and a window > 0, got {self.text!r}")


class SlidingWindow:
    """Firing times per key, answering "has this key fired ``count`` times in the window?"."""

    def __init__(self, rate: Rate, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys}")
        self.rate = rate
        self.max_keys = max_keys
        # Ordered by latest firing, oldest first: pruning and eviction look at the front only.
        self._fired: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._fired)

    def allows(self, key: str, at_s: float) -> bool:
        """Whether one more firing for ``key`` at ``at_s`` stays within the rate."""
        self._prune(at_s)
        times = self._fired.get(key)
        if times is None or len(times) < self.rate.count:
            return True
        return times[0] <= at_s - self.rate.window_s  # the oldest of the last `count` has left

    def consume(self, key: str, at_s: float) -> None:
        """Record a firing for ``key`` at ``at_s``."""
        times = self._fired.get(key)
        if times is None:
            times = self._fired[key] = deque(maxlen=self.rate.count)
        else:
            self._fired.move_to_end(key)
        times.append(at_s)
        self._prune(at_s)

    def state(self) -> dict[str, list[float]]:
        """The firing times per key, oldest key first, as JSON (to survive a restart)."""
        return {key: list(times) for key, times in self._fired.items()}

    def restore(self, fired: Mapping[str, Sequence[float]]) -> None:
        """Take back a ``state()``; ValueError if it is not one."""
        for key, times in fired.items():
            if (
                not isinstance(key, str)
                or not isinstance(times, Sequence)
                or not all(isinstance(at_s, int | float) and math.isfinite(at_s) for at_s in times)
            ):
                raise ValueError(f"not firing times: {key!r}: {times!r}")
            self._fired[key] = deque(times, maxlen=self.rate.count)
            self._fired.move_to_end(key)

    def with_rate(self, rate: Rate) -> SlidingWindow:
        """This window under a new rate (a reloaded rule), keeping what has fired."""
        if rate == self.rate:
            return self
        window = SlidingWindow(rate, self.max_keys)
        for key, times in self._fired.items():
            window._fired[key] = deque(times, maxlen=rate.count)
        return window

    def _prune(self, at_s: float) -> None:
        horizon = at_s - self.rate.window_s
        while self._fired:
            key, times = next(iter(self._fired.items()))
            if times[-1] > horizon and len(self._fired) <= self.max_keys:
                return
            del self._fired[key]


SCOPES = ("per_visitor", "per_zone", "global", "cooldown")  # checked in this order


class RuleLimiter:
    """One rule's windows, by scope (one of SCOPES). A cooldown is a rate of 1 per cooldown,
    keyed by visitor. A scope whose key is unknown (no visitor on a scan, no zone on a
    reorder) does not limit that trigger: there is nothing to count it against."""

    def __init__(
        self,
        rates: Mapping[str, Rate],
        previous: RuleLimiter | None = None,
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        unknown = set(rates) - set(SCOPES)
        if unknown:
            raise ValueError(f"unknown limit scopes {sorted(unknown)}; known: {SCOPES}")
        kept = previous._windows if previous is not None else {}
        self._windows: dict[str, SlidingWindow] = {}
        for scope in SCOPES:
            rate = rates.get(scope)
            if rate is None:
                continue
            old = kept.get(scope)
            self._windows[scope] = (
                old.with_rate(rate) if old is not None else SlidingWindow(rate, max_keys)
            )

    def check(self, visitor: str | None, zone: str | None, at_s: float) -> str | None:
        """The first limit one more firing would break, as "scope rate"; None if none."""
        for scope, window, key in self._keyed(visitor, zone):
            if not window.allows(key, at_s):
                return f"{scope} {window.rate.text}"
        return None

    def consume(self, visitor: str | None, zone: str | None, at_s: float) -> None:
        """Count a firing in every window that applies to it."""
        for _, window, key in self._keyed(visitor, zone):
            window.consume(key, at_s)

    def state(self) -> dict[str, dict[str, list[float]]]:
        """Each scope's firings, as JSON (to survive a restart)."""
        return {scope: window.state() for scope, window in self._windows.items()}

    def restore(self, state: Mapping[str, Mapping[str, Sequence[float]]]) -> None:
        """Take back a ``state()`` under the current rates; a scope no longer limited is
        dropped. ValueError if it is not one."""
        for scope, fired in state.items():
            if not isinstance(fired, Mapping):
                raise ValueError(f"not a window's firings: {scope!r}")
            window = self._windows.get(scope)
            if window is not None:
                window.restore(fired)

    def tracked_keys(self) -> int:
        """Keys held across this rule's windows (memory, for tests and status)."""
        return sum(len(window) for window in self._windows.values())

    def _keyed(self, visitor: str | None, zone: str | None) -> list[tuple[str, SlidingWindow, str]]:
        keys = {"per_visitor": visitor, "per_zone": zone, "global": GLOBAL_KEY, "cooldown": visitor}
        return [
            (scope, window, key)
            for scope, window in self._windows.items()
            if (key := keys[scope]) is not None
        ]

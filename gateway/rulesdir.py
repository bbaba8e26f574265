"""The rules folder: read whole, validated whole, watched for changes.

A changed set replaces the running one only if every file is valid; otherwise the old set
keeps running and each problem is logged as ``file: field: what is wrong``. ``lantern rules
check`` reads the folder the same way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from gateway.clock import Clock
from lantern.errors import RuleProblem, RulesInvalid
from rules.model import RuleSet, parse_rules

__all__ = ["RULE_FILE_SUFFIXES", "RulesWatcher", "read_rules"]

log = logging.getLogger(__name__)

RULE_FILE_SUFFIXES = (".yaml", ".yml")
# A marketer saves and looks: a second is quick enough, and a few stat() calls a second cost
# nothing, where a file-system watcher would need a thread of its own (watchfiles does).
RULES_POLL_INTERVAL_S = 1.0

_Listing = frozenset[tuple[str, int, int]]  # (file name, mtime ns, size) of each rule file


def read_rules(directory: Path) -> RuleSet:
    """Every rule file of the folder as one set; RulesInvalid names each bad file and field.

    Called from a worker thread by the watcher: the rules it returns are new objects, swapped
    in by the loop.
    """
    if not directory.is_dir():
        raise RulesInvalid([RuleProblem(str(directory), "(folder)", "is not a folder")])
    files: dict[str, str] = {}
    problems: list[RuleProblem] = []
    for path in sorted(directory.iterdir()):
        if path.suffix not in RULE_FILE_SUFFIXES or not path.is_file():
            continue
        try:
            files[path.name] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(RuleProblem(path.name, "(file)", f"cannot read: {exc}"))
    if problems:
        raise RulesInvalid(problems)
    return parse_rules(files)


class RulesWatcher:
    """Reloads the rules when the folder changes; ``error`` holds the last refusal."""

    def __init__(self, directory: Path, apply: Callable[[RuleSet], None], clock: Clock) -> None:
        self._directory = directory
        self._apply = apply
        self._clock = clock
        self.reloads = 0
        self.error: list[str] = []

    async def run(self) -> None:
        loaded = self._listing()
        while True:
            await self._clock.sleep(RULES_POLL_INTERVAL_S)
            seen = self._listing()
            if seen == loaded:
                continue
            # An editor's save is several writes: reload once the folder holds still.
            await self._clock.sleep(RULES_POLL_INTERVAL_S)
            if self._listing() == seen:
                loaded = seen
                await self.reload()

    def _listing(self) -> _Listing:
        try:
            return frozenset(
                (path.name, stat.st_mtime_ns, stat.st_size)
                for path in self._directory.iterdir()
                if path.suffix in RULE_FILE_SUFFIXES and (stat := path.stat())
            )
        except OSError:  # the folder itself gone or unreadable: reload says so
            return frozenset()

    async def reload(self) -> None:
        """Read and validate the folder in a worker thread (a thousand rules take about a
        second to compile: ingest goes on meanwhile), then swap the set in the loop, between
        two batches."""
        try:
            rules = await asyncio.to_thread(read_rules, self._directory)
        except RulesInvalid as exc:
            self.error = [str(problem) for problem in exc.problems]
            log.error(
                "rules in %s not reloaded, the previous set keeps running: %s",
                self._directory,
                "; ".join(self.error),
            )
            return
        self._apply(rules)
        self.reloads += 1
        self.error = []
        log.info("rules reloaded from %s: %d rules", self._directory, len(rules))

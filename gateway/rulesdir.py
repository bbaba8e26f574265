"""The rules folder: read whole, validated whole, watched for changes, edited one rule at a time.

A changed set replaces the running one only if every file is valid; otherwise the old set
keeps running and each problem is logged as ``file: field: what is wrong``. Valid means that
it parses and, given the store (:func:`store_catalog`), that it names only zones, segments,
devices, event types and context fields the store has (rules/check.py). ``lantern rules
check --config`` and the console's rule editor read the folder the same way.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import yaml

from gateway.clock import Clock
from gateway.config import Settings
from lantern.errors import RuleProblem, RulesInvalid
from rules.check import StoreCatalog, store_check
from rules.model import RuleSet, parse_rules

__all__ = [
    "RULE_FILE_SUFFIXES",
    "RulesWatcher",
    "check_rules",
    "read_rule_files",
    "read_rules",
    "store_catalog",
]

log = logging.getLogger(__name__)

RULE_FILE_SUFFIXES = (".yaml", ".yml")
# A marketer saves and looks: a second is quick enough, and a few stat() calls a second cost
# nothing, where a file-system watcher would need a thread of its own (watchfiles does).
RULES_POLL_INTERVAL_S = 1.0

_Listing = frozenset[tuple[str, int, int]]  # (file name, mtime ns, size) of each rule file


def store_catalog(settings: Settings) -> StoreCatalog:
    """What the store has for rules to name. A device is one of the registry's or a scanner
    of a zone (an ESPresense room, a Theengs gateway, an access point)."""
    return StoreCatalog(
        zones=frozenset(zone.id for zone in settings.zones),
        segments=frozenset(audience.segment for audience in settings.audiences),
        devices=frozenset(device.id for device in settings.devices)
        | frozenset(scanner for zone in settings.zones for scanner in zone.scanners),
    )


def read_rule_files(directory: Path) -> dict[str, str]:
    """Every rule file of the folder, name → text; RulesInvalid if one cannot be read."""
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
    return files


def check_rules(files: dict[str, str], catalog: StoreCatalog | None) -> RuleSet:
    """The files as one set, checked against the store when one is given; RulesInvalid
    names each bad file and field."""
    return parse_rules(files, store_check(catalog) if catalog is not None else None)


def read_rules(directory: Path, catalog: StoreCatalog | None = None) -> RuleSet:
    """Every rule file of the folder as one set; RulesInvalid names each bad file and field.

    A thousand rules take about a second to compile, so the watcher and the console call this
    in a worker thread; the set it returns is new, swapped in by the loop between batches.
    """
    return check_rules(read_rule_files(directory), catalog)


class RulesWatcher:
    """Reloads the rules when the folder changes; ``error`` holds the last refusal."""

    def __init__(
        self,
        directory: Path,
        apply: Callable[[RuleSet], None],
        clock: Clock,
        catalog: StoreCatalog | None = None,
    ) -> None:
        self._directory = directory
        self._apply = apply
        self._clock = clock
        self._catalog = catalog
        self._loaded: _Listing = frozenset()
        self.reloads = 0
        self.error: list[str] = []

    @property
    def directory(self) -> Path:
        return self._directory

    async def run(self) -> None:
        self._loaded = self._listing()
        while True:
            await self._clock.sleep(RULES_POLL_INTERVAL_S)
            seen = self._listing()
            if seen == self._loaded:
                continue
            # An editor's save is several writes: reload once the folder holds still.
            await self._clock.sleep(RULES_POLL_INTERVAL_S)
            if self._listing() == seen:
                self._loaded = seen
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
        try:
            rules = await asyncio.to_thread(read_rules, self._directory, self._catalog)
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

    def files(self) -> dict[str, str]:
        """The folder's rule files as they are now, name → text."""
        return read_rule_files(self._directory)

    def sources(self) -> dict[str, tuple[str, str]]:
        """Rule id → (file name, text), for the files that declare an id."""
        files = self.files()
        return {rule_id: (name, files[name]) for name, rule_id in _declared_ids(files).items()}

    def check(self, rule_id: str, text: str) -> RuleSet:
        """The set the folder would hold with rule ``rule_id`` replaced by ``text`` (or
        added); RulesInvalid, naming file, field and reason, if it would not be valid."""
        files = self.files()
        name = _file_of(files, rule_id)
        ids = _declared_ids({name: text})
        if ids.get(name, rule_id) != rule_id:
            raise RulesInvalid(
                [RuleProblem(name, "id", f"is {ids[name]!r}, but this is rule {rule_id!r}")]
            )
        return check_rules({**files, name: text}, self._catalog)

    async def replace(self, rule_id: str, text: str) -> RuleSet:
        """Write rule ``rule_id`` as ``text`` and run the new set now, if it is valid whole;
        otherwise RulesInvalid and nothing changes, the running set included. The set is
        checked in a worker thread; the file is written and the set swapped in the loop."""
        rules = await asyncio.to_thread(self.check, rule_id, text)
        name = _file_of(self.files(), rule_id)
        _write_atomically(self._directory / name, text)
        self._loaded = self._listing()  # this change is applied here, not by the poll
        self._apply(rules)
        self.reloads += 1
        self.error = []
        log.info("rule %s replaced in %s: %d rules", rule_id, self._directory / name, len(rules))
        return rules


def _declared_ids(files: dict[str, str]) -> dict[str, str]:
    """The ``id`` each file declares, for the files that parse as far as that."""
    ids: dict[str, str] = {}
    for name, text in files.items():
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError:
            continue
        if isinstance(document, dict) and isinstance(document.get("id"), str):
            ids[name] = document["id"]
    return ids


def _file_of(files: dict[str, str], rule_id: str) -> str:
    """The file that holds rule ``rule_id``, or the one a new rule of that id goes to."""
    for name, declared in _declared_ids(files).items():
        if declared == rule_id:
            return name
    return f"{rule_id}.yaml"


def _write_atomically(path: Path, text: str) -> None:
    """Replace the file whole: the watcher (or a crash) never sees half of it. The temporary
    file's suffix is not a rule file's, so the watcher does not take it for one."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise

"""The store's own failures, for real: a full disk (SQLite's page cap standing in for it), an
outbox budget flooded with sightings or full of events that are never dropped, the store's
broker killed. The gateway loses nothing, keeps its page up, says why, and resumes by itself."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import re
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.app import Gateway
from gateway.clock import ManualClock
from gateway.config import Settings
from gateway.localbroker import Mosquitto
from gateway.outbox import FAILPOINT_MAX_PAGE_COUNT_ENV
from gateway.receiver import Receiver
from tests.gateway.console import WEB_TOKENS, bearer
from tests.helpers import (
    Publisher,
    Received,
    SavingMosquitto,
    Subscriber,
    lantern_env,
    lantern_online,
    make_settings,
    outbox_rows,
    running_gateway,
    start_lantern,
    status,
    wait_until,
)

MIB = 1024 * 1024


def serial_scan(number: int) -> tuple[str, str]:
    return (f"lantern/s1/scanner/till-{number % 3}", f"]C1010950110153100021SN{number:06d}")


def sighting(number: int) -> tuple[str, str]:
    visitor = f"iBeacon:2f234454-cf6d-4a0f-adf2-f4911ba9ffa6-7-{number}"
    return (
        f"espresense/devices/{visitor}/aisle-{number % 5}",
        json.dumps({"id": visitor, "rssi": -70.0, "distance": 3.2, "int": 1000}),
    )


@pytest.fixture
async def central() -> AsyncIterator[Receiver]:
    """The central record, down until the test brings it up (on the URL the gateway has)."""
    receiver = Receiver()
    await receiver.start()
    await receiver.stop()
    yield receiver
    await receiver.stop()


def settings_for(
    tmp_path: Path, broker: Mosquitto, central: Receiver, **overrides: Any
) -> Settings:
    overrides.setdefault("http_sink", {"url": central.url})
    return make_settings(tmp_path / "data", broker.url, web={"tokens": WEB_TOKENS}, **overrides)


async def page_status(gateway: Gateway) -> dict[str, Any]:
    """What a technician sees, over HTTP, while it lasts."""
    assert gateway.web is not None
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{gateway.web.url}/api/status", headers=bearer("technician")) as response,
    ):
        assert response.status == 200
        document: dict[str, Any] = await response.json()
        return document


async def drained(gateway: Gateway, central: Receiver, events: int) -> float:
    """The central record is back: deliveries make room, the committer's retries (once a
    second) find it, until ``events`` reached the central record; how long that took."""
    await central.start()
    back = time.monotonic()
    ingest = gateway.ingest
    await wait_until(
        lambda: len(central.events) >= events and ingest.settled == ingest.received, timeout_s=60
    )
    return time.monotonic() - back


def serials(central: Receiver) -> list[str]:
    return sorted(
        e["data"]["ai"]["21"] for e in central.deliveries if e["type"] == "lantern.scan.read"
    )


async def test_a_full_disk_stops_acknowledging_loses_nothing_and_resumes_by_itself(
    broker: Mosquitto,
    tmp_path: Path,
    clock: ManualClock,
    central: Receiver,
    device: Publisher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(FAILPOINT_MAX_PAGE_COUNT_ENV, "64")  # 256 KB: some 400 scans
    settings = settings_for(tmp_path, broker, central, outbox={"batch_max_messages": 50})
    total = 1200
    async with running_gateway(settings, clock) as gateway:
        await device.send([serial_scan(n) for n in range(total)])
        await wait_until(lambda: gateway.ingest.waiting_for_room is not None)
        page = await page_status(gateway)
        assert page["outbox"]["waiting_for_room"].startswith("no room on the disk")
        assert gateway.web is not None
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{gateway.web.url}/readyz") as response:
                assert response.status == 503
                assert "outbox: no room on the disk" in await response.text()
            metrics = f"{gateway.web.url}/metrics"
            async with session.get(metrics, headers=bearer("technician")) as response:
                assert "lantern_outbox_waiting_for_room 1.0" in await response.text()
        assert gateway.ingest.settled < total  # the rest waits at the broker, unacknowledged
        recovered_s = await drained(gateway, central, total)
        assert (await page_status(gateway))["outbox"]["waiting_for_room"] is None
    assert serials(central) == [f"SN{n:06d}" for n in range(total)]  # each once, none lost
    assert outbox_rows(settings, "PRAGMA integrity_check") == [("ok",)]
    print(
        f"full disk: {total} scans, 0 lost, 0 twice; all delivered {recovered_s:.2f} s after"
        " the record came back"
    )


async def test_a_flood_of_sightings_over_the_budget_drops_only_sightings(
    broker: Mosquitto, tmp_path: Path, clock: ManualClock, central: Receiver, device: Publisher
) -> None:
    settings = settings_for(
        tmp_path,
        broker,
        central,
        # Batches and pages small beside the budget, as 1,000 messages are beside 1 GiB.
        outbox={"max_bytes": MIB, "batch_max_messages": 100},
        # The sightings are forwarded too: dropping one is a loss for this sink, counted.
        http_sink={"url": central.url, "exclude_types": [], "batch_max_events": 50},
    )
    sightings, scans = 6000, 200
    messages = [sighting(n) for n in range(sightings)]
    for n in range(scans):  # among them, now and then, a scan
        messages.insert(n * 30, serial_scan(n))
    async with running_gateway(settings, clock) as gateway:
        await device.send(messages)
        await wait_until(lambda: gateway.ingest.settled == len(messages))
        page = await page_status(gateway)
        dropped = page["outbox"]["dropped"]["http"]
        assert dropped > 0
        assert page["outbox"]["used_bytes"] <= MIB
        assert page["outbox"]["waiting_for_room"] is None  # never stalled: sightings made room
        recovered_s = await drained(gateway, central, scans + sightings - dropped)
    assert serials(central) == [f"SN{n:06d}" for n in range(scans)]
    forwarded = [e for e in central.deliveries if e["type"] == "lantern.presence.sighted"]
    assert len(forwarded) + dropped == sightings
    assert len(central.events) == len(central.deliveries)  # nothing twice
    print(
        f"sighting flood over a 1 MiB budget: {scans} scans, 0 lost; {sightings} sightings,"
        f" {dropped} dropped (counted); all delivered {recovered_s:.2f} s after the record's return"
    )


async def test_a_budget_full_of_scans_waits_for_the_central_record_then_resumes(
    broker: Mosquitto, tmp_path: Path, clock: ManualClock, central: Receiver, device: Publisher
) -> None:
    settings = settings_for(tmp_path, broker, central, outbox={"max_bytes": MIB})
    total = 4000  # about 2 MiB of scans: twice the budget, none of it droppable
    async with running_gateway(settings, clock) as gateway:
        await device.send([serial_scan(n) for n in range(total)])
        await wait_until(lambda: gateway.ingest.waiting_for_room is not None)
        page = await page_status(gateway)
        assert "within the budget (outbox.max_bytes)" in page["outbox"]["waiting_for_room"]
        assert status(gateway).events_committed < total
        recovered_s = await drained(gateway, central, total)
    assert serials(central) == [f"SN{n:06d}" for n in range(total)]
    print(f"budget full of scans: {total} scans, 0 lost, 0 twice; all in {recovered_s:.2f} s")


@pytest.mark.slow  # real backoff: seconds of 503s
async def test_a_central_record_answering_503_for_a_while_loses_nothing_and_is_caught_up_fast(
    broker: Mosquitto, tmp_path: Path, clock: ManualClock, device: Publisher
) -> None:
    """The HTTP sink's default backoff (0.5 s, doubling, capped at 10 s) after a stretch of
    503s: the first delivery once the record is healthy comes within the cap, and no scan is
    lost or sent under two ids."""
    unhealthy = True
    refusals = 0

    async def intercept(request: web.Request) -> int | None:
        nonlocal refusals
        if unhealthy:
            refusals += 1
            return 503
        return None

    async with Receiver() as central:
        central.intercept = intercept
        settings = settings_for(
            tmp_path,
            broker,
            central,
            http_sink={"url": central.url, "retry_min_s": 0.5, "retry_max_s": 10.0},
        )
        async with running_gateway(settings, clock):
            await device.send([serial_scan(n) for n in range(300)])
            await wait_until(lambda: refusals >= 5, timeout_s=30)  # backing off, several times
            unhealthy = False
            back = time.monotonic()
            await wait_until(lambda: len(central.events) >= 1, timeout_s=15)
            first_delivery_s = time.monotonic() - back
            await wait_until(lambda: len(central.events) == 300)
    assert first_delivery_s <= 10.5, first_delivery_s
    assert serials(central) == [f"SN{n:06d}" for n in range(300)]
    assert len(central.deliveries) == 300  # no batch resent once it was taken
    print(f"503 x {refusals}: 300 scans, 0 lost, 0 twice; first delivery {first_delivery_s:.2f} s")


SCAN_RULE = """\
id: till-screen
when: {event: scan.read}
then:
  - publish:
      topic: "store/{{ store.id }}/till/{{ event.device }}"
      payload: {code: "{{ event.data.code }}"}
"""
OFFLINE_RULE = """\
id: printer-notice
when: {event: device.offline}
then:
  - publish: {topic: "store/{{ store.id }}/staff/notice", payload: {device: "{{ event.device }}"}}
"""
PRINTER_INTERVAL_S = 1.5  # silent this long, the printer is offline (at the next 1 s tick)


class Tills(threading.Thread):
    """The store's tills and its printer, on one paho connection in their own thread: scans at
    about 1,600/s at QoS 1, and the printer's status every 20 scans until ``silence_printer``.

    ``hold()`` pauses them until the broker has acknowledged every message sent so far, so a
    kill finds none of theirs in flight; ``resume()`` lets them go on at once (paho queues
    what they publish while the broker is away, and sends it on reconnect).
    """

    def __init__(self, port: int, store: str, total: int) -> None:
        super().__init__(name="tills", daemon=True)
        self._port, self._store, self._total = port, store, total
        self._sent: list[int] = []  # paho's message ids
        self._acked: set[int] = set()
        self._printer_on = True
        self.printer_silent = threading.Event()
        self.after_printer = ""  # the serial of the first scan sent after its last status
        self.sending = threading.Event()  # set while scans remain to be sent
        self._hold, self._held, self._resume = (threading.Event() for _ in range(3))
        self.done = threading.Event()  # every scan sent and acknowledged

    def silence_printer(self) -> None:
        self._printer_on = False
        self.printer_silent.wait(30)

    def hold(self) -> None:
        self._resume.clear()
        self._hold.set()
        self._held.wait(30)

    def resume(self) -> None:
        self._hold.clear()
        self._held.clear()
        self._resume.set()

    def _all_acked(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not self._acked.issuperset(self._sent):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.001)
        return True

    def run(self) -> None:
        self.sending.set()
        with Publisher(self._port) as device:
            device.client.reconnect_delay_set(0.05, 0.5)
            device.client.on_publish = lambda _c, _u, mid, _rc, _p: self._acked.add(mid)
            status = f"lantern/{self._store}/device/printer-1/status"
            for number in range(self._total):
                if self._hold.is_set():
                    self._all_acked(30)
                    self._held.set()
                    self._resume.wait(30)
                if number % 20 == 0 and self._printer_on:
                    self._sent.append(device.publish(status, "online").mid)
                    self.after_printer = f"SN{number:06d}"
                elif not self._printer_on and not self.printer_silent.is_set():
                    self.printer_silent.set()
                topic = f"lantern/{self._store}/scanner/till-{number % 4}"
                self._sent.append(device.publish(topic, f"]C1010950110153100021SN{number:06d}").mid)
                if number % 100 == 99:
                    time.sleep(0.06)
            self.sending.clear()
            if self._all_acked(120):
                self.done.set()


def serials_received(receiver: Receiver) -> set[str]:
    return {
        e["data"]["ai"]["21"] for e in receiver.events.values() if e["type"] == "lantern.scan.read"
    }


def actions_for_scans(screens: Subscriber) -> Counter[str]:
    """How many times each scan's action reached the till screens, by serial."""
    return Counter(r.event["code"][-8:] for r in list(screens.received) if "/till/" in r.topic)


def notices(screens: Subscriber) -> list[Received]:
    return [r for r in list(screens.received) if r.topic.endswith("/staff/notice")]


@pytest.mark.slow
async def test_a_broker_killed_twice_while_20000_scans_flow_loses_and_doubles_nothing(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Mosquitto (persistence on) is SIGKILLed and restarted twice while 20,000 scans flow
    through it, a rule publishes an action on every scan and another on ``device.offline``:
    a printer falls silent just before the first kill, so its offline fires while the broker
    is away. ``lantern run`` (shipped MQTT backoff: 0.5 s doubling, jittered, to 4 s) runs
    throughout as a process.

    It proves, of Lantern: the gateway never exits (and stops with 0 on SIGTERM at the end);
    it reconnects by itself within 5 s of each restart of the broker (from the restart to the
    gateway's log line saying it connected), and finds its persistent session kept; the
    receiver holds each of the 20,000 serials, under exactly one event id, though each kill
    fell while the gateway had scans received and not committed, committed and not
    acknowledged (the broker redelivers those, DUP set, and the dedup drops them: the test
    requires some), actions in flight; every action is published once the broker is back, the
    offline notice fired during the outage included, and none is dropped (each is within its
    expiry).

    What it takes from the broker, and why: no kill lands before the broker saved what it
    acknowledged. The shipped tuning saves every second, and a kill there loses what the
    broker acknowledged since (with the 10 s it shipped before, this test lost the gateway's
    whole session: the kills fell before the first save), which is the broker's loss, not the
    gateway's. So each kill waits until the broker has acknowledged all the tills sent
    (milliseconds; they go on publishing into paho's queue while it is away), pauses the
    gateway (SIGSTOP, for the few milliseconds until the kill, so that no action of its is
    acknowledged after the save) and has the broker save (SIGUSR1; ``SavingMosquitto`` says why
    the broker's saving on every change, which this test used before, was not enough). Without
    the pause, actions went missing in 1 run of 11. A scan the broker took but had not
    acknowledged when it died would be sent again by the till, and the broker forwards that copy
    without DUP (DUP is per hop): to any gateway it is a second scan, a property of QoS 1 from
    the tills that this test does not measure.
    """
    seed = int(os.environ.get("LANTERN_CRASH_SEED", "20261203"))
    chance = random.Random(seed)
    total, store = 20_000, "brk"
    (tmp_path / "broker").mkdir()
    broker = SavingMosquitto(directory=tmp_path / "broker")
    await asyncio.to_thread(broker.start)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "till-screen.yaml").write_text(SCAN_RULE)
    (rules / "printer-notice.yaml").write_text(OFFLINE_RULE)
    config = tmp_path / "store.yaml"
    config.write_text(
        f"devices: [{{id: printer-1, expected_interval_s: {PRINTER_INTERVAL_S}}}]\n"
        f"rules: {{dir: '{rules}'}}\n"
    )
    env = lantern_env(store, tmp_path / "data", broker, receiver.url)
    env["LANTERN_CONFIG"] = str(config)
    screens = Subscriber(broker.port, f"store/{store}/#")
    process = await start_lantern(env, tmp_path)
    log: list[tuple[float, str]] = []  # (time.monotonic() on arrival, line)

    async def read_log() -> None:
        assert process.stderr is not None
        async for line in process.stderr:
            log.append((time.monotonic(), line.decode(errors="replace").rstrip()))

    reading = asyncio.create_task(read_log())
    tills = Tills(broker.port, store, total)
    outages: list[tuple[float, float]] = []  # (killed, restarted), time.monotonic()
    before_kill: list[str] = []  # how long each step before a kill took
    try:
        await lantern_online(broker, store)
        tills.start()
        for outage_s in (3.0, chance.uniform(0.5, 2.0)):
            await asyncio.sleep(chance.uniform(1.0, 2.5))  # scans flow this long first
            marks = [time.monotonic()]
            if not outages:
                # The printer falls silent; its last status has reached the gateway once a
                # scan sent after it has reached the receiver (one connection, in order).
                await asyncio.to_thread(tills.silence_printer)
                after = tills.after_printer
                await wait_until(lambda after=after: after in serials_received(receiver))
            marks.append(time.monotonic())
            assert process.returncode is None, "the gateway exited"
            assert tills.sending.is_set(), "a kill must fall while the scans flow"
            await asyncio.to_thread(tills.hold)
            marks.append(time.monotonic())
            # Paused, the gateway has the broker acknowledge nothing the save would miss (an
            # action) and moves nothing of its queue into flight; it wakes to a dead broker.
            process.send_signal(signal.SIGSTOP)
            try:
                await asyncio.to_thread(broker.save)
                marks.append(time.monotonic())
                await asyncio.to_thread(broker.kill)
            finally:
                process.send_signal(signal.SIGCONT)
            killed = time.monotonic()
            silent_s, held_s, saved_s = (b - a for a, b in itertools.pairwise(marks))
            before_kill.append(
                f"printer silent and seen {silent_s:.2f} s, tills held {held_s:.2f} s,"
                f" broker saved {saved_s:.2f} s"
            )
            tills.resume()
            # The outage. The first is long enough for the printer's silence to be seen.
            await asyncio.sleep(outage_s)
            restarting = time.monotonic()  # from here: an upper bound on the reconnect time
            await asyncio.to_thread(broker.start)
            outages.append((killed, restarting))
            # Back before the next kill: each outage ends in a reconnection of its own (the
            # reconnect time is judged below, from the same log line).
            await wait_until(
                lambda back=restarting: any(
                    at > back and "MQTT connected to" in line for at, line in log
                ),
                timeout_s=30,
            )
            assert process.returncode is None, "the gateway exited"
        await asyncio.to_thread(tills.done.wait, 120)
        assert tills.done.is_set(), "the tills' scans were not all acknowledged"
        await wait_until(lambda: len(serials_received(receiver)) >= total, timeout_s=120)
        await wait_until(lambda: len(actions_for_scans(screens)) >= total, timeout_s=60)
        await wait_until(lambda: bool(notices(screens)), timeout_s=30)
        assert process.returncode is None, "the gateway exited"
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await reading
        screens.close()
        await asyncio.to_thread(broker.stop)
    text = "\n".join(line for _, line in log)
    assert process.returncode == 0, text[-3000:]

    connected = [at for at, line in log if "MQTT connected to" in line]
    # (The broker's own start-up, some 10-50 ms, is in these figures.)
    reconnect_s = [min(at for at in connected if at > back) - back for _, back in outages]
    assert all(seconds < 5.0 for seconds in reconnect_s), reconnect_s
    assert text.count("(session present: True)") >= len(outages), "the session was lost"

    ids_by_serial: dict[str, set[str]] = defaultdict(set)
    for event in receiver.deliveries:
        if event["type"] == "lantern.scan.read":
            ids_by_serial[event["data"]["ai"]["21"]].add(event["id"])
    missing = {f"SN{n:06d}" for n in range(total)} - ids_by_serial.keys()
    assert not missing, f"seed {seed}: {len(missing)} serials lost, e.g. {sorted(missing)[:5]}"
    doubled = {serial: ids for serial, ids in ids_by_serial.items() if len(ids) != 1}
    assert not doubled, f"seed {seed}: serials under several ids: {list(doubled.items())[:3]}"
    # The kills fell between commits and their acknowledgements: the broker redelivered.
    redelivered = sum(int(n) for n in re.findall(r"redelivered: (\d+) messages", text))
    assert redelivered > 0

    copies = actions_for_scans(screens)
    assert set(copies) == {f"SN{n:06d}" for n in range(total)}
    (offline,) = [e for e in receiver.events.values() if e["type"] == "lantern.device.offline"]
    fired = datetime.fromisoformat(offline["time"]).timestamp()
    killed_wall = time.time() - (time.monotonic() - outages[0][0])
    back_wall = time.time() - (time.monotonic() - outages[0][1])
    printer = [
        (e["type"], e["time"]) for e in receiver.events.values() if "printer-1" in e["source"]
    ]
    assert killed_wall < fired < back_wall, (
        f"the printer's offline fires while the broker is away ({killed_wall:.2f} to"
        f" {back_wall:.2f}), not at {fired:.2f}; the printer's events: {sorted(printer)[-6:]};"
        f" before the kill: {before_kill[0]}"
    )
    assert min(r.at for r in notices(screens)) > outages[0][1], "published once it was back"
    expired = sum(int(n) for n in re.findall(r"dropped (\d+) actions past their expiry", text))
    assert expired == 0
    print(  # the figures for the record: pytest -s shows them
        f"broker SIGKILLed {len(outages)} times during {total} scans (seed {seed}):"
        f" {total - len(missing)} serials at the receiver, 0 lost, 0 under two ids;"
        f" {redelivered} redeliveries deduplicated by the gateway;"
        f" reconnected {', '.join(f'{s:.2f} s' for s in reconnect_s)} after the broker's"
        f" restarts (outages {', '.join(f'{b - k:.2f} s' for k, b in outages)});"
        f" actions: {len(copies)} scans' published ({sum(copies.values())} copies),"
        f" {len(notices(screens))} offline notice, {expired} expired; before each kill:"
        f" {'; '.join(before_kill)}"
    )

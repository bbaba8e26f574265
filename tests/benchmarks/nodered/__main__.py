"""Lantern against Node-RED doing the same work, same broker, same stream, one run.

    .venv/bin/python -m tests.benchmarks.nodered [--messages 50000] [--nodered-dir DIR]

Runs only where ``node`` and ``npm`` are on PATH (and ``mosquitto``, for the broker); otherwise
it says so in one line and exits 0. README.md beside this file says what each side does and how
the figures are taken.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from firmware_stubs.store_sim import ROOMS, StoreSimulator
from gateway.config import OutboxSettings
from gateway.localbroker import Mosquitto, free_port
from tests.benchmarks.nodered.publisher import publish
from tests.benchmarks.rules import chain_rules, store_sections

HERE = Path(__file__).resolve().parent
STORE_ID = "bench"
SIGHTED = "lantern.presence.sighted"
RULES = 100  # the ingest benchmark's "100 rules and zones configured"
PROBE_TOPIC = "espresense/devices/bench-probe/entrance"
PROBE_SUBJECT = "espresense:bench-probe"
LANTERN_SECRET_FILE = "privacy.key"  # README: the pseudonym secret in $LANTERN_DATA_DIR
POLL_S = 0.005  # the row count is read this often: the window's ends are known within 5 ms
RSS_EVERY_POLLS = 10  # VmHWM only grows; reading it every 50 ms misses nothing at the end
PROBE_EVERY_S = 0.5  # a probe until the first row shows the subscriber is subscribed
SETTLE_S = 1.0  # after the first probe row, time for the probes in flight to land
START_TIMEOUT_S = 60.0  # a cold Node-RED or Lantern start on a loaded 2-core box
STOP_TIMEOUT_S = 30.0  # systemd's TimeoutStopSec for lantern.service
QUIESCE_S = 1.0  # after the sync before a drain, for the write-back to finish
# Node-RED's flow batches as Lantern does by default.
LANTERN_BATCH_MAX_MESSAGES = OutboxSettings.model_fields["batch_max_messages"].default
NODERED_BATCH_MAX_MS = OutboxSettings.model_fields["batch_max_ms"].default
DRAIN_MIN_TIMEOUT_S = 120.0
DRAIN_MIN_RATE = 100.0  # msg/s below which a drain counts as stuck, not slow
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class System:
    """A subscriber as a process of its own, writing its durable rows to an SQLite file."""

    name: str
    command: list[str]
    env: dict[str, str]
    cwd: Path
    db: Path
    log: Path


@dataclass(frozen=True)
class Drain:
    rows: int  # rows made durable inside the timed window
    seconds: float
    peak_rss_mib: float
    cpu_s: float  # the process's CPU time inside the window, all threads
    first_row_s: float  # from the process's start to its first new row

    @property
    def rate(self) -> float:
        return self.rows / self.seconds


class SightedRows:
    """Counts the committed sightings of an outbox, reading only the rows new since last time."""

    def __init__(self, db: Path) -> None:
        self._db = db
        self._connection: sqlite3.Connection | None = None
        self._seq = 0
        self.count = 0

    def poll(self) -> int:
        try:
            if self._connection is None:
                self._connection = sqlite3.connect(f"file:{self._db}?mode=ro", uri=True)
            count, top = self._connection.execute(
                "SELECT count(*), max(seq) FROM events WHERE seq > ? AND type = ?",
                (self._seq, SIGHTED),
            ).fetchone()
        except sqlite3.OperationalError:  # not created yet, or its table is not
            return self.count
        if top is not None:
            self._seq = top
            self.count += count
        return self.count

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()


def sighting_stream(count: int) -> list[tuple[str, str]]:
    """The store simulator's ESPresense sightings, as in the ingest benchmark."""
    simulator = StoreSimulator(STORE_ID, seed=7, shoppers=2000)
    sightings = (
        (topic, payload)
        for _, topic, payload in simulator.messages(2500, scans_per_min=0.001)
        if topic.startswith("espresense/devices/")
    )
    return list(itertools.islice(sightings, count))


def installed_version(folder: Path, package: str) -> str:
    manifest = folder / "node_modules" / package / "package.json"
    return str(json.loads(manifest.read_text())["version"])


def install_node_red(folder: Path) -> None:
    """Node-RED and better-sqlite3 from npm into folder, which is also Node-RED's user folder:
    its package.json is where Node-RED looks for the modules a function node may load."""
    wanted = (HERE / "package.json").read_text()
    manifest = folder / "package.json"
    installed = (folder / "node_modules" / "node-red").exists()
    if installed and manifest.exists() and manifest.read_text() == wanted:
        return
    folder.mkdir(parents=True, exist_ok=True)
    manifest.write_text(wanted)
    print(f"installing Node-RED 4 and better-sqlite3 from npm into {folder} ...", flush=True)
    done = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--omit=dev"],
        cwd=folder,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if "ERR" in line] or ["(no output)"]
        raise SystemExit(f"error: npm install in {folder} failed: {errors[-1]}")


def lantern(work: Path, broker: Mosquitto) -> System:
    rules_dir = work / "rules"
    rules_dir.mkdir()
    specs = chain_rules(RULES)
    for spec in specs:
        (rules_dir / f"{spec['id']}.yaml").write_text(yaml.safe_dump(spec))
    config = {
        "timezone": "Europe/Amsterdam",
        "web": {"port": 0},  # any free port: other benchmarks and engineers share the box
        "sources": [{"kind": "espresense", "topic": "espresense/devices/{id}/{room}"}],
        **store_sections(specs, list(ROOMS)),
        "rules": {"dir": str(rules_dir)},
    }
    store = work / "store.yaml"
    store.write_text(yaml.safe_dump(config))
    env = {key: value for key, value in os.environ.items() if not key.startswith("LANTERN_")}
    env.update(
        LANTERN_CONFIG=str(store),
        LANTERN_STORE_ID=STORE_ID,
        LANTERN_DATA_DIR=str(work / "lantern-data"),
        LANTERN_MQTT_URL=broker.url,
    )
    return System(
        name="lantern",
        command=[sys.executable, "-m", "gateway", "run"],
        env=env,
        cwd=work,
        db=work / "lantern-data" / "outbox.sqlite",
        log=work / "lantern.log",
    )


def node_red(work: Path, install: Path, broker: Mosquitto, secret: bytes, batch: int) -> System:
    """Node-RED on the flow beside this file, with Lantern's pseudonym secret, so that the two
    make the same pseudonyms and their events can be compared."""
    flows = work / "flows.json"
    shutil.copyfile(HERE / "flows.json", flows)  # Node-RED may write beside its flows file
    db = work / "nodered.sqlite"
    env = dict(os.environ)
    env.update(
        BENCH_MQTT_PORT=str(broker.port),
        BENCH_NODERED_UI_PORT=str(free_port()),
        BENCH_STORE_ID=STORE_ID,
        BENCH_NODERED_DB=str(db),
        BENCH_PSEUDONYM_SECRET=secret.hex(),
        BENCH_NODERED_BATCH_EVENTS=str(batch),
    )
    red = install / "node_modules" / "node-red" / "red.js"
    return System(
        name="node-red",
        command=[
            "node",
            str(red),
            "--userDir",
            str(install),
            "--settings",
            str(HERE / "settings.js"),
            str(flows),
        ],
        env=env,
        cwd=work,
        db=db,
        log=work / "nodered.log",
    )


@contextmanager
def running(system: System) -> Iterator[subprocess.Popen[bytes]]:
    """The system's process; on leaving, SIGTERM (both drain and exit on it), then SIGKILL."""
    with system.log.open("ab") as log:
        process = subprocess.Popen(
            system.command, env=system.env, cwd=system.cwd, stdout=log, stderr=log
        )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            print(f"note: {system.name} did not stop within {STOP_TIMEOUT_S:.0f} s: killed")


def failure(system: System, what: str) -> SystemExit:
    lines = system.log.read_text(errors="replace").splitlines() if system.log.exists() else []
    last = lines[-1].strip() if lines else "(nothing logged)"
    return SystemExit(f"error: {system.name} {what}; its last log line: {last}")


def check_alive(system: System, process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        raise failure(system, f"exited with status {process.returncode}")


def warm_up(system: System, port: int) -> tuple[int, int]:
    """Start it once so that the broker holds its persistent session, proven by a probe row
    end to end; returns its rows after it stopped, and the probes published."""
    rows = SightedRows(system.db)
    with running(system) as process:
        deadline = time.monotonic() + START_TIMEOUT_S
        for probe in itertools.count():
            payload = json.dumps({"id": "bench-probe", "rssi": -60.0 - probe / 10})
            publish(port, [(PROBE_TOPIC, payload)])
            time.sleep(PROBE_EVERY_S)
            check_alive(system, process)
            if rows.poll() > 0:
                break
            if time.monotonic() > deadline:
                raise failure(system, f"wrote no row within {START_TIMEOUT_S:.0f} s of its start")
        time.sleep(SETTLE_S)
    count = rows.poll()
    rows.close()
    return count, probe + 1


def proc_status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def drain(system: System, baseline: int, target: int) -> Drain:
    """Start it on its backlog; time from its first new durable row to the target-th."""
    timeout_s = max(DRAIN_MIN_TIMEOUT_S, (target - baseline) / DRAIN_MIN_RATE)
    rows = SightedRows(system.db)
    rows.poll()
    if rows.count != baseline:
        raise SystemExit(f"error: {system.name}'s file changed while it was stopped")
    # The previous drain's dirty pages would otherwise be written back during this one, in
    # the way of its fsyncs: without this, whichever system drained first came out ahead.
    os.sync()
    time.sleep(QUIESCE_S)
    peak_kib = 0
    with running(system) as process:
        started = time.perf_counter()
        first: tuple[float, int, float] | None = None  # when, rows then, CPU then
        for polls in itertools.count():
            count = rows.poll()
            now = time.perf_counter()
            if first is None and count > baseline:
                first = now, count, cpu_seconds(process.pid)
            if count >= target:
                break
            check_alive(system, process)
            if polls % RSS_EVERY_POLLS == 0:
                peak_kib = max(peak_kib, proc_status_kib(process.pid, "VmHWM"))
            if now - started > timeout_s:
                raise failure(system, f"had {count - baseline} of {target - baseline} rows")
            time.sleep(POLL_S)
        peak_kib = max(peak_kib, proc_status_kib(process.pid, "VmHWM"))
        cpu_end = cpu_seconds(process.pid)
    rows.poll()
    if rows.count > target:
        print(f"note: {system.name} wrote {rows.count - target} rows more than it was sent")
    rows.close()
    first_at, first_count, first_cpu = first or (now, target, 0.0)
    if first_count >= target:
        raise SystemExit(f"error: {system.name} committed it all in one batch: raise --messages")
    return Drain(
        rows=target - first_count,
        seconds=now - first_at,
        peak_rss_mib=peak_kib / 1024,
        cpu_s=cpu_end - first_cpu,
        first_row_s=first_at - started,
    )


def other_events(db: Path) -> str:
    """What else a system committed (Lantern: zone and rule events), by type."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        counts = connection.execute(
            "SELECT type, count(*) FROM events WHERE type != ? GROUP BY type ORDER BY type",
            (SIGHTED,),
        ).fetchall()
    return ", ".join(f"{kind} {count:,}" for kind, count in counts) or "none"


def canonical(value: object) -> object:
    """A JSON value with every number a float: JavaScript writes -60.0 as -60."""
    if isinstance(value, dict):
        return {key: canonical(item) for key, item in value.items()}
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def sightings(db: Path) -> Counter[str]:
    """The stream's sightings in an outbox, each but for its id and time (the probes left out)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        bodies = connection.execute("SELECT body FROM events WHERE type = ?", (SIGHTED,))
        events = [json.loads(body) for (body,) in bodies]
    alike: Counter[str] = Counter()
    for event in events:
        del event["id"], event["time"]
        if event["subject"] != PROBE_SUBJECT:
            alike[json.dumps(canonical(event), sort_keys=True)] += 1
    return alike


def unlike_events(lantern_db: Path, red_db: Path) -> str:
    """Whether both made the same events of the stream, but for ids and times."""
    ours, theirs = sightings(lantern_db), sightings(red_db)
    only_ours, only_theirs = ours - theirs, theirs - ours
    if not only_ours and not only_theirs:
        return f"both committed the same {ours.total():,}, alike but for id and time"
    example = next(iter(only_ours or only_theirs))
    return (
        f"{only_ours.total():,} of lantern's and {only_theirs.total():,} of node-red's have no"
        f" match in the other's, e.g. {example}"
    )


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument(
        "--nodered-dir",
        type=Path,
        help="install Node-RED here and keep it for the next run (default: a temporary folder)",
    )
    parser.add_argument(
        "--nodered-batch",
        type=int,
        default=LANTERN_BATCH_MAX_MESSAGES,
        help="events in one Node-RED transaction at most (1: a transaction per message)",
    )
    parser.add_argument(
        "--node-red-first",
        action="store_true",
        help="drain Node-RED's backlog before Lantern's (default: Lantern's first)",
    )
    args = parser.parse_args()
    missing = [tool for tool in ("node", "npm", "mosquitto") if shutil.which(tool) is None]
    if missing:
        print(f"nodered benchmark skipped: {' and '.join(missing)} not on PATH")
        return

    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-nodered-")))
        install = args.nodered_dir.resolve() if args.nodered_dir else work / "node-red"
        install_node_red(install)
        stream = sighting_stream(args.messages)
        stream_file = work / "stream.jsonl"
        stream_file.write_text("".join(json.dumps(message) + "\n" for message in stream))
        (work / "broker").mkdir()
        broker = Mosquitto(directory=work / "broker")  # removed with work, unlike its default
        broker.start()
        stack.callback(broker.stop)

        load_before = load()
        gateway = lantern(work, broker)
        gateway_rows, _ = warm_up(gateway, broker.port)
        secret_file = gateway.db.parent / LANTERN_SECRET_FILE
        if not secret_file.exists():
            raise SystemExit(f"error: lantern made no {secret_file} (README, Privacy: where now?)")
        secret = secret_file.read_bytes()
        red = node_red(work, install, broker, secret, args.nodered_batch)
        red_rows, red_probes = warm_up(red, broker.port)
        publisher = [sys.executable, "-m", "tests.benchmarks.nodered.publisher"]
        published = subprocess.run(
            [*publisher, str(broker.port), str(stream_file)], capture_output=True, text=True
        )
        if published.returncode != 0:
            raise SystemExit(published.stderr.strip().splitlines()[-1])
        # Node-RED's probes were queued in Lantern's session too.
        jobs = [
            (gateway, gateway_rows, gateway_rows + red_probes + len(stream)),
            (red, red_rows, red_rows + len(stream)),
        ]
        if args.node_red_first:
            jobs.reverse()
        results = {system.name: drain(system, rows, target) for system, rows, target in jobs}
        load_after = load()
        lantern_others = other_events(gateway.db)
        differences = unlike_events(gateway.db, red.db)
        red_version = installed_version(install, "node-red")
        sqlite_version = installed_version(install, "better-sqlite3")
        node_version = subprocess.run(
            ["node", "--version"], capture_output=True, text=True
        ).stdout.strip()

    lantern_run, red_run = results[gateway.name], results[red.name]
    print(
        f"stream: {len(stream):,} ESPresense sightings at QoS 1, published by a process of its"
        " own as a backlog for both persistent sessions, mosquitto on loopback;"
        f" drained in this order: {', '.join(results)}"
    )
    print(
        f"lantern:  python -m gateway run, {RULES} rules, {len(ROOMS)} zones; its other events:"
        f" {lantern_others}"
    )
    transaction = (
        "message"
        if args.nodered_batch == 1
        else f"{args.nodered_batch:,} events or {NODERED_BATCH_MAX_MS} ms"
    )
    print(
        f"node-red: {red_version} on node {node_version}: mqtt in -> json -> function ->"
        f" function (better-sqlite3 {sqlite_version}, a transaction per {transaction})"
    )
    print(f"sightings: {differences}")
    print(f"load average (1, 5, 15 min): {load_before} before, {load_after} after")
    print(
        f"{'':10}{'messages':>10}{'seconds':>10}{'msg/s':>10}{'peak RSS MiB':>14}"
        f"{'cpu s':>8}{'first row s':>13}"
    )
    for name, result in results.items():
        print(
            f"{name:10}{result.rows:>10,}{result.seconds:>10.2f}{result.rate:>10.0f}"
            f"{result.peak_rss_mib:>14.1f}{result.cpu_s:>8.2f}{result.first_row_s:>13.2f}"
        )
    print(f"rate lantern / node-red: {lantern_run.rate / red_run.rate:.2f}")
    print(
        f"peak RSS: lantern {lantern_run.peak_rss_mib:.0f} MiB, node-red"
        f" {red_run.peak_rss_mib:.0f} MiB (lantern / node-red"
        f" {lantern_run.peak_rss_mib / red_run.peak_rss_mib:.2f})"
    )
    print(
        "guarantee: lantern acknowledges a message to the broker after the commit of its"
        " batch (synchronous=FULL); node-red's mqtt in acknowledges on receipt, so a crash loses"
        " every message it received and had not yet committed (its batch, and what waits in the"
        " flow ahead of it)"
    )


if __name__ == "__main__":
    main()

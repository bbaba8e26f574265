"""``lantern demo``: a whole simulated store on this machine.

A broker (mosquitto on a free port with a temporary config, or amqtt in-process when mosquitto
is not installed), the device simulators of ``firmware_stubs/`` publishing ESPresense and
barcode traffic, the gateway, and a local stand-in for the central record receiving the HTTP
batches (or, with ``--sink nats``, a local ``nats-server -js`` receiving the NATS sink's
stream). It prints where everything is, then one live status line, and stops cleanly on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import nats
import nats.js.errors
import yaml

from firmware_stubs.store_sim import StoreSimulator
from gateway.app import OUTBOX_FILE_NAME, Gateway
from gateway.clock import SystemClock
from gateway.config import MqttSettings, NatsSinkSettings, Settings
from gateway.localbroker import AmqttBroker, Mosquitto
from gateway.mqtt import MqttClient
from gateway.receiver import Receiver
from gateway.sinks.localnats import NatsServer
from gateway.web.tokens import new_token, token_digest

EXAMPLES = Path(__file__).parent / "examples"
EXAMPLE_STORE = EXAMPLES / "store.yaml"  # zones, audiences and the coffee machine's slot
EXAMPLE_RULES = EXAMPLES / "rules"
_STATUS_INTERVAL_S = 1.0
_QUIET_S = 0.2  # loopback delivery takes milliseconds: this long without news means no more
_SETTLE_TIMEOUT_S = 10.0  # a stuck gateway must not keep Ctrl-C from ending the demo


class _NatsCentral:
    """``--sink nats``: a local ``nats-server -js`` stands in for the chain's JetStream."""

    def __init__(self, directory: Path) -> None:
        self.server = NatsServer(directory=directory)
        self.url = self.server.url

    async def __aenter__(self) -> _NatsCentral:
        await asyncio.to_thread(self.server.start)
        self._client = await nats.connect(self.url)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._client.close()
        await asyncio.to_thread(self.server.stop)

    async def held(self) -> int:
        try:
            info = await self._client.jetstream().stream_info(NatsSinkSettings().stream)
        except nats.js.errors.NotFoundError:
            return 0  # the sink creates it on its first connect
        return int(info.state.messages)


async def run_demo(seconds: float | None, sightings_per_s: float, sink: str = "http") -> None:
    workdir = Path(tempfile.mkdtemp(prefix="lantern-demo-"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if seconds:
        loop.call_later(seconds, stop.set)

    mosquitto: Mosquitto | None = None
    amqtt: AmqttBroker | None = None
    if Mosquitto.available():
        mosquitto = Mosquitto(directory=workdir)
        await asyncio.to_thread(mosquitto.start)
        broker_url, broker_kind, protocol = mosquitto.url, "mosquitto", "5"
    else:
        amqtt = AmqttBroker()
        await amqtt.start()
        broker_url, broker_kind, protocol = amqtt.url, "amqtt (in-process)", "3.1.1"
    try:
        async with Receiver() as receiver, contextlib.AsyncExitStack() as stack:
            central: Receiver | _NatsCentral = receiver
            sink_settings: dict[str, object] = {"http_sink": {"url": receiver.url}}
            watch = "GET it for a count"
            if sink == "nats":
                central = await stack.enter_async_context(_NatsCentral(workdir / "nats"))
                sink_settings = {"nats_sink": {"url": central.url, "create_stream": True}}
                watch = f"JetStream, stream {NatsSinkSettings().stream}"
            store = yaml.safe_load(EXAMPLE_STORE.read_text(encoding="utf-8"))
            token = new_token()
            rules_dir = workdir / "rules"  # a copy: edit it live without touching the examples
            shutil.copytree(EXAMPLE_RULES, rules_dir)
            settings = Settings(
                **{
                    **store,
                    "data_dir": workdir / "data",
                    "mqtt": {"url": broker_url, "protocol": protocol},
                    **sink_settings,
                    # The demo's own admin token, shown with the console's address.
                    "web": {
                        "port": 0,
                        "host": "127.0.0.1",
                        "tokens": [
                            {"name": "demo", "role": "admin", "sha256": token_digest(token)}
                        ],
                    },
                    "rules": {"dir": rules_dir},
                }
            )
            gateway = Gateway(settings)
            port = broker_url.rsplit(":", 1)[1]
            print(
                "Lantern demo: a simulated store on this machine\n"
                f"  broker          {broker_url}  ({broker_kind}; watch: "
                f"mosquitto_sub -p {port} -t '#' -v)\n"
                f"  central record  {central.url}  ({watch})\n"
                f"  outbox          {settings.data_dir / OUTBOX_FILE_NAME}\n"
                f"  rules           {rules_dir} (edit them: they reload live)\n"
                f"  devices         {sightings_per_s:g} ESPresense sightings/s, 3 tills scanning,\n"
                "                  a coffee machine, Meraki Wi-Fi posts\n"
                f"  actions         mosquitto_sub -p {port} -t 'store/#' -v\n"
                "Ctrl-C stops everything cleanly.\n",
                flush=True,
            )
            gateway_stop = asyncio.Event()
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(gateway.run(gateway_stop), name="gateway")
                devices = tasks.create_task(
                    _simulate(settings.store_id, settings.mqtt, sightings_per_s, stop),
                    name="device-simulators",
                )
                tasks.create_task(_status_line(gateway, central, stop, token), name="status-line")
                await stop.wait()
                # The devices go first, then the gateway once it has committed what they sent:
                # nothing is left unacknowledged at a broker that would wait for it.
                await devices
                try:
                    await _settled(gateway)
                except TimeoutError:
                    print("\nthe gateway did not settle in time; stopping it anyway", flush=True)
                gateway_stop.set()
            print(
                f"\nstopped: the central record holds {await _held(central)} events "
                + (
                    f"({central.redeliveries} redeliveries deduplicated)."
                    if isinstance(central, Receiver)
                    else "(JetStream drops a resend by its Nats-Msg-Id)."
                )
            )
    finally:
        if mosquitto is not None:
            await asyncio.to_thread(mosquitto.stop)
        if amqtt is not None:
            await amqtt.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def _simulate(
    store_id: str, broker: MqttSettings, sightings_per_s: float, stop: asyncio.Event
) -> None:
    """The store's devices, all on one connection of their own to the store's broker."""
    simulator = StoreSimulator(store_id, seed=int(time.time()))
    client = MqttClient(
        broker, "demo-devices", f"lantern/{store_id}/demo/status", [], _ignore, SystemClock()
    )
    async with asyncio.TaskGroup() as tasks:
        connection = tasks.create_task(client.run(), name="demo-devices-mqtt")
        await client.wait_connected()
        for topic, payload in simulator.births():
            await client.publish(topic, payload, qos=1, retain=True)
        started = time.monotonic()
        for at_s, topic, payload in simulator.messages(sightings_per_s, smart_devices=True):
            delay = started + at_s - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await stop.wait()
            if stop.is_set():
                break
            await client.publish(topic, payload, qos=1)
        for topic, payload in simulator.last_wills():  # one client plays every device's will
            await client.publish(topic, payload, qos=1, retain=True)
        await client.close()
        connection.cancel()


def _ignore(message: object) -> None:
    """The devices subscribe to nothing."""


async def _settled(gateway: Gateway) -> None:
    """Until every message the gateway received is committed and acknowledged, and nothing new
    arrived for a moment (what the broker had in flight), or the wait is over."""
    async with asyncio.timeout(_SETTLE_TIMEOUT_S):
        quiet_since = None
        while True:
            ingest = gateway.ingest
            if ingest.settled < ingest.received:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= _QUIET_S:
                return
            await asyncio.sleep(_QUIET_S / 4)


async def _held(central: Receiver | _NatsCentral) -> int:
    return len(central.events) if isinstance(central, Receiver) else await central.held()


async def _status_line(
    gateway: Gateway, central: Receiver | _NatsCentral, stop: asyncio.Event, token: str
) -> None:
    await gateway.ready.wait()
    if gateway.web is not None:
        print(
            f"  status page     {gateway.web.url}/  (log in with {token})",
            flush=True,
        )
    assert gateway.status is not None  # set before ready
    interactive = sys.stdout.isatty()
    while not stop.is_set():
        snapshot = await gateway.status.snapshot()
        line = f"{snapshot.line()} | central holds {await _held(central)}"
        print(
            f"\r{line:<160}" if interactive else line, end="" if interactive else "\n", flush=True
        )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_STATUS_INTERVAL_S):
                await stop.wait()

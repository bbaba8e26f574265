"""What Lantern's MicroPython firmware stubs share (ESP32, MicroPython 1.20 or later).

Copied to the board beside each stub's ``main.py`` and ``config.json`` (README, "Firmware"):

* :func:`load_config` reads ``config.json``;
* :class:`Queue` keeps unsent messages, oldest first and bounded, while Wi-Fi or the broker is
  away (in RAM: a reboot loses them, a Wi-Fi drop does not);
* :class:`Link` is the Wi-Fi and MQTT session: a retained last will ``offline`` on
  ``lantern/{store}/device/{id}/status``, every publish at QoS 1 (umqtt.simple returns once the
  broker's PUBACK is in), a socket timeout so a silent broker cannot hang the loop, and
  reconnection with exponential backoff;
* :class:`Device` runs one loop step of the session: on every new connection the retained
  status report (``{"status": "online", "firmware", "uptime_s", "battery_mv"...}``), again every
  ``report_interval_s``, then the queue, in order; with an ``ntp_host`` in the config, it sets
  the board's clock once a session is up and daily after, so messages carry their time.

Nothing here blocks for long or sleeps: each stub's ``main.py`` calls :meth:`Device.service`
from its own loop and feeds the watchdog.
"""

import gc
import json
import time

import machine
import network
from umqtt.simple import MQTTClient

QOS_AT_LEAST_ONCE = 1
STATUS_OFFLINE = b"offline"
# Reconnection waits this long after a failure, doubling up to the maximum: a store's Wi-Fi
# coming back must not meet every device retrying at once, every loop.
BACKOFF_FIRST_MS = 1000
BACKOFF_MAX_MS = 60000
# Longer than the worst socket connect (lwIP gives up after about 20 s): only a loop that
# really hangs reboots the board, which loses the queue.
WATCHDOG_MS = 60000
# A broker that stops answering must not hang a QoS 1 publish waiting for its PUBACK: the
# socket gives up after this long and the message stays queued.
SOCKET_TIMEOUT_S = 5
# The board's clock says 2000 (or 1970) until NTP sets it; a time before this is no time.
_CLOCK_SET_YEAR = 2024
# The ESP32's RTC drifts by seconds a day: set it again daily; after a failed try (each may
# block the loop for ntptime's 1 s timeout), try again a minute later.
NTP_INTERVAL_MS = 24 * 3600 * 1000
NTP_RETRY_MS = 60 * 1000
_REQUIRED_KEYS = ("store", "id", "wifi", "mqtt")


def load_config(path="config.json"):
    """The device's settings; ValueError naming the first missing key."""
    with open(path) as file:
        config = json.load(file)
    for key in _REQUIRED_KEYS:
        if key not in config:
            raise ValueError(path + ": missing " + key)
    return config


def device_topic(config, kind):
    """``lantern/{store}/{kind}/{id}``: where this device publishes its data."""
    return "lantern/" + config["store"] + "/" + kind + "/" + config["id"]


def status_topic(config):
    return "lantern/" + config["store"] + "/device/" + config["id"] + "/status"


def utc_now():
    """The board's time in RFC 3339, or None while its clock was never set."""
    year, month, day, hour, minute, second = time.gmtime()[:6]
    if year < _CLOCK_SET_YEAR:
        return None
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}Z"


def timed(document):
    """``document`` as JSON, with the board's ``time`` when its clock is set: a message sent
    late (queued through a Wi-Fi drop) still says when it happened."""
    now = utc_now()
    if now is not None:
        document["time"] = now
    return json.dumps(document)


class Queue:
    """Unsent (topic, payload) pairs, oldest first; when full, the oldest goes and is counted."""

    def __init__(self, limit):
        self.items = []
        self.limit = limit
        self.dropped = 0

    def put(self, topic, payload):
        if len(self.items) >= self.limit:
            self.items.pop(0)
            self.dropped += 1
        self.items.append((topic, payload))


class Every:
    """True once per interval (ticks wrap around: only their differences are compared)."""

    def __init__(self, interval_ms):
        self.interval_ms = interval_ms
        self._last = time.ticks_ms()

    def due(self):
        now = time.ticks_ms()
        if time.ticks_diff(now, self._last) < self.interval_ms:
            return False
        self._last = now
        return True


class Uptime:
    """Seconds since boot, summed step by step: ticks_ms wraps after a few days."""

    def __init__(self):
        self._ms = 0
        self._last = time.ticks_ms()

    def seconds(self):
        now = time.ticks_ms()
        self._ms += time.ticks_diff(now, self._last)
        self._last = now
        return self._ms // 1000


class Battery:
    """A cell on an ADC pin behind a voltage divider."""

    def __init__(self, adc, divider, empty_mv, full_mv):
        self.adc = adc
        self.divider = divider
        self.empty_mv = empty_mv
        self.full_mv = full_mv

    def values(self):
        millivolts = round(self.adc.read_uv() * self.divider / 1000)
        percent = 100 * (millivolts - self.empty_mv) // (self.full_mv - self.empty_mv)
        return {"battery_mv": millivolts, "battery_pct": max(0, min(100, percent))}


class Link:
    """Wi-Fi and one MQTT session to the store's broker."""

    def __init__(self, config, wlan):
        self.wlan = wlan
        self.client = None
        self.new_session = False
        self._config = config
        self._status_topic = status_topic(config).encode()
        self._retry_at = time.ticks_ms()
        self._backoff_ms = BACKOFF_FIRST_MS

    def ensure(self):
        """Whether the session is up, after one attempt to bring it up if it is time to."""
        if self.client is not None:
            if self.wlan.isconnected():
                return True
            self.lost("Wi-Fi dropped")
        if time.ticks_diff(time.ticks_ms(), self._retry_at) < 0:
            return False
        wifi = self._config["wifi"]
        try:
            if not self.wlan.isconnected():
                self.wlan.active(True)
                self.wlan.connect(wifi["ssid"], wifi["password"])
                if not self.wlan.isconnected():  # the ESP32 joins in the background
                    self._later()
                    return False
            self.client = self._connect()
        except Exception as exc:  # umqtt.simple raises OSError, MQTTException, or worse
            self._later()
            print("lantern: no session:", repr(exc))
            return False
        self.new_session = True
        self._backoff_ms = BACKOFF_FIRST_MS
        return True

    def publish(self, topic, payload, retain=False):
        """True once the broker has acknowledged it; False, and the session is dropped."""
        try:
            self.client.publish(topic.encode(), payload.encode(), retain, QOS_AT_LEAST_ONCE)
        except Exception as exc:
            self.lost("publish failed: " + repr(exc))
            return False
        return True

    def flush(self, queue):
        """Send the queue in order; a message leaves it only once acknowledged."""
        while queue.items and self.client is not None:
            topic, payload = queue.items[0]
            if not self.publish(topic, payload):
                return
            queue.items.pop(0)

    def lost(self, why):
        """Forget the session (the broker publishes our will) and retry after the backoff."""
        client, self.client = self.client, None
        try:  # noqa: SIM105 - MicroPython has no contextlib unless installed
            client.sock.close()
        except Exception:  # already gone: nothing to close
            pass
        print("lantern: session lost:", why)
        self._later()

    def _connect(self):
        mqtt = self._config["mqtt"]
        client = MQTTClient(
            ("lantern-" + self._config["id"]).encode(),
            mqtt["host"],
            port=mqtt.get("port", 1883),
            user=mqtt.get("user"),
            password=mqtt.get("password"),
            keepalive=mqtt.get("keepalive_s", 60),
        )
        client.set_last_will(self._status_topic, STATUS_OFFLINE, True, QOS_AT_LEAST_ONCE)
        client.connect()
        client.sock.settimeout(SOCKET_TIMEOUT_S)
        return client

    def _later(self):
        self._retry_at = time.ticks_add(time.ticks_ms(), self._backoff_ms)
        self._backoff_ms = min(self._backoff_ms * 2, BACKOFF_MAX_MS)


class Device:
    """One device's session, queue and status report; a stub adds what it measures."""

    def __init__(self, config, firmware, wlan, battery=None):
        self.config = config
        self.firmware = firmware
        self.link = Link(config, wlan)
        self.queue = Queue(config.get("queue_max", 100))
        self.battery = battery
        self.uptime = Uptime()
        self._reports = Every(1000 * config.get("report_interval_s", 300))
        self._keepalive = Every(500 * config["mqtt"].get("keepalive_s", 60))
        self._status_topic = status_topic(config)
        self._ntp_host = config.get("ntp_host")
        self._ntp = Every(NTP_RETRY_MS)
        self._ntp_tried = False

    def send(self, topic, document):
        """Queue one message (with the board's time); :meth:`service` sends it when it can."""
        self.queue.put(topic, timed(document))

    def status(self):
        """The retained status report: online, and the device's health."""
        report = {
            "status": "online",
            "firmware": self.firmware,
            "uptime_s": self.uptime.seconds(),
            "free_heap_bytes": gc.mem_free(),
            "wifi_rssi_dbm": self.link.wlan.status("rssi"),
            "queued": len(self.queue.items),
            "dropped": self.queue.dropped,
        }
        if self.battery is not None:
            report.update(self.battery.values())
        return json.dumps(report)

    def service(self):
        """One step of the session: (re)connect if due, report, send what is queued."""
        self.uptime.seconds()
        if not self.link.ensure():
            return
        if self._ntp_host and (not self._ntp_tried or self._ntp.due()):
            self._set_clock()
        if self.link.new_session or self._reports.due():
            self.link.new_session = False
            if not self.link.publish(self._status_topic, self.status(), retain=True):
                return
        elif self._keepalive.due():
            self._ping()
        self.link.flush(self.queue)

    def _set_clock(self):
        import ntptime  # micropython-lib; a board without an ntp_host never needs it

        ntptime.host = self._ntp_host
        self._ntp_tried = True
        try:
            ntptime.settime()
        except Exception as exc:  # no answer: messages go without time until the next try
            print("lantern: clock not set:", repr(exc))
            self._ntp.interval_ms = NTP_RETRY_MS
            return
        self._ntp.interval_ms = NTP_INTERVAL_MS

    def _ping(self):
        """Read the broker's answer to the last ping (a closed socket shows here), ping again."""
        client = self.link.client
        try:
            client.check_msg()
            client.sock.settimeout(SOCKET_TIMEOUT_S)  # check_msg leaves the socket blocking
            client.ping()
        except Exception as exc:
            self.link.lost("ping failed: " + repr(exc))


def battery_of(config):
    """The battery the config describes (``"battery": {"adc_pin", "divider", "empty_mv",
    "full_mv"}``), or None for a mains-powered device."""
    settings = config.get("battery")
    if not settings:
        return None
    adc = machine.ADC(machine.Pin(settings["adc_pin"]))
    adc.atten(machine.ADC.ATTN_11DB)  # the full 0-3.3 V range: a divided Li-ion cell
    return Battery(adc, settings["divider"], settings["empty_mv"], settings["full_mv"])


def device_of(config, firmware):
    """The device of this board: its station Wi-Fi, and its battery if the config has one."""
    return Device(config, firmware, network.WLAN(network.STA_IF), battery_of(config))


def run(step, loop_ms):
    """Call ``step`` for ever, ``loop_ms`` apart, feeding the watchdog."""
    watchdog = machine.WDT(timeout=WATCHDOG_MS)
    while True:
        watchdog.feed()
        step()
        time.sleep_ms(loop_ms)

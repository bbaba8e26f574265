"""The one configuration model: ``store.yaml``, overridden by ``LANTERN_*`` environment variables.

Precedence, highest first: the short variables (``LANTERN_MQTT_URL``, ``LANTERN_FORWARD_URL``),
nested variables ``LANTERN_<SECTION>__<KEY>`` (and ``LANTERN_STORE_ID``, ``LANTERN_DATA_DIR``),
the YAML file named by ``--config`` or ``LANTERN_CONFIG``, then the defaults below. With no file
at all the gateway starts on defaults. An invalid configuration raises :class:`ConfigError`
with one ``file: key: what is wrong`` line per problem.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import SplitResult, unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from devices.registry import DeviceSpec, beacon_names
from lantern.errors import ConfigError
from rules.presence import PresenceSettings
from rules.zones import AudienceSpec, ZoneSpec

SourceKind = Literal[
    "espresense", "theengs", "local-ble", "barcode", "wifi", "reorder", "device-status"
]


def _listed_twice(names: list[str]) -> list[str]:
    return sorted({name for name in names if names.count(name) > 1})


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _check_port(parts: SplitResult) -> None:
    """A URL's port, if it has one, is a number in range (urlsplit checks only when asked)."""
    try:
        parts.port  # noqa: B018
    except ValueError as exc:
        raise ValueError(f"bad port: {exc}") from None


class MqttSettings(_Section):
    url: str = "mqtt://127.0.0.1:1883"
    client_id: str | None = None  # default: lantern-<store id>, stable so the session survives
    protocol: Literal["5", "3.1.1"] = "5"
    # One day: the broker keeps our subscriptions and queued QoS 1 messages through an outage
    # of up to a day; longer and we would rather start fresh than replay a backlog that old.
    session_expiry_s: int = Field(default=86_400, gt=0)
    keepalive_s: int = Field(default=30, ge=5)
    # QoS 1 messages the broker may have in flight to us unacknowledged. We acknowledge only
    # after a commit, so this must cover a whole commit interval at peak rate (10k msg/s x 0.1 s)
    # and more: four batches, so that the broker still has room to send while one batch commits,
    # one waits and one fills (two batches' worth left the loop waiting a fifth of the time).
    # The broker's max_inflight_messages must allow as many (systemd/mosquitto-lantern.conf).
    receive_maximum: int = Field(default=4_000, ge=1, le=65_535)
    # The broker is on the store's own box: trying again costs nothing, and after an outage
    # of any length the gateway is back within 4 s of the broker (jittered between 2 and 4).
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=4.0, gt=0)
    max_payload_bytes: int = Field(default=64 * 1024, gt=0)

    @field_validator("url")
    @classmethod
    def _valid_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError("must look like mqtt://[user:pass@]host:port (mqtts:// for TLS)")
        if not parts.hostname:
            raise ValueError("has no host")
        _check_port(parts)
        return url

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    @property
    def username(self) -> str | None:
        user = urlsplit(self.url).username
        return unquote(user) if user else None

    @property
    def password(self) -> str | None:
        password = urlsplit(self.url).password
        return unquote(password) if password else None


class SourceSettings(_Section):
    """One inbound topic pattern and the device family that decodes it.

    ``{store}`` in a pattern is the configured store id; any other ``{name}`` matches one
    topic level and is handed to the decoder as a field.
    """

    kind: SourceKind
    topic: str
    qos: Literal[0, 1] = 1


DEFAULT_SOURCES = (
    SourceSettings(kind="espresense", topic="espresense/devices/{id}/{room}"),
    SourceSettings(kind="espresense", topic="espresense/rooms/{room}/status"),
    SourceSettings(kind="espresense", topic="espresense/rooms/{room}/telemetry"),
    SourceSettings(kind="theengs", topic="home/{gw}/BTtoMQTT/{id}"),
    # The box's own radio (gateway/sources/ble.py) feeds this topic in-process.
    SourceSettings(kind="local-ble", topic="lantern/{store}/ble/{gw}", qos=0),
    SourceSettings(kind="wifi", topic="lantern/{store}/wifi/{source}"),
    SourceSettings(kind="barcode", topic="lantern/{store}/scanner/{device}"),
    SourceSettings(kind="reorder", topic="lantern/{store}/reorder/{device}"),
    SourceSettings(kind="device-status", topic="lantern/{store}/device/{device}/status"),
)


class OutboxSettings(_Section):
    # A commit every N messages or M ms, whichever first: measured 170k rows/s at 100 rows
    # per transaction against 5k rows/s at one. The wait is half of publish->commit latency
    # at a store's load: at 2,500 msg/s, p99 37-45 ms with 25 against 69-73 with 50 (101
    # with 50 on a box half as fast), for at most 40 fsync'd commits a second when quiet.
    batch_max_messages: int = Field(default=1_000, ge=1)
    batch_max_ms: int = Field(default=25, ge=1)
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    retention_s: int = Field(default=86_400, ge=0)  # delivered events kept a day for inspection
    # Sightings are kept locally only and are the bulk (2.5k/s in a big store): an hour is
    # enough to replay presence, a day would be ~200M rows.
    sighting_retention_s: int = Field(default=3_600, ge=0)
    dead_letter_retention_s: int = Field(default=7 * 86_400, ge=0)
    # Digests of the last N committed messages, to recognise a redelivered (DUP) one. The
    # broker can only redeliver what was in flight, so a few receive windows are plenty.
    dedup_window_messages: int = Field(default=100_000, ge=1_000)
    # What the outbox database may hold. Over it, delivered events go first, then the oldest
    # undelivered sightings and dead letters (counted); scans, reorders, zone and emitted
    # events are never dropped: with the budget full of them, acknowledgements wait (the
    # broker keeps the messages) until a sink delivers. 1 GiB is about 2 million events, days
    # of a big store's forwarded events.
    max_bytes: int = Field(default=1024**3, ge=1024**2)


# Sightings stay in the store unless a sink is told otherwise. They are the bulk (2.5k/s in a
# big store, ~200M a day), they are a trace of where each visitor walked second by second
# (pseudonymous, but personal data that leaves the store), and the central record wants what
# they add up to: the zone entered / dwelled / left events presence makes of them. A sink that
# really wants them sets ``exclude_types: []``.
DEFAULT_SINK_EXCLUDE_TYPES = ("lantern.presence.sighted",)


class SinkSettings(_Section):
    """What every sink shares: how much it sends at once and how it backs off."""

    batch_max_events: int = Field(default=500, ge=1)
    retry_min_s: float = Field(default=0.5, gt=0)
    # 10 s: after the far side returns, the first delivery comes within seconds (a 60 s cap
    # meant up to a minute of waiting for nothing); a sink can also be woken at once.
    retry_max_s: float = Field(default=10.0, gt=0)


class ForwardingSinkSettings(SinkSettings):
    """A sink to the central record: where, and which event types it takes (the same default
    for all)."""

    URL_SCHEMES: ClassVar[tuple[str, ...]] = ()

    url: str | None = None  # no such sink when unset
    include_types: tuple[str, ...] = ()  # empty: every type not excluded
    exclude_types: tuple[str, ...] = DEFAULT_SINK_EXCLUDE_TYPES

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in cls.URL_SCHEMES or not parts.hostname:
            schemes = " or ".join(f"{scheme}://" for scheme in cls.URL_SCHEMES)
            raise ValueError(f"must be a {schemes} URL with a host")
        _check_port(parts)
        return url


class TlsSettings(_Section):
    """TLS to a central service; with no file given, the system's CAs and no client cert."""

    ca_file: Path | None = None
    cert_file: Path | None = None  # a client certificate, for services that authenticate by it
    key_file: Path | None = None

    @field_validator("key_file")
    @classmethod
    def _key_with_cert(cls, key_file: Path | None, info: ValidationInfo) -> Path | None:
        if key_file is not None and info.data.get("cert_file") is None:
            raise ValueError("a key_file needs its cert_file")
        return key_file


class HttpSinkSettings(ForwardingSinkSettings):
    URL_SCHEMES = ("http", "https")

    token: SecretStr | None = None
    gzip: bool = False
    timeout_s: float = Field(default=10.0, gt=0)


class NatsSinkSettings(ForwardingSinkSettings):
    """The chain's NATS JetStream: one subject per store and event type, one stream for all."""

    URL_SCHEMES = ("nats", "tls")  # nats://host:4222, tls:// for TLS

    stream: str = Field(default="LANTERN", pattern=r"^[A-Za-z0-9_-]+$")
    subject_prefix: str = Field(default="lantern", pattern=r"^[\w-]+(\.[\w-]+)*$")
    credentials: Path | None = None  # a NATS .creds file (JWT and NKey seed)
    tls: TlsSettings | None = None
    # Off by default: the platform team owns the stream's limits and replicas; on, the gateway
    # makes a file-backed stream for its subjects when there is none (a lab, the demo).
    create_stream: bool = False
    # JetStream drops a message whose Nats-Msg-Id it saw within this window, so a page resent
    # after a lost ack is not stored twice. It must cover an ack lost to a server restart (the
    # resend follows the reconnect); 2 min is JetStream's own default.
    duplicate_window_s: float = Field(default=120.0, ge=120.0)
    # Publishes in flight are acked within milliseconds; this long without an ack means the
    # server or the route to it is gone, and the page is sent again (duplicates are dropped).
    ack_timeout_s: float = Field(default=10.0, gt=0)
    # All of a page is in flight at once; larger pages measured no faster here.
    batch_max_events: int = Field(default=2_000, ge=1)


class MqttBridgeSinkSettings(ForwardingSinkSettings):
    """A central MQTT broker: QoS 1, one topic per store and event type."""

    URL_SCHEMES = ("mqtt", "mqtts")  # mqtts:// for TLS, as in the mqtt section

    topic_prefix: str = "lantern"
    client_id: str | None = None  # default: lantern-bridge-<store id>
    username: str | None = None
    password: SecretStr | None = None
    tls: TlsSettings | None = None  # also on for an mqtts:// URL
    keepalive_s: int = Field(default=30, ge=5)
    ack_timeout_s: float = Field(default=10.0, gt=0)  # as for NATS: no PUBACK this long, resend
    # A page is pipelined up to the broker's Receive Maximum and the pipe runs dry at its end:
    # pages well beyond the window keep it full (measured 36k events/s at 2,000, 71k at 10,000).
    batch_max_events: int = Field(default=10_000, ge=1)

    @field_validator("topic_prefix")
    @classmethod
    def _publishable_prefix(cls, prefix: str) -> str:
        if not prefix or any(char in prefix for char in "+#\0"):
            raise ValueError("must be a non-empty topic without + or #")
        return prefix.rstrip("/")


class ActionSinkSettings(SinkSettings):
    """Rules' publishes to the store's own broker; how long each may wait is the rule's ttl."""

    batch_max_events: int = Field(default=100, ge=1)


class BleSettings(_Section):
    """The box's own Bluetooth radio (bleak); off unless the box has an adapter."""

    enabled: bool = False
    adapter: str = "hci0"
    scanner_name: str = "gateway"  # the scanner (zone member) this radio counts as
    # BlueZ stalls silently after hours; in a store a minute without any advertisement
    # means the scanner, not the store, went quiet.
    stall_timeout_s: float = Field(default=60.0, gt=0)


Role = Literal["technician", "marketer", "admin"]  # admin: both of the others


class WebToken(_Section):
    """One console login: ``lantern token new --name N --role R`` prints the token once and
    this entry to paste. Only the token's SHA-256 is kept here, so store.yaml lets no one in."""

    name: str
    role: Role
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.@-]{1,64}", name):
            raise ValueError("use up to 64 letters, digits and _ . @ -")
        return name


class WebSettings(_Section):
    """The store console (the technicians' and marketers' pages and API) and the Meraki
    Scanning API receiver."""

    enabled: bool = True
    # Where to listen. Unset: every interface once a token is configured, else 127.0.0.1
    # only, since without a token no one can log in from elsewhere anyway.
    host: str | None = None
    port: int = Field(default=8080, ge=0, le=65_535)  # 0: any free port
    tokens: tuple[WebToken, ...] = ()
    # Host names the console answers to, besides IP addresses, localhost and this box's own
    # name (and name.local): a page on another name is a DNS-rebinding attempt. "*": any.
    allowed_hosts: tuple[str, ...] = ()
    # /metrics without a token, for a Prometheus on the store network that cannot send one.
    metrics_public: bool = False
    # Where the recordings a marketer can backtest over live (lantern record --out ...);
    # unset: <data_dir>/recordings.
    recordings_dir: Path | None = None
    # A phone on the shop floor stays logged in for a shift; a restart logs everyone out.
    session_hours: float = Field(default=12.0, gt=0)
    # Meraki Scanning API v3: GET answers the validator, POST must carry the shared secret.
    meraki_validator: str | None = None
    meraki_secret: SecretStr | None = None

    @field_validator("tokens")
    @classmethod
    def _names_once(cls, tokens: tuple[WebToken, ...]) -> tuple[WebToken, ...]:
        if duplicated := _listed_twice([token.name for token in tokens]):
            raise ValueError(f"token name listed twice: {', '.join(duplicated)}")
        return tokens

    @property
    def listen_host(self) -> str:
        if self.host is not None:
            return self.host
        return "0.0.0.0" if self.tokens else "127.0.0.1"


class RulesSettings(_Section):
    """The marketers' rules folder: one YAML file per rule, watched and reloaded whole."""

    dir: Path | None = None  # no rules when unset
    # Why a rule did or did not fire, per rule and event: a busy store evaluates a few
    # thousand a minute, so 10k covers the last minutes a marketer asks about.
    trace_capacity: int = Field(default=10_000, ge=100)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LANTERN_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    store_id: str = Field(default="store-1", pattern=r"^[A-Za-z0-9_.-]+$")
    data_dir: Path = Path("lantern-data")
    timezone: str = "UTC"
    mqtt: MqttSettings = MqttSettings()
    sources: tuple[SourceSettings, ...] = DEFAULT_SOURCES
    outbox: OutboxSettings = OutboxSettings()
    http_sink: HttpSinkSettings = HttpSinkSettings()
    nats_sink: NatsSinkSettings = NatsSinkSettings()
    mqtt_bridge_sink: MqttBridgeSinkSettings = MqttBridgeSinkSettings()
    action_sink: ActionSinkSettings = ActionSinkSettings()
    web: WebSettings = WebSettings()
    ble: BleSettings = BleSettings()
    devices: tuple[DeviceSpec, ...] = ()
    zones: tuple[ZoneSpec, ...] = ()
    audiences: tuple[AudienceSpec, ...] = ()
    presence: PresenceSettings = PresenceSettings()
    rules: RulesSettings = RulesSettings()

    @field_validator("devices", "zones")
    @classmethod
    def _ids_listed_once(
        cls, entries: tuple[DeviceSpec, ...] | tuple[ZoneSpec, ...]
    ) -> tuple[DeviceSpec, ...] | tuple[ZoneSpec, ...]:
        if duplicated := _listed_twice([entry.id for entry in entries]):
            raise ValueError(f"id listed twice: {', '.join(duplicated)}")
        return entries

    @field_validator("devices")
    @classmethod
    def _beacons_named_once(cls, devices: tuple[DeviceSpec, ...]) -> tuple[DeviceSpec, ...]:
        beacon_names(devices)  # raises, naming the beacon and both devices
        return devices

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r}") from None
        return name

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's values arrive as init kwargs; the environment overrides them.
        return (_ShortEnvSource(settings_cls), env_settings, init_settings)


class _ShortEnvSource(PydanticBaseSettingsSource):
    """The short variables the README documents, mapped onto their nested keys."""

    SHORT: ClassVar[dict[str, tuple[str, str]]] = {
        "LANTERN_MQTT_URL": ("mqtt", "url"),
        "LANTERN_FORWARD_URL": ("http_sink", "url"),
    }

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for variable, (section, key) in self.SHORT.items():
            if value := os.environ.get(variable):
                values.setdefault(section, {})[key] = value
        return values


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the configuration, or raise ConfigError with one line per problem."""
    environ = os.environ if environ is None else environ
    if path is None and environ.get("LANTERN_CONFIG"):
        path = Path(environ["LANTERN_CONFIG"])
    file_values: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
        except yaml.YAMLError as exc:
            raise ConfigError([f"{path}: not valid YAML: {exc}".replace("\n", " ")]) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError([f"{path}: the top level must be a mapping of keys"])
        file_values = loaded or {}
    try:
        return Settings(**file_values)
    except ValidationError as exc:
        raise ConfigError([_problem_line(path, environ, error) for error in exc.errors()]) from None


def _problem_line(path: Path | None, environ: Mapping[str, str], error: Mapping[str, Any]) -> str:
    """``origin: key: what is wrong``, the origin being the variable that set the key when
    one did (it overrides the file), else the file."""
    loc = tuple(str(part) for part in error["loc"])
    key = ".".join(loc) or "(top level)"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    return f"{_origin(loc, path, environ)}: {key}: {message}"


def _origin(loc: tuple[str, ...], path: Path | None, environ: Mapping[str, str]) -> str:
    variables = [
        variable for variable, target in _ShortEnvSource.SHORT.items() if loc[:2] == target
    ]
    # The nested form names the key itself or any section above it (a whole section as JSON).
    variables += [f"LANTERN_{'__'.join(loc[:depth]).upper()}" for depth in range(len(loc), 0, -1)]
    for variable in variables:
        if environ.get(variable):
            return variable
    return str(path) if path is not None else "environment"

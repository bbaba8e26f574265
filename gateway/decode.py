"""``lantern decode``: one payload through the gateway's own decode path, for technicians."""

from __future__ import annotations

from datetime import UTC, datetime

from devices.ble import parse_advertisement
from devices.model import Sighting
from gateway.config import Settings
from gateway.events import IdGenerator
from gateway.mqtt import Inbound
from gateway.pipeline import DedupWindow, Pipeline
from gateway.privacy import Pseudonymizer, load_or_create_secret
from gateway.router import Router, default_decoders
from lantern.errors import DecodeError

LOCAL_SCANNER = "local"  # the scanner name of an advertisement decoded by hand


def _pipeline(settings: Settings) -> Pipeline:
    return Pipeline(
        settings.store_id,
        Router(settings.sources, settings.store_id, default_decoders()),
        Pseudonymizer(load_or_create_secret(settings.data_dir)),
        IdGenerator(),
        settings.mqtt.max_payload_bytes,
        DedupWindow(1),
    )


def decode_payload(settings: Settings, topic: str, payload: bytes) -> list[str]:
    """The CloudEvents (JSON) the gateway makes of this message; ValueError with the reason."""
    processed = _pipeline(settings).process(
        [Inbound(topic, payload, 0, 0, False, datetime.now(UTC), 0)]
    )
    if processed.batch.dead_letters:
        raise ValueError(processed.batch.dead_letters[0].reason)
    if processed.ignored:
        raise ValueError(f"the decoder for {topic} does not recognise this payload")
    return [event.body for event in processed.batch.events]


def decode_advertisement(settings: Settings, adv_hex: str) -> list[str]:
    try:
        raw = bytes.fromhex(adv_hex.replace(" ", "").replace(":", ""))
    except ValueError:
        raise ValueError("the advertisement is not hex") from None
    try:
        advertisement = parse_advertisement(raw)
    except DecodeError as exc:
        raise ValueError(exc.reason) from None
    if advertisement.frame is None:
        raise ValueError("no beacon frame (iBeacon, AltBeacon, Eddystone) in the advertisement")
    now = datetime.now(UTC)
    sighting = Sighting(
        device_id=LOCAL_SCANNER,
        scanner=LOCAL_SCANNER,
        identity=advertisement.frame.identity(),
        tx_power=advertisement.tx_power,
        beacon=advertisement.frame.fields(),
    )
    return [_pipeline(settings).event(sighting, now).body]

"""``lantern decode``: one payload through the gateway's own path, for technicians.

The pipeline is the gateway's (gateway/build.py), started afresh: the events printed are those
the gateway makes of this message, including what a fresh start derives from it (a zone
entered, with zones configured). Addresses are pseudonymised with the box's secret when the
configured data folder has one, so the pseudonyms match the box's; otherwise with a throw-away
key, and nothing is written anywhere.
"""

from __future__ import annotations

import secrets
from datetime import datetime

from devices.ble import parse_advertisement
from devices.model import Sighting
from gateway.batch import Inbound
from gateway.build import build
from gateway.config import Settings
from gateway.events import IdGenerator
from gateway.pipeline import DedupWindow, Pipeline, Processed
from gateway.privacy import SECRET_FILE_NAME, Pseudonymizer
from lantern.errors import DecodeError
from rules.model import RuleSet

__all__ = ["LOCAL_SCANNER", "decode_advertisement", "decode_payload"]

LOCAL_SCANNER = "local"  # the scanner name of an advertisement decoded by hand
_THROWAWAY_KEY_BYTES = 32


def _pipeline(settings: Settings) -> Pipeline:
    secret_file = settings.data_dir / SECRET_FILE_NAME
    secret = (
        secret_file.read_bytes()
        if secret_file.is_file()
        else secrets.token_bytes(_THROWAWAY_KEY_BYTES)
    )
    return build(settings, RuleSet(), Pseudonymizer(secret), IdGenerator(), DedupWindow(1)).pipeline


def _events(processed: Processed, topic: str) -> list[str]:
    if processed.batch.dead_letters:
        raise DecodeError(processed.batch.dead_letters[0].reason)
    if processed.ignored:
        raise DecodeError(f"the decoder for {topic} does not recognise this payload")
    return [event.body for event in processed.batch.events]


def decode_payload(settings: Settings, topic: str, payload: bytes, at: datetime) -> list[str]:
    """The CloudEvents (JSON) the gateway makes of this message; DecodeError with the reason."""
    return _events(_pipeline(settings).process([Inbound.local(topic, payload, at)]), topic)


def decode_advertisement(settings: Settings, adv_hex: str, at: datetime) -> list[str]:
    """The sighting event of a raw BLE advertisement heard by the box; DecodeError if none."""
    try:
        raw = bytes.fromhex(adv_hex.replace(" ", "").replace(":", ""))
    except ValueError:
        raise DecodeError("the advertisement is not hex") from None
    advertisement = parse_advertisement(raw)
    if advertisement.frame is None:
        raise DecodeError("no beacon frame (iBeacon, AltBeacon, Eddystone) in the advertisement")
    sighting = Sighting(
        device_id=LOCAL_SCANNER,
        scanner=LOCAL_SCANNER,
        identity=advertisement.frame.identity(),
        tx_power=advertisement.tx_power,
        beacon=advertisement.frame.fields(),
    )
    return _events(_pipeline(settings).admit([sighting], at), LOCAL_SCANNER)

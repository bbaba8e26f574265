"""BLE beacon frames from raw advertisement bytes: iBeacon, AltBeacon and Eddystone.

Every BLE source ends here: the local radio (bleak's ``AdvertisementData`` carries exactly a
manufacturer-data and a service-data mapping), Theengs / OpenMQTTGateway raw hex, and the
beacon ids ESPresense has already decoded. They all produce the same :class:`BeaconFrame`, so
a beacon has one visitor identity whichever scanner saw it.

A decoder returns None for bytes of no format it knows, and raises :class:`DecodeError` for
bytes that carry a format's marker but not its layout. Raw MAC addresses never enter a frame:
frames are copied verbatim into ``Sighting.beacon``, which is not pseudonymised.

:func:`find_mac` finds an address that a scanner wrote into an id or a name.
"""

from __future__ import annotations

import functools
import re
import struct
from collections.abc import Callable, Mapping
from functools import partial
from typing import Annotated, Any, Literal, TypeVar

import msgspec
import msgspec.inspect

from devices.model import normalize_mac
from lantern.errors import DecodeError

__all__ = [
    "APPLE_COMPANY_ID",
    "EDDYSTONE_SERVICE_UUID",
    "AdStructures",
    "Advertisement",
    "AltBeaconFrame",
    "BeaconFrame",
    "EddystoneEidFrame",
    "EddystoneTlmFrame",
    "EddystoneUidFrame",
    "EddystoneUrlFrame",
    "IBeaconFrame",
    "build_frame",
    "find_mac",
    "frame_from_advertisement",
    "full_service_uuid",
    "measured_power",
    "parse_advertisement",
    "parse_manufacturer_data",
    "parse_service_data",
    "read_ad_structures",
    "uuid_text",
]

_HEX = "[0-9a-f]"
# A frame's value constraints, as msgspec.Meta: build_frame checks values given as JSON
# against them; values unpacked from bytes meet them by construction.
_Uuid = Annotated[
    str, msgspec.Meta(pattern=f"^{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}$")
]
_UInt16 = Annotated[int, msgspec.Meta(ge=0, le=0xFFFF)]
_UInt8 = Annotated[int, msgspec.Meta(ge=0, le=0xFF)]
_Int8 = Annotated[int, msgspec.Meta(ge=-128, le=127)]
_NamespaceHex = Annotated[str, msgspec.Meta(pattern=f"^{_HEX}{{20}}$")]
_InstanceHex = Annotated[str, msgspec.Meta(pattern=f"^{_HEX}{{12}}$")]
_EidHex = Annotated[str, msgspec.Meta(pattern=f"^{_HEX}{{16}}$")]


# --- frames -------------------------------------------------------------------------------


class BeaconFrame(msgspec.Struct, frozen=True, kw_only=True):
    """One decoded beacon frame; subclasses are the formats.

    Values a source did not give (ESPresense reports a beacon's id, not its calibrated power)
    are None and left out of :meth:`fields`. A frame is a Struct, built in C on the per-message
    path; :func:`build_frame` checks values that did not come from bytes.
    """

    format: str

    def identity(self) -> str | None:
        """The stable visitor identity the frame carries, or None (URL and TLM carry none)."""
        return None

    def fields(self) -> dict[str, Any]:
        """The frame as JSON-ready values, the shape of ``Sighting.beacon``."""
        return {
            name: value
            for name in self.__struct_fields__
            if (value := getattr(self, name)) is not None
        }

    def measured_power_1m(self) -> int | None:
        """The beacon's calibrated RSSI at 1 m for the distance model, or None."""
        return None


def measured_power(dbm: int | None) -> int | None:
    """A measured-power byte as a calibrated RSSI at 1 m, or None when it cannot be one.

    A measured power is what a receiver hears at 1 m, so it is negative in practice: even a
    +20 dBm transmitter loses about 40 dB over its first metre at 2.4 GHz. A byte of 0 or
    above is something else: some vendors put the battery voltage there in tenths of a volt
    (the NRF51822 iBeacon of Theengs Decoder's tests sends 0x1a, which Theengs reports as
    ``volt`` 2.6). The frame keeps the byte as sent; the sighting gets no ``tx_power`` from it,
    so the distance model uses its configured power (``presence.tx_power_1m_dbm``).
    """
    return dbm if dbm is not None and dbm < 0 else None


class IBeaconFrame(BeaconFrame, frozen=True, kw_only=True):
    format: Literal["ibeacon"] = "ibeacon"
    uuid: _Uuid
    major: _UInt16
    minor: _UInt16
    tx_power_1m: _Int8 | None = None

    def identity(self) -> str:
        return f"ibeacon:{self.uuid}-{self.major}-{self.minor}"

    def measured_power_1m(self) -> int | None:
        return measured_power(self.tx_power_1m)


class AltBeaconFrame(BeaconFrame, frozen=True, kw_only=True):
    """An AltBeacon; its 20-byte beacon id split as id1 (UUID), id2, id3, by convention.

    ``reserved`` (the manufacturer's byte) is None when the beacon leaves it out, as the
    reference Android library accepts (AltBeaconParserTest.testParsesBeaconMissingDataField).
    """

    format: Literal["altbeacon"] = "altbeacon"
    id1: _Uuid
    id2: _UInt16
    id3: _UInt16
    tx_power_1m: _Int8 | None = None
    manufacturer: _UInt16 | None = None
    reserved: _UInt8 | None = None

    def identity(self) -> str:
        return f"altbeacon:{self.id1}-{self.id2}-{self.id3}"

    def measured_power_1m(self) -> int | None:
        return measured_power(self.tx_power_1m)


class EddystoneUidFrame(BeaconFrame, frozen=True, kw_only=True):
    format: Literal["eddystone-uid"] = "eddystone-uid"
    namespace: _NamespaceHex
    instance: _InstanceHex
    tx_power_0m: _Int8 | None = None

    def identity(self) -> str:
        return f"eddystone:{self.namespace}-{self.instance}"


class EddystoneUrlFrame(BeaconFrame, frozen=True, kw_only=True):
    format: Literal["eddystone-url"] = "eddystone-url"
    url: str
    tx_power_0m: _Int8


class EddystoneTlmFrame(BeaconFrame, frozen=True, kw_only=True):
    """Unencrypted telemetry (version 0); a value the beacon does not measure is None."""

    format: Literal["eddystone-tlm"] = "eddystone-tlm"
    battery_mv: int | None
    temperature_c: float | None
    adv_count: int
    uptime_s: float

    def telemetry_values(self) -> dict[str, Any]:
        """The beacon's health, for a ``Telemetry`` observation's ``values``."""
        health = {"battery_mv": self.battery_mv, "temperature_c": self.temperature_c}
        return {name: value for name, value in health.items() if value is not None}


class EddystoneEidFrame(BeaconFrame, frozen=True, kw_only=True):
    format: Literal["eddystone-eid"] = "eddystone-eid"
    eid: _EidHex
    tx_power_0m: _Int8

    def identity(self) -> str:
        return f"eddystone-eid:{self.eid}"


_Frame = TypeVar("_Frame", bound=BeaconFrame)
# A field's check: the value as the frame keeps it, or the reason it is refused. The reasons
# are worded as the pydantic models these frames once were worded them, so a dead letter's
# reason is the same as before.
_Check = Callable[[Any], "tuple[Any, str | None]"]


def build_frame(frame_type: type[_Frame], **values: Any) -> _Frame:
    """A frame from values a scanner decoded itself (JSON), or a decode error naming the bad one.

    Types are strict (a string is no number, a float no integer, a boolean neither); each
    problem is named, in the frame's field order.
    """
    frame_format, checks, required = _frame_checks(frame_type)
    problems: list[str] = []
    checked: dict[str, Any] = {}
    for name, check in checks.items():
        if name not in values:
            if name in required:
                problems.append(f"{name}: Field required")
            continue
        value, problem = check(values[name])
        if problem is not None:
            problems.append(f"{name}: {problem}")
        checked[name] = value
    problems += [f"{name}: Extra inputs are not permitted" for name in values if name not in checks]
    if problems:
        raise DecodeError(f"invalid {frame_format}: {'; '.join(problems)}")
    return frame_type(**checked)


@functools.cache
def _frame_checks(
    frame_type: type[BeaconFrame],
) -> tuple[str, dict[str, _Check], frozenset[str]]:
    """The frame's format, each field's check in field order, and the fields without a
    default."""
    info = msgspec.inspect.type_info(frame_type)
    assert isinstance(info, msgspec.inspect.StructType)
    checks = {field.name: _check(field.type) for field in info.fields}
    required = frozenset(field.name for field in info.fields if field.required)
    (frame_format,) = (field.default for field in info.fields if field.name == "format")
    return str(frame_format), checks, required


def _check(kind: msgspec.inspect.Type) -> _Check:
    if isinstance(kind, msgspec.inspect.UnionType):
        (inner,) = [
            member for member in kind.types if not isinstance(member, msgspec.inspect.NoneType)
        ]
        inner_check = _check(inner)
        return lambda value: (None, None) if value is None else inner_check(value)
    if isinstance(kind, msgspec.inspect.LiteralType):
        wanted = " or ".join(repr(value) for value in kind.values)
        return lambda value: (value, None if value in kind.values else f"Input should be {wanted}")
    if isinstance(kind, msgspec.inspect.StrType):
        return partial(_check_str, re.compile(kind.pattern) if kind.pattern else None)
    if isinstance(kind, msgspec.inspect.IntType):
        return partial(_check_int, kind.ge, kind.le)
    if isinstance(kind, msgspec.inspect.FloatType):
        return _check_float
    raise TypeError(f"no check for a frame field of {kind}")


def _check_str(pattern: re.Pattern[str] | None, value: Any) -> tuple[Any, str | None]:
    if not isinstance(value, str):
        return value, "Input should be a valid string"
    if pattern is not None and pattern.fullmatch(value) is None:
        return value, f"String should match pattern '{pattern.pattern}'"
    return value, None


def _check_int(low: int | None, high: int | None, value: Any) -> tuple[Any, str | None]:
    if isinstance(value, bool) or not isinstance(value, int):
        return value, "Input should be a valid integer"
    if low is not None and value < low:
        return value, f"Input should be greater than or equal to {low}"
    if high is not None and value > high:
        return value, f"Input should be less than or equal to {high}"
    return value, None


def _check_float(value: Any) -> tuple[Any, str | None]:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value, "Input should be a valid number"
    try:
        return float(value), None
    except OverflowError:
        return value, "Input should be a valid number"


def uuid_text(raw: bytes) -> str:
    """16 big-endian bytes as a lowercase dashed UUID."""
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


# --- manufacturer data ----------------------------------------------------------------------

APPLE_COMPANY_ID = 0x004C
_IBEACON_PREFIX = b"\x02\x15"  # Apple's iBeacon type, then its fixed length of 21 bytes
_IBEACON = struct.Struct(">2x16sHHb")
_ALTBEACON_CODE = b"\xbe\xac"
_ALTBEACON = struct.Struct(">2x16sHHbB")
_ALTBEACON_WITHOUT_RESERVED = struct.Struct(">2x16sHHb")


def parse_manufacturer_data(company_id: int, data: bytes) -> BeaconFrame | None:
    """An iBeacon or AltBeacon frame from one manufacturer-specific data entry.

    ``data`` excludes the two company-id bytes, as bleak and bluetooth-data-tools give it.
    """
    if company_id == APPLE_COMPANY_ID and data.startswith(_IBEACON_PREFIX):
        # Apple data is a sequence of type-length-value records; bytes after the iBeacon
        # record belong to the next record, not to a malformed beacon.
        if len(data) < _IBEACON.size:
            raise DecodeError(f"iBeacon data is {len(data)} bytes, expected {_IBEACON.size}")
        uuid, major, minor, tx_power = _IBEACON.unpack_from(data)
        return IBeaconFrame(uuid=uuid_text(uuid), major=major, minor=minor, tx_power_1m=tx_power)
    if data.startswith(_ALTBEACON_CODE):
        if len(data) not in (_ALTBEACON_WITHOUT_RESERVED.size, _ALTBEACON.size):
            raise DecodeError(f"AltBeacon data is {len(data)} bytes, expected 23 or 24")
        id1, id2, id3, tx_power = _ALTBEACON_WITHOUT_RESERVED.unpack_from(data)
        reserved = data[_ALTBEACON_WITHOUT_RESERVED.size] if len(data) == _ALTBEACON.size else None
        return AltBeaconFrame(
            id1=uuid_text(id1),
            id2=id2,
            id3=id3,
            tx_power_1m=tx_power,
            manufacturer=company_id,
            reserved=reserved,
        )
    return None


# --- Eddystone service data -----------------------------------------------------------------

_BLUETOOTH_BASE_UUID_SUFFIX = "-0000-1000-8000-00805f9b34fb"
EDDYSTONE_SERVICE_UUID = "0000feaa" + _BLUETOOTH_BASE_UUID_SUFFIX

_EDDYSTONE_UID = struct.Struct(">xb10s6s")
_EDDYSTONE_UID_RESERVED_BYTES = 2  # spec: must be present and zero; many beacons omit them
_EDDYSTONE_URL_HEADER = struct.Struct(">xbB")
_EDDYSTONE_URL_MAX_ENCODED_BYTES = 17
_EDDYSTONE_TLM = struct.Struct(">xBHhII")
_EDDYSTONE_EID = struct.Struct(">xb8s")

_TLM_PLAIN_VERSION = 0x00
_TLM_ENCRYPTED_VERSION = 0x01
_TLM_BATTERY_UNSUPPORTED_MV = 0  # spec: a beacon without a battery reading sends zero
_TLM_TEMPERATURE_UNSUPPORTED = -0x8000  # spec: 0x8000 (-128 °C) means no sensor
_TLM_TEMPERATURE_STEPS_PER_DEGREE_C = 256  # signed 8.8 fixed point
# Eddystone TLM SEC_CNT counts tenths of a second; dividing (not multiplying by 0.1) gives
# the correctly rounded float, so 10948 ticks is 1094.8 s and not 1094.8000000000002.
_TLM_TICKS_PER_SECOND = 10

_URL_SCHEMES = ("http://www.", "https://www.", "http://", "https://")
_URL_EXPANSIONS = (
    *(".com/", ".org/", ".edu/", ".net/", ".info/", ".biz/", ".gov/"),
    *(".com", ".org", ".edu", ".net", ".info", ".biz", ".gov"),
)
_URL_FIRST_PRINTABLE = 0x21  # 0x0e-0x20 and 0x7f-0xff are reserved by the URL encoding
_URL_LAST_PRINTABLE = 0x7E


def _eddystone_uid(data: bytes) -> EddystoneUidFrame:
    if len(data) not in (_EDDYSTONE_UID.size, _EDDYSTONE_UID.size + _EDDYSTONE_UID_RESERVED_BYTES):
        raise DecodeError(f"Eddystone-UID frame is {len(data)} bytes, expected 18 or 20")
    tx_power, namespace, instance = _EDDYSTONE_UID.unpack_from(data)
    return EddystoneUidFrame(
        namespace=namespace.hex(), instance=instance.hex(), tx_power_0m=tx_power
    )


def _eddystone_url(data: bytes) -> EddystoneUrlFrame:
    encoded = data[_EDDYSTONE_URL_HEADER.size :]
    if len(data) < _EDDYSTONE_URL_HEADER.size or len(encoded) > _EDDYSTONE_URL_MAX_ENCODED_BYTES:
        raise DecodeError(f"Eddystone-URL frame is {len(data)} bytes, expected 3 to 20")
    tx_power, scheme = _EDDYSTONE_URL_HEADER.unpack_from(data)
    if scheme >= len(_URL_SCHEMES):
        raise DecodeError(f"Eddystone-URL scheme prefix 0x{scheme:02x} is reserved")
    parts = [_URL_SCHEMES[scheme]]
    for byte in encoded:
        if byte < len(_URL_EXPANSIONS):
            parts.append(_URL_EXPANSIONS[byte])
        elif _URL_FIRST_PRINTABLE <= byte <= _URL_LAST_PRINTABLE:
            parts.append(chr(byte))
        else:
            raise DecodeError(f"Eddystone-URL byte 0x{byte:02x} is reserved")
    return EddystoneUrlFrame(url="".join(parts), tx_power_0m=tx_power)


def _eddystone_tlm(data: bytes) -> EddystoneTlmFrame | None:
    version = data[1] if len(data) > 1 else None
    if version == _TLM_ENCRYPTED_VERSION:
        return None  # valid, but readable only with the beacon's key
    if version != _TLM_PLAIN_VERSION:
        raise DecodeError(f"Eddystone-TLM version {version} is unknown")
    if len(data) != _EDDYSTONE_TLM.size:
        raise DecodeError(f"Eddystone-TLM frame is {len(data)} bytes, expected 14")
    _, battery_mv, temperature, adv_count, ticks = _EDDYSTONE_TLM.unpack(data)
    return EddystoneTlmFrame(
        battery_mv=None if battery_mv == _TLM_BATTERY_UNSUPPORTED_MV else battery_mv,
        temperature_c=None
        if temperature == _TLM_TEMPERATURE_UNSUPPORTED
        else temperature / _TLM_TEMPERATURE_STEPS_PER_DEGREE_C,
        adv_count=adv_count,
        uptime_s=ticks / _TLM_TICKS_PER_SECOND,
    )


def _eddystone_eid(data: bytes) -> EddystoneEidFrame:
    if len(data) != _EDDYSTONE_EID.size:
        raise DecodeError(f"Eddystone-EID frame is {len(data)} bytes, expected 10")
    tx_power, eid = _EDDYSTONE_EID.unpack(data)
    return EddystoneEidFrame(eid=eid.hex(), tx_power_0m=tx_power)


_EDDYSTONE_FRAMES: Mapping[int, Callable[[bytes], BeaconFrame | None]] = {
    0x00: _eddystone_uid,
    0x10: _eddystone_url,
    0x20: _eddystone_tlm,
    0x30: _eddystone_eid,
}


def full_service_uuid(service_uuid: str) -> str:
    """A service UUID in any common spelling (``feaa``, ``0xFEAA``, 128-bit) as 128-bit text."""
    text = service_uuid.strip().lower().removeprefix("0x")
    if len(text) == 4:
        return f"0000{text}{_BLUETOOTH_BASE_UUID_SUFFIX}"
    if len(text) == 8:
        return f"{text}{_BLUETOOTH_BASE_UUID_SUFFIX}"
    return text


def parse_service_data(service_uuid: str, data: bytes) -> BeaconFrame | None:
    """An Eddystone frame from the service data of one service UUID."""
    if full_service_uuid(service_uuid) != EDDYSTONE_SERVICE_UUID:
        return None
    if not data:
        raise DecodeError("Eddystone service data is empty")
    decode = _EDDYSTONE_FRAMES.get(data[0])
    return decode(data) if decode is not None else None


# --- whole advertisements -------------------------------------------------------------------


def frame_from_advertisement(
    manufacturer_data: Mapping[int, bytes], service_data: Mapping[str, bytes]
) -> BeaconFrame | None:
    """The beacon frame of an advertisement, trying every manufacturer and service entry.

    A frame with an identity wins over one without (a beacon may pack TLM beside its UID).
    A malformed entry raises only when no other entry gives a frame.
    """
    decoders: list[Callable[[], BeaconFrame | None]] = [
        *(partial(parse_manufacturer_data, key, data) for key, data in manufacturer_data.items()),
        *(partial(parse_service_data, key, data) for key, data in service_data.items()),
    ]
    fallback: BeaconFrame | None = None
    error: DecodeError | None = None
    for decode in decoders:
        try:
            frame = decode()
        except DecodeError as exc:
            if error is None:
                error = exc
            continue
        if frame is not None and frame.identity() is not None:
            return frame
        if fallback is None:
            fallback = frame
    if fallback is None and error is not None:
        raise error
    return fallback


class Advertisement(msgspec.Struct, frozen=True, kw_only=True):
    """A parsed advertisement (its GAP AD structures) and the beacon frame it carries."""

    local_name: str | None = None
    service_uuids: tuple[str, ...] = ()
    service_data: Mapping[str, bytes] = {}
    manufacturer_data: Mapping[int, bytes] = {}
    tx_power: int | None = None
    frame: BeaconFrame | None = None


# GAP AD structure types (Bluetooth Assigned Numbers, "Common Data Types").
_AD_SHORT_NAME = 0x08
_AD_COMPLETE_NAME = 0x09
_AD_TX_POWER = 0x0A
_AD_SERVICE_DATA_16 = 0x16
_AD_SERVICE_DATA_32 = 0x20
_AD_SERVICE_DATA_128 = 0x21
_AD_MANUFACTURER_DATA = 0xFF
_AD_UUID_LIST_WIDTH = {0x02: 2, 0x03: 2, 0x04: 4, 0x05: 4, 0x06: 16, 0x07: 16}  # bytes each
_AD_SERVICE_DATA_UUID_WIDTH = {
    _AD_SERVICE_DATA_16: 2,
    _AD_SERVICE_DATA_32: 4,
    _AD_SERVICE_DATA_128: 16,
}
_UINT16_LE = struct.Struct("<H")
_INT8 = struct.Struct("b")


def _ad_uuid(raw: bytes) -> str:
    """A little-endian 16-, 32- or 128-bit UUID from an AD structure, as 128-bit text."""
    big_endian = raw[::-1]
    return uuid_text(big_endian) if len(raw) == 16 else full_service_uuid(big_endian.hex())


AdStructures = tuple[str | None, tuple[str, ...], dict[str, bytes], dict[int, bytes], int | None]


def read_ad_structures(adv: bytes) -> AdStructures:
    """An advertisement's AD structures: (local name, service UUIDs, service data,
    manufacturer data, tx power).

    Each structure is a length byte, a type byte and ``length - 1`` bytes of data. Structures
    that overrun the buffer or carry no data are skipped, so a truncated trailing structure
    (or a stray byte after the last one) is tolerated; zero bytes are padding. A complete
    local name wins over a shortened one; a later structure of the same key replaces an
    earlier one. (The layout and these choices are those of bluetooth-data-tools, which the
    tests compare this with: its package costs some 12 MiB, for its cryptography, at import.)
    """
    local_name: str | None = None
    service_uuids: list[str] = []
    service_data: dict[str, bytes] = {}
    manufacturer_data: dict[int, bytes] = {}
    tx_power: int | None = None
    offset = 0
    while offset + 2 <= len(adv):
        length = adv[offset]
        if length == 0:
            offset += 1
            continue
        kind = adv[offset + 1]
        data = adv[offset + 2 : offset + 1 + length]
        overruns = offset + 1 + length > len(adv)
        offset += 1 + length
        if kind == 0 or overruns or not data:
            continue
        if kind == _AD_COMPLETE_NAME or (kind == _AD_SHORT_NAME and local_name is None):
            local_name = data.decode("utf-8", "replace")
        elif kind == _AD_MANUFACTURER_DATA and len(data) >= 2:
            manufacturer_data[_UINT16_LE.unpack_from(data)[0]] = data[2:]
        elif (width := _AD_UUID_LIST_WIDTH.get(kind)) is not None:
            whole = len(data) - len(data) % width
            service_uuids += [_ad_uuid(data[i : i + width]) for i in range(0, whole, width)]
        elif (width := _AD_SERVICE_DATA_UUID_WIDTH.get(kind)) is not None and len(data) >= width:
            service_data[_ad_uuid(data[:width])] = data[width:]
        elif kind == _AD_TX_POWER and len(data) == 1:
            tx_power = _INT8.unpack(data)[0]
    return local_name, tuple(service_uuids), service_data, manufacturer_data, tx_power


def parse_advertisement(adv: bytes) -> Advertisement:
    """An advertisement from its raw AD structures (advertising data plus scan response),
    and the beacon frame it carries."""
    local_name, service_uuids, service_data, manufacturer_data, tx_power = read_ad_structures(
        bytes(adv)
    )
    return Advertisement(
        local_name=local_name,
        service_uuids=service_uuids,
        service_data=service_data,
        manufacturer_data=manufacturer_data,
        tx_power=tx_power,
        frame=frame_from_advertisement(manufacturer_data, service_data),
    )


# --- addresses written into text ------------------------------------------------------

_UUID_TEXT = re.compile(
    f"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}", re.IGNORECASE
)
_MAC_TEXT = re.compile(
    f"(?<!{_HEX})(?:{_HEX}{{12}}|(?:{_HEX}{{2}}[:-]){{5}}{_HEX}{{2}})(?!{_HEX})", re.IGNORECASE
)


def find_mac(text: str) -> str | None:
    """The first address written into ``text`` (an id, a name), normalised; else None.

    Scanners put addresses into ids (ESPresense ``tile:<mac>``) and names (``esp-<mac>``).
    A UUID's last group (``00805f9b34fb``) has the same shape, so UUIDs are skipped.
    """
    match = _MAC_TEXT.search(_UUID_TEXT.sub("-", text))
    return normalize_mac(match.group()) if match is not None else None

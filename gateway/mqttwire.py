"""MQTT 5 and 3.1.1 on the wire: the packets the gateway sends, and a reader for what the
broker sends back. Bytes in, values out; no socket (gateway/mqtt.py and the MQTT bridge sink,
gateway/sinks/mqtt_bridge.py, own their connections).

Only what a subscriber that acknowledges after commit and a QoS 1 publisher need: CONNECT
(persistent session or clean start, will, credentials, receive maximum), SUBSCRIBE, PUBLISH at
QoS 0 and 1 (with MQTT 5 user properties, correlation data, content type and payload format),
PUBACK, PINGREQ, DISCONNECT going out; CONNACK (with the broker's receive maximum, maximum QoS
and maximum packet size), SUBACK, PUBLISH, PUBACK (with its reason code), PINGRESP and
DISCONNECT coming in. No topic aliases are asked for, so none arrive. :class:`Reader` takes
the stream in chunks as large as the socket gives and yields whole packets, so a read of
64 KiB holds hundreds of messages (or thousands of PUBACKs) and costs one call.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "CONNACK",
    "CONNACK_REFUSALS",
    "CREDENTIALS_REFUSED",
    "DISCONNECT",
    "PINGRESP",
    "PUBACK",
    "PUBLISH",
    "SUBACK",
    "Connack",
    "ProtocolError",
    "Publish",
    "Reader",
    "connack_refusal",
    "connect_packet",
    "disconnect_packet",
    "pingreq_packet",
    "puback_packet",
    "publish_packet",
    "subscribe_packet",
]

# Packet types (the fixed header's high nibble).
CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 12, 13, 14

_V5, _V311 = 5, 4  # the CONNECT protocol level
_MAX_REMAINING_LENGTH = 268_435_455  # four bytes of variable-length integer
# MQTT 5 property identifiers used here.
_PAYLOAD_FORMAT = 0x01
_CONTENT_TYPE = 0x03
_CORRELATION_DATA = 0x09
_SESSION_EXPIRY = 0x11
_RECEIVE_MAXIMUM = 0x21
_MAXIMUM_QOS = 0x24
_USER_PROPERTY = 0x26
_MAXIMUM_PACKET_SIZE = 0x27
_REASON_STRING = 0x1F
# A PUBLISH's properties, each as its identifier's byte (made once: one PUBLISH per event).
_UTF8_PAYLOAD = bytes((_PAYLOAD_FORMAT, 1))  # the payload format indicator: UTF-8 text
_CONTENT_TYPE_ID = bytes((_CONTENT_TYPE,))
_CORRELATION_DATA_ID = bytes((_CORRELATION_DATA,))
_USER_PROPERTY_ID = bytes((_USER_PROPERTY,))

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_PUBACK = struct.Struct(">BBH")  # fixed header, remaining length 2, packet id


# A CONNACK's refusal in words: MQTT 5's reason codes and MQTT 3.1.1's return codes (1-5).
CONNACK_REFUSALS = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
    0x80: "unspecified error",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",  # Mosquitto's answer to a wrong password in MQTT 5
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x8C: "bad authentication method",
    0x97: "quota exceeded",
}
CREDENTIALS_REFUSED = frozenset({4, 5, 0x86, 0x87})  # what the user name and password fix


def connack_refusal(reason: int) -> str:
    return CONNACK_REFUSALS.get(reason, f"reason 0x{reason:02x}")


class ProtocolError(ValueError):
    """The broker sent something that is not MQTT as we speak it: the connection must end."""


class Publish(NamedTuple):
    """A PUBLISH from the broker (a tuple: one is made per message)."""

    topic: str
    payload: bytes
    qos: int
    packet_id: int  # 0 at QoS 0
    dup: bool
    retain: bool


@dataclass(frozen=True, slots=True)
class Connack:
    session_present: bool
    reason: int  # 0: accepted; 0x80 and above: refused
    receive_maximum: int  # how many QoS 1 publishes of ours the broker takes unacknowledged
    reason_string: str | None
    maximum_qos: int = 2  # below 1, the broker takes no QoS 1 publish
    maximum_packet_size: int | None = None  # bytes; None: only MQTT's own limit


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | 0x80 if value else byte)
        if not value:
            return bytes(out)


def _text(value: str) -> bytes:
    raw = value.encode("utf-8")
    return _U16.pack(len(raw)) + raw


def _binary(value: bytes) -> bytes:
    return _U16.pack(len(value)) + value


def _packet(first_byte: int, *body: bytes) -> bytes:
    """The fixed header and the body, given in parts (copied once, by the join)."""
    length = sum(map(len, body))
    if length > _MAX_REMAINING_LENGTH:
        raise ValueError(f"a packet of {length} bytes is more than MQTT carries")
    return b"".join((bytes((first_byte,)), _varint(length), *body))


def _properties(*encoded: bytes) -> bytes:
    body = b"".join(encoded)
    return _varint(len(body)) + body


def connect_packet(
    client_id: str,
    keepalive_s: int,
    v5: bool,
    session_expiry_s: int,
    receive_maximum: int,
    will: tuple[str, bytes] | None,
    username: str | None = None,
    password: str | None = None,
    clean_start: bool = False,
) -> bytes:
    """CONNECT, for a persistent session unless ``clean_start``; the will at QoS 1, retained."""
    flags = 0x02 if clean_start else 0x00  # off: the broker keeps our queue while we are away
    if will is not None:
        flags |= 0x04 | 0x08 | 0x20  # will, will QoS 1, will retain
    if password is not None:
        flags |= 0x40
    if username is not None:
        flags |= 0x80
    body = [_text("MQTT"), bytes((_V5 if v5 else _V311, flags)), _U16.pack(keepalive_s)]
    if v5:
        body.append(
            _properties(
                bytes((_SESSION_EXPIRY,)) + _U32.pack(session_expiry_s),
                bytes((_RECEIVE_MAXIMUM,)) + _U16.pack(receive_maximum),
            )
        )
    body.append(_text(client_id))
    if will is not None:
        if v5:
            body.append(_properties())
        body += [_text(will[0]), _binary(will[1])]
    if username is not None:
        body.append(_text(username))
    if password is not None:
        body.append(_binary(password.encode("utf-8")))
    return _packet(CONNECT << 4, b"".join(body))


def subscribe_packet(packet_id: int, filters: Sequence[tuple[str, int]], v5: bool) -> bytes:
    body = [_U16.pack(packet_id)]
    if v5:
        body.append(_properties())
    body += [_text(topic) + bytes((qos,)) for topic, qos in filters]
    return _packet(SUBSCRIBE << 4 | 0x02, b"".join(body))


def publish_packet(
    topic: str,
    payload: bytes,
    qos: int,
    retain: bool,
    packet_id: int,
    v5: bool,
    user_properties: Sequence[tuple[str, str]] = (),
    correlation_data: bytes | None = None,
    content_type: str | None = None,
    utf8_payload: bool = False,
) -> bytes:
    """PUBLISH; the properties (MQTT 5 only) say that the payload is UTF-8 text of
    ``content_type``, and carry ``correlation_data`` and the user properties.

    Built by concatenation and copied once: the MQTT bridge sink makes one per event it drains.
    """
    header = _text(topic)
    if qos:
        header += _U16.pack(packet_id)
    if v5:
        properties = _UTF8_PAYLOAD if utf8_payload else b""
        if content_type is not None:
            properties += _CONTENT_TYPE_ID + _text(content_type)
        if correlation_data is not None:
            properties += _CORRELATION_DATA_ID + _binary(correlation_data)
        for key, value in user_properties:
            properties += _USER_PROPERTY_ID + _text(key) + _text(value)
        header += _varint(len(properties)) + properties
    return _packet(PUBLISH << 4 | qos << 1 | int(retain), header, payload)


def puback_packet(packet_id: int) -> bytes:
    """PUBACK, success: the same two-byte form in MQTT 5 and 3.1.1."""
    return _PUBACK.pack(PUBACK << 4, 2, packet_id)


def pingreq_packet() -> bytes:
    return bytes((PINGREQ << 4, 0))


def disconnect_packet() -> bytes:
    return bytes((DISCONNECT << 4, 0))


class Reader:
    """Whole packets out of a byte stream fed in chunks of any size."""

    __slots__ = ("_cut", "_needed", "_v5")

    def __init__(self, v5: bool) -> None:
        self._cut = bytearray()  # the start of a packet the last chunk cut off
        self._needed = 0  # that packet's whole length, once its header has come
        self._v5 = v5

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        """(packet type, flags, body) of every packet the buffer now holds whole; the rest
        waits for the next chunk. ProtocolError on a length MQTT cannot have."""
        cut = self._cut
        if cut:
            cut += data
            if len(cut) < self._needed:  # a long packet still arriving: nothing to copy yet
                return []
            data = bytes(cut)
            cut.clear()
        # Bodies are sliced from bytes, so each is one copy (and one object): a message each.
        packets: list[tuple[int, int, bytes]] = []
        position, end, needed = 0, len(data), 0
        while end - position >= 2:
            first, length = data[position], data[position + 1]
            index = position + 2
            if length >= 0x80:  # a message of 128 bytes or more: two bytes of length, mostly
                if index < end and data[index] < 0x80:
                    length = (length & 0x7F) | data[index] << 7
                    index += 1
                else:
                    length, index = _remaining_length(data, position + 1, end)
            if length < 0 or index + length > end:
                needed = index + length - position if length >= 0 else 0
                break
            packets.append((first >> 4, first & 0x0F, data[index : index + length]))
            position = index + length
        if position < end:
            cut += data[position:]
            self._needed = needed
        return packets

    def publish(self, flags: int, body: bytes) -> Publish:
        """The PUBLISH whose fixed-header flags and body these are."""
        qos = (flags >> 1) & 0x03
        if qos > 1:
            raise ProtocolError(f"a PUBLISH at QoS {qos}, though we subscribed at 1 at most")
        try:
            (topic_length,) = _U16.unpack_from(body, 0)
            position = 2 + topic_length
            topic = body[2:position].decode("utf-8")
            packet_id = 0
            if qos:
                (packet_id,) = _U16.unpack_from(body, position)
                position += 2
            if self._v5:  # no property of an incoming PUBLISH matters to us: they are skipped
                length = body[position]
                if length < 0x80:  # the common case, without a call: under 128 bytes of them
                    position += 1 + length
                else:
                    length, position = _read_varint(body, position)
                    position += length
        except (struct.error, UnicodeDecodeError, IndexError) as exc:
            raise ProtocolError(f"a malformed PUBLISH: {exc}") from None
        if position > len(body):
            raise ProtocolError("a PUBLISH shorter than its own header")
        return tuple.__new__(  # one per message: see gateway/batch.py, Inbound.delivered
            Publish,
            (topic, body[position:], qos, packet_id, bool(flags & 0x08), bool(flags & 0x01)),
        )

    def connack(self, body: bytes) -> Connack:
        if len(body) < 2:
            raise ProtocolError("a CONNACK shorter than two bytes")
        receive_maximum, reason_string = 65_535, None
        maximum_qos, maximum_packet_size = 2, None
        if self._v5 and len(body) > 2:
            length, position = _read_varint(body, 2)
            for identifier, value in _read_properties(body[position : position + length]):
                if identifier == _RECEIVE_MAXIMUM:
                    (receive_maximum,) = _U16.unpack(value)
                elif identifier == _REASON_STRING:
                    reason_string = value.decode("utf-8", "replace")
                elif identifier == _MAXIMUM_QOS:
                    maximum_qos = value[0]
                elif identifier == _MAXIMUM_PACKET_SIZE:
                    (maximum_packet_size,) = _U32.unpack(value)
        return Connack(
            bool(body[0] & 0x01),
            body[1],
            receive_maximum,
            reason_string,
            maximum_qos,
            maximum_packet_size,
        )

    @staticmethod
    def packet_id(body: bytes) -> int:
        """The packet id a PUBACK or SUBACK answers."""
        if len(body) < 2:
            raise ProtocolError("an acknowledgement without a packet id")
        return int(_U16.unpack_from(body, 0)[0])

    def puback(self, body: bytes) -> tuple[int, int]:
        """The packet id a PUBACK answers and its reason code (below 0x80: taken). MQTT 5
        leaves the reason out when it is success; 3.1.1 has none."""
        return self.packet_id(body), body[2] if self._v5 and len(body) > 2 else 0

    def suback_reasons(self, body: bytes) -> bytes:
        """One reason code per filter, in the order subscribed (below 0x80: granted)."""
        position = 2
        if self._v5:
            length, position = _read_varint(body, position)
            position += length
        return body[position:]

    def disconnect_reason(self, body: bytes) -> int:
        return body[0] if self._v5 and body else 0


def _remaining_length(buffer: bytes, position: int, end: int) -> tuple[int, int]:
    """A fixed header's remaining length from ``position``; (-1, end) if it is cut off."""
    length, multiplier = 0, 1
    while position < end:
        byte = buffer[position]
        position += 1
        length += (byte & 0x7F) * multiplier
        if byte < 0x80:
            return length, position
        multiplier <<= 7
        if multiplier > 1 << 21:
            raise ProtocolError("a packet length longer than four bytes")
    return -1, end


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if position >= len(data) or shift > 21:
            raise ProtocolError("a malformed variable-length integer")
        byte = data[position]
        value |= (byte & 0x7F) << shift
        position += 1
        if not byte & 0x80:
            return value, position
        shift += 7


# The size of each fixed-size property value we may meet in a CONNACK (MQTT 5, 2.2.2.2).
_FIXED_SIZES = {
    0x01: 1, 0x02: 4, 0x11: 4, 0x13: 2, 0x17: 1, 0x19: 1, 0x21: 2, 0x22: 2,
    0x23: 2, 0x24: 1, 0x25: 1, 0x27: 4, 0x28: 1, 0x29: 1, 0x2A: 1,
}  # fmt: skip
_LENGTH_PREFIXED = frozenset({0x03, 0x08, 0x09, 0x12, 0x15, 0x16, 0x18, 0x1A, 0x1C, 0x1F})


def _read_properties(data: bytes) -> Iterator[tuple[int, bytes]]:
    position = 0
    while position < len(data):
        identifier = data[position]
        position += 1
        if identifier in _FIXED_SIZES:
            size = _FIXED_SIZES[identifier]
        elif identifier in _LENGTH_PREFIXED:
            size = 2 + int(_U16.unpack_from(data, position)[0])
            yield identifier, data[position + 2 : position + size]
            position += size
            continue
        elif identifier == _USER_PROPERTY:
            key = 2 + int(_U16.unpack_from(data, position)[0])
            size = key + 2 + int(_U16.unpack_from(data, position + key)[0])
        elif identifier == 0x0B:  # subscription identifier: a variable-length integer
            _, end = _read_varint(data, position)
            size = end - position
        else:
            raise ProtocolError(f"an unknown property 0x{identifier:02x}")
        if position + size > len(data):
            raise ProtocolError("a property longer than its packet")
        yield identifier, data[position : position + size]
        position += size

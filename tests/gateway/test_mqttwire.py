"""The MQTT wire format: packets cut out of any chunking, lengths at every varint boundary,
MQTT 5 properties skipped or read, and garbage refused with ProtocolError alone."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.mqttwire import (
    CONNACK,
    PUBACK,
    PUBLISH,
    SUBACK,
    ProtocolError,
    Reader,
    connect_packet,
    puback_packet,
    publish_packet,
    subscribe_packet,
)


def chunked(data: bytes, seed: int) -> list[bytes]:
    chance = random.Random(seed)
    chunks, position = [], 0
    while position < len(data):
        size = chance.choice([1, 2, 3, 7, 100, 4096, 65536])
        chunks.append(data[position : position + size])
        position += size
    return chunks


@pytest.mark.parametrize("v5", [True, False])
@pytest.mark.parametrize("size", [0, 1, 114, 115, 116, 16_370, 16_383, 16_384, 2_100_000])
def test_publishes_of_every_length_survive_any_chunking(v5: bool, size: int) -> None:
    payload = bytes(random.Random(size).getrandbits(8) for _ in range(min(size, 5000))) * (
        size // 5000 + 1
    )
    payload = payload[:size]
    stream = b"".join(
        publish_packet(f"lantern/s1/scanner/till-{n}", payload, n % 2, n == 2, n + 1, v5,
                       [("event-id", f"e{n}")] if v5 else (), b"corr" if v5 else None)
        for n in range(3)
    )  # fmt: skip
    for seed in range(3):
        reader = Reader(v5)
        packets = [packet for chunk in chunked(stream, seed) for packet in reader.feed(chunk)]
        messages = [reader.publish(flags, body) for kind, flags, body in packets if kind == PUBLISH]
        assert [m.topic for m in messages] == [f"lantern/s1/scanner/till-{n}" for n in range(3)]
        assert all(m.payload == payload for m in messages)
        assert [(m.qos, m.packet_id, m.retain) for m in messages] == [
            (0, 0, False),
            (1, 2, False),
            (0, 0, True),
        ]


def test_a_dup_flag_and_an_mqtt5_connack_with_properties() -> None:
    reader = Reader(v5=True)
    republished = bytearray(publish_packet("t/1", b"x", 1, False, 9, v5=True))
    republished[0] |= 0x08  # DUP, as a broker sets it on a redelivery
    # CONNACK: session present, success, properties: receive maximum 20, reason string "hi".
    connack = bytes([CONNACK << 4, 11, 0x01, 0x00, 8, 0x21, 0, 20, 0x1F, 0, 2]) + b"hi"
    suback = bytes([SUBACK << 4, 5, 0, 1, 0, 0x01, 0x87])  # granted QoS 1, then refused
    (publish, ack, sub) = reader.feed(bytes(republished) + connack + suback)
    message = reader.publish(publish[1], publish[2])
    assert (message.dup, message.packet_id) == (True, 9)
    answer = reader.connack(ack[2])
    assert (answer.session_present, answer.reason, answer.receive_maximum) == (True, 0, 20)
    assert answer.reason_string == "hi"
    assert reader.suback_reasons(sub[2]) == bytes([0x01, 0x87])


def test_a_batch_of_pubacks_is_one_write_of_four_bytes_each() -> None:
    acks = b"".join(puback_packet(mid) for mid in (1, 258, 65535))
    assert acks == bytes([0x40, 2, 0, 1, 0x40, 2, 1, 2, 0x40, 2, 0xFF, 0xFF])


def test_connect_and_subscribe_name_what_the_session_needs() -> None:
    packet = connect_packet(
        "lantern-s1", 30, True, 86_400, 2_000, ("s/status", b"offline"), "u", "p"
    )
    assert packet[0] == 0x10
    assert b"MQTT\x05" in packet and b"lantern-s1" in packet and b"offline" in packet
    flags = packet[packet.index(b"MQTT\x05") + 5]
    assert flags == 0x80 | 0x40 | 0x20 | 0x08 | 0x04  # user, password, will retained at QoS 1
    assert subscribe_packet(1, [("a/+", 1)], v5=False) == bytes([0x82, 8, 0, 1, 0, 3]) + b"a/+\x01"


def test_a_clean_start_connect_for_a_publisher_that_resends_by_itself() -> None:
    packet = connect_packet("bridge-s1", 60, True, 0, 65_535, None, clean_start=True)
    flags = packet[packet.index(b"MQTT\x05") + 5]
    assert flags == 0x02  # clean start, and no will, user or password
    persistent = connect_packet("bridge-s1", 60, True, 0, 65_535, None)
    assert persistent[persistent.index(b"MQTT\x05") + 5] == 0x00


def test_a_publish_carries_its_content_type_format_correlation_and_user_properties() -> None:
    packet = publish_packet(
        "lantern/s1/lantern.scan.read", b'{"id":"e-1"}', 1, False, 7, v5=True,
        user_properties=[("id", "e-1")], correlation_data=b"e-1",
        content_type="application/cloudevents+json", utf8_payload=True,
    )  # fmt: skip
    ((kind, flags, body),) = Reader(v5=True).feed(packet)
    message = Reader(v5=True).publish(flags, body)
    assert kind == PUBLISH
    assert (message.topic, message.payload) == ("lantern/s1/lantern.scan.read", b'{"id":"e-1"}')
    # The properties as paho's own parser reads them: another implementation agrees.
    start = 2 + len("lantern/s1/lantern.scan.read") + 2
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.unpack(body[start:])  # type: ignore[no-untyped-call]
    assert properties.PayloadFormatIndicator == 1
    assert properties.ContentType == "application/cloudevents+json"
    assert properties.CorrelationData == b"e-1"
    assert properties.UserProperty == [("id", "e-1")]


def test_a_connack_with_the_brokers_limits_and_pubacks_with_and_without_reasons() -> None:
    reader = Reader(v5=True)
    # CONNACK: success; properties: maximum QoS 0, maximum packet size 1,000 bytes.
    limits = bytes([CONNACK << 4, 10, 0x00, 0x00, 7, 0x24, 0, 0x27, 0, 0, 0x03, 0xE8])
    refused = bytes([CONNACK << 4, 3, 0x00, 0x87, 0])  # not authorized, no properties
    (connack, no) = reader.feed(limits + refused)
    answer = reader.connack(connack[2])
    assert (answer.maximum_qos, answer.maximum_packet_size) == (0, 1000)
    assert answer.receive_maximum == 65_535  # none given: MQTT's default
    assert reader.connack(no[2]).reason == 0x87
    assert Reader(v5=True).connack(bytes([0, 0])).maximum_packet_size is None
    # PUBACKs: success in its short form, then "no matching subscribers", then "quota exceeded"
    # with a reason string.
    acks = puback_packet(1) + bytes([PUBACK << 4, 3, 0, 2, 0x10])
    acks += bytes([PUBACK << 4, 8, 0, 3, 0x97, 4, 0x1F, 0, 1]) + b"q"
    answers = [reader.puback(body) for _, _, body in reader.feed(acks)]
    assert answers == [(1, 0), (2, 0x10), (3, 0x97)]
    assert Reader(v5=False).puback(bytes([0, 9])) == (9, 0)


def test_a_length_of_five_bytes_is_refused() -> None:
    with pytest.raises(ProtocolError):
        Reader(v5=True).feed(bytes([0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]))


@given(data=st.binary(max_size=300), v5=st.booleans())
def test_fuzz_garbage_raises_protocol_errors_only(data: bytes, v5: bool) -> None:
    reader = Reader(v5)
    try:
        for kind, flags, body in reader.feed(data):
            if kind == PUBLISH:
                reader.publish(flags, body)
            elif kind == CONNACK:
                reader.connack(body)
            elif kind == SUBACK:
                reader.suback_reasons(body)
            elif kind == PUBACK:
                reader.puback(body)
    except ProtocolError:
        pass

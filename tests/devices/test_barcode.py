"""Barcode reads against the GS1 fixtures as they are, real-world codes, and a fuzz test."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices import barcode
from devices.model import Message, ScanRead
from lantern.errors import DecodeError
from tests.fixture_files import load_json

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
DIGITAL_LINK = "https://id.gs1.org/01/09506000134352/10/ABC123"
DIGITAL_LINK_AI = {"01": "09506000134352", "10": "ABC123"}
LOT_AND_SERIAL_AI = {"01": "09501101531000", "10": "LOT12", "21": "SN1"}


def message(payload: bytes, topic: str = "lantern/s1/scanner/till-1") -> Message:
    return Message(topic, payload, NOW, {"device": "till-1"})


def read(payload: str | bytes) -> ScanRead:
    raw = payload.encode() if isinstance(payload, str) else payload
    (scan,) = barcode.parse(message(raw)) or []
    assert isinstance(scan, ScanRead)
    return scan


@pytest.mark.parametrize("fixture", load_json("gs1_scans.json"), ids=lambda f: f["scan"])
def test_gs1_fixtures(fixture: dict[str, Any]) -> None:
    expect = fixture["expect"]
    if "error" in expect:
        with pytest.raises(DecodeError) as caught:
            read(fixture["scan"])
        assert caught.value.reason == expect["error"]
        return
    scan = read(fixture["scan"])
    assert scan.code == fixture["scan"]
    assert scan.device_id == "till-1"
    for key in ("symbology", "gtin", "ai"):
        if key in expect:
            assert getattr(scan, key) == expect[key]
    if expect.get("check_digit_valid"):
        assert scan.gtin is not None


@pytest.mark.parametrize(
    ("code", "symbology", "gtin", "ai"),
    [
        # EAN/UPC and ITF-14, bare and with identifiers.
        ("96385074", "EAN-8", "00000096385074", {}),
        ("]E496385074", "EAN-8", "00000096385074", {}),
        ("036000291452", "UPC-A", "00036000291452", {}),
        ("]E0036000291452", "UPC-A", "00036000291452", {}),
        ("]E00425261", "UPC-E", "00042100005264", {}),
        ("]E004252614", "UPC-E", "00042100005264", {}),
        ("]E3590123412345712", "EAN-13 with add-on", "05901234123457", {}),
        ("]I015400141288763", "ITF-14", "15400141288763", {}),
        # GS1 Digital Link: bare, in a GS1 QR, in a plain QR, in capitals.
        (DIGITAL_LINK, None, "09506000134352", DIGITAL_LINK_AI),
        (f"]Q3{DIGITAL_LINK}", "GS1 QR", "09506000134352", DIGITAL_LINK_AI),
        (f"]Q1{DIGITAL_LINK}", "QR", "09506000134352", DIGITAL_LINK_AI),
        (DIGITAL_LINK.upper(), None, "09506000134352", DIGITAL_LINK_AI),
        (
            "https://example.com/01/09506000134352/21/S-9?17=270131",
            None,
            "09506000134352",
            {"01": "09506000134352", "21": "S-9", "17": "2027-01-31"},
        ),
        ("https://id.gs1.org/00/106141412345678908", None, None, {"00": "106141412345678908"}),
        # Element strings: AI 10 then 21 split by GS, with and without identifiers.
        ("010950110153100010LOT12\x1d21SN1", None, "09501101531000", LOT_AND_SERIAL_AI),
        ("]C1010950110153100010LOT12\x1d21SN1", "GS1-128", "09501101531000", LOT_AND_SERIAL_AI),
        (
            "]d2010950110153100010LOT12\x1d21SN1",
            "GS1 DataMatrix",
            "09501101531000",
            LOT_AND_SERIAL_AI,
        ),
        ("]Q3010950110153100010LOT12\x1d21SN1", "GS1 QR", "09501101531000", LOT_AND_SERIAL_AI),
        (
            "]C1\x1d010950110153100010LOT12\x1d21SN1\x1d",
            "GS1-128",
            "09501101531000",
            LOT_AND_SERIAL_AI,
        ),
        (
            "]d2010950110153100017270101",
            "GS1 DataMatrix",
            "09501101531000",
            {"01": "09501101531000", "17": "2027-01-01"},
        ),
        (
            "]d2017001234567890417270100",  # day 00: the last day of the month (GS1 7.12)
            "GS1 DataMatrix",
            "70012345678904",
            {"01": "70012345678904", "17": "2027-01-31"},
        ),
        (
            "]C1700323052612000109501101531000",
            "GS1-128",
            "09501101531000",
            {"7003": "2023-05-26T12:00:00", "01": "09501101531000"},
        ),
        # An element string whose FNC1s the scanner dropped: the last AI is variable length.
        (
            "010950110153100017270101",
            None,
            "09501101531000",
            {"01": "09501101531000", "17": "2027-01-01"},
        ),
        # Not GS1: kept as the code, no GTIN.
        ("]C0ABC-123", "Code 128", None, {}),
        ("]C012345670", "Code 128", None, {}),  # digits in plain Code 128 are no GTIN
        ("]A0123456", "Code 39", None, {}),
        ("LOYALTY-4711", None, None, {}),
        ("0109501101531000ABC", None, None, {}),  # starts like an element string, is not one
        ("]Q1https://shop.example/promo?id=7", "QR", None, {}),
        ("]E112", "EAN-2", None, {}),
    ],
)
def test_real_world_codes(
    code: str, symbology: str | None, gtin: str | None, ai: dict[str, str]
) -> None:
    scan = read(code)
    assert (scan.code, scan.symbology, scan.gtin, dict(scan.ai)) == (code, symbology, gtin, ai)


def test_the_scanner_terminator_is_not_part_of_the_code() -> None:
    scan = read("]E00123601057072\r\n")
    assert (scan.code, scan.gtin) == ("]E00123601057072", "00123601057072")


def test_json_payload_carries_time_and_symbology() -> None:
    scan = read('{"code": "96385074", "symbology": "EAN-8", "time": "2026-11-23T07:59:58Z"}')
    assert (scan.code, scan.symbology, scan.gtin) == ("96385074", "EAN-8", "00000096385074")
    assert scan.observed_at == datetime(2026, 11, 23, 7, 59, 58, tzinfo=UTC)


def test_json_payload_without_symbology_names_it_from_the_identifier() -> None:
    scan = read('{"code": "]C1010950110153100010LOT12\\u001d21SN1"}')
    assert (scan.symbology, scan.gtin, dict(scan.ai)) == (
        "GS1-128",
        "09501101531000",
        LOT_AND_SERIAL_AI,
    )
    assert scan.observed_at is None


def test_device_falls_back_to_the_last_topic_level() -> None:
    (scan,) = barcode.parse(Message("lantern/s1/scanner/till-9", b"96385074", NOW)) or []
    assert scan.device_id == "till-9"


def test_event_data_shape() -> None:
    assert read("]C1010590123412345715210526").event_data() == {
        "code": "]C1010590123412345715210526",
        "symbology": "GS1-128",
        "gtin": "05901234123457",
        "ai": {"01": "05901234123457", "15": "2021-05-26"},
    }
    assert read("LOYALTY-4711").event_data() == {"code": "LOYALTY-4711", "ai": {}}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "empty barcode read"),
        (b"\r\n", "empty barcode read"),
        (b"]C1", "empty barcode read"),
        (b"\xff\xfe", "payload is not UTF-8 (byte 0)"),
        (b"]", "bad symbology identifier: ']'"),
        (b"96385075", "check digit: expected 4, got 5"),
        (b"]E00123601057073", "check digit: expected 2, got 3"),
        (b"]I015400141288764", "check digit: expected 3, got 4"),
        (b"]E004252615", "UPC-E check digit: expected 4, got 5"),
        (b"]E012345", "EAN/UPC read of 5 digits is no GTIN"),
        (b"]E0ABCDEFGH", "EAN/UPC read is not all digits: 'ABCDEFGH'"),
        (b"]C1010950110153100121SN1", "AI (01) check digit: expected 0, got 1"),
        (b"https://id.gs1.org/01/09506000134351", "AI (01) check digit: expected 2, got 1"),
        (b'{"code": 5}', "scan JSON has no code (a non-empty string)"),
        (b'{"code": "x", "symbology": 3}', "symbology must be a string, got a number"),
        (
            b'{"code": "x", "time": "2026-11-23T08:00:00"}',
            "time has no time zone: '2026-11-23T08:00:00'",
        ),
        (b'{"code": "x", "time": "yesterday"}', "time is not an RFC 3339 time: 'yesterday'"),
    ],
)
def test_broken_reads_say_why(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        read(payload)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    "payload", [b"]C1ABC", b"]d2019501101531000", b"]Q3https://id.gs1.org/01/x", b'{"code": "x"']
)
def test_broken_gs1_data_or_json_is_a_decode_error(payload: bytes) -> None:
    with pytest.raises(DecodeError):
        read(payload)


@given(
    st.one_of(
        st.binary(max_size=80),
        st.text(max_size=60).map(str.encode),
        st.from_regex(r"\A(\][A-Za-z][0-9])?[0-9\x1d]{0,40}\Z").map(str.encode),
        st.from_regex(r"\A\]E[0-4][0-9]{0,20}\Z").map(str.encode),
        st.from_regex(
            r"\A(\][QJ][013])?(?i:https?)://id\.gs1\.org(/(faux|0[01]|x)){0,2}/0[012]/[0-9]{0,20}"
            r"(/[0-9]{2,4}/[A-Z0-9]{0,8})?(\?[0-9]{2,3}=[0-9]{0,8}(&[0-9a-z]{0,3}=?[0-9]{0,4})*)?"
            r"(#[a-z]{0,3})?\Z"
        ).map(str.encode),
        st.builds(
            lambda code, time: f'{{"code": {code!r}, "time": {time!r}}}'.replace("'", '"').encode(),
            st.from_regex(r"\A[0-9A-Z\]]{0,16}\Z"),
            st.text(alphabet="0123456789-:TZ+", max_size=26),
        ),
    )
)
def test_fuzz_only_decode_errors_escape(payload: bytes) -> None:
    with contextlib.suppress(DecodeError):
        barcode.parse(message(payload))


# --- GS1 Digital Link and DotCode against GS1's own syntax engine ---------------------------

DIGITAL_LINKS = load_json("gs1_digital_link.json")
GS = "\x1d"


@pytest.mark.parametrize("case", DIGITAL_LINKS, ids=[case["uri"] for case in DIGITAL_LINKS])
def test_digital_link_agrees_with_the_gs1_syntax_engine(case: dict[str, Any]) -> None:
    """The engine's expected element string (``^`` is FNC1), read as GS1 DataMatrix, carries
    the AIs the link does; a link the engine refuses is a decode error."""
    if case["element_string"] is None:
        with pytest.raises(DecodeError):
            read(case["uri"])
        return
    element_string = "]d2" + case["element_string"][1:].replace("^", GS)

    assert read(case["uri"]).ai == read(element_string).ai


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        (
            "https://id.gs1.org/01/09520123456788?01=12312312312333",
            "GS1 Digital Link repeats AI (01)",
        ),
        ("https://id.gs1.org/01/09520123456788/10/A?10=A", "GS1 Digital Link repeats AI (10)"),
        ("https://a/01/12312312312333?99=", "GS1 Digital Link AI (99) has an empty value"),
        (
            "https://a/01/12312312312333?99=ABC&999=faux",
            "GS1 Digital Link query names no AI: '999'",
        ),
        ("https://a/stem/00/x/", "GS1 Digital Link path ends in no primary key and its value"),
    ],
)
def test_digital_link_refusals_say_why(uri: str, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        read(uri)
    assert caught.value.reason == reason


def test_a_key_like_stem_does_not_hide_the_primary_key() -> None:
    scan = read("https://a/00/faux/00/006141411234567890")
    assert dict(scan.ai) == {"00": "006141411234567890"}


@pytest.mark.parametrize(
    ("code", "symbology", "gtin", "ai"),
    [
        # GS1 DotCode (]J1) carries element strings as GS1 DataMatrix (]d2) does: the data of
        # gs1-syntax-engine's test "^011231231231233310ABC123^99TESTING".
        (
            f"]J1011231231231233310ABC123{GS}99TESTING",
            "GS1 DotCode",
            "12312312312333",
            {"01": "12312312312333", "10": "ABC123", "99": "TESTING"},
        ),
        # Plain DotCode (]J0) is plain data, as Data Matrix ]d1 is, but a Digital Link in it
        # is still one.
        ("]J0TESTING", "DotCode", None, {}),
        (f"]J0{DIGITAL_LINK}", "DotCode", "09506000134352", DIGITAL_LINK_AI),
    ],
)
def test_dotcode(code: str, symbology: str, gtin: str | None, ai: dict[str, str]) -> None:
    scan = read(code)
    assert (scan.symbology, scan.gtin, dict(scan.ai)) == (symbology, gtin, ai)


@pytest.mark.parametrize("code", ["]J", "]JX12"])
def test_a_dotcode_identifier_without_its_modifier_digit_is_refused(code: str) -> None:
    with pytest.raises(DecodeError, match="bad symbology identifier"):
        read(code)

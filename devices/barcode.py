"""Barcode scanners on ``lantern/{store}/scanner/{device}``: one read, one ``ScanRead``.

The payload is the scanner's text, with or without an AIM symbology identifier (``]C1``,
``]E0``, ``]Q3``...), or JSON ``{"code": ..., "symbology": ..., "time": ...}``; ``code`` is
the read as the scanner sent it (a trailing CR/LF terminator aside). GS1 data is parsed with
biip:

- element strings, FNC1 sent as the GS character (0x1D): ``]C1`` GS1-128, ``]d2`` GS1
  DataMatrix, ``]Q3`` GS1 QR, ``]J1`` GS1 DotCode, ``]e0`` DataBar... and, without an
  identifier, a read holding a GS, or one that starts with AI (01)/(02) and parses whole;
- GS1 Digital Link URIs, in any symbology (``]Q1``, ``]Q3``, none): a URL whose path names
  a GS1 primary key; any other URL is a plain code. The standard's rules hold as GS1's own
  syntax engine applies them: the primary key is the rightmost key of the AI/value pairs
  that end the path (a resolver's stem may look like a key), an AI appears once in path and
  query together, an AI's value is never empty, and a numeric query key must be an AI;
- EAN/UPC numbers: EAN-13, UPC-A, EAN-8, UPC-E (expanded to its UPC-A), EAN-13 with add-on
  (the GTIN is the first 13 digits), ITF-14, and bare numbers of GTIN length without an
  identifier.

A GTIN is always given as 14 digits; its check digit is verified, and a wrong one is a decode
error that says which digit was expected. Dates in AIs are ISO dates (``2021-05-26``; day
``00`` is the last day of the month, as GS1 specifies). Anything else (a Code 128 shelf label,
a loyalty card, a digits-only Code 39) is kept as ``code`` with no ``gtin``.

``symbology`` is named from the AIM identifier (``GS1-128``, ``EAN-13``, ``QR``...); without
one it is guessed only for a bare valid GTIN, from its length (``UPC-A`` for 12 digits), and is
None otherwise. A JSON ``symbology`` is taken as given.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias

import biip
from biip.checksums import gs1_standard_check_digit
from biip.gs1_application_identifiers import GS1ApplicationIdentifier
from biip.gs1_digital_link_uris import GS1DigitalLinkURI
from biip.gs1_element_strings import GS1ElementString
from biip.gs1_messages import GS1Message
from biip.symbology import GS1Symbology, ISOSymbology, SymbologyIdentifier
from biip.upc import Upc

from devices.jsonfields import json_object, json_str, json_time
from devices.model import Message, Observation, ScanRead
from lantern.errors import DecodeError

__all__ = ["gtin14", "parse"]

_GTIN_LENGTHS = frozenset({8, 12, 13, 14})
_UPC_E_LENGTHS = frozenset({6, 7, 8})  # payload only; with number system; with check digit
_UPC_E_WITH_CHECK_DIGIT_LENGTH = 8
_EAN_13_LENGTH = 13
_EAN_13_WITH_ADD_ON_LENGTHS = frozenset({15, 18})  # the EAN-13, then 2 or 5 add-on digits
_ITF_14_LENGTH = 14
_GTIN_AIS = ("01", "02")  # trade item, and trade items contained in a logistic unit
_GS = "\x1d"  # how scanners transmit FNC1 inside a GS1 element string
_SCANNER_TERMINATORS = "\r\n"  # what a scanner appends to each read; not part of the code
_BIIP_ERRORS = (biip.BiipException, ValueError, IndexError)  # biip indexes past a short "]x"

_DIGITS = re.compile(r"[0-9]+")  # str.isdigit() also takes "²" and other scripts' digits
# scheme://host, path, then query and fragment; scheme and host are case-insensitive (RFC
# 3986), and QR codes often spell them in capitals to fit the alphanumeric mode.
_URL = re.compile(r"(https?)://([^/?#]*)([^?#]*)(.*)", re.IGNORECASE | re.DOTALL)
# GS1 Digital Link primary keys (the AIs the GS1 syntax dictionary marks ``dlpkey``): a URL
# with one of these as a path segment followed by a value is a Digital Link, whatever its host.
_DIGITAL_LINK_PRIMARY_KEYS = frozenset(
    {"00", "01", "253", "255", "401", "402", "414", "415", "417"}
    | {"8003", "8004", "8006", "8010", "8013", "8017", "8018"}
)
_DIGITAL_LINK_PRIMARY_KEY = re.compile(
    f"/(?:{'|'.join(sorted(_DIGITAL_LINK_PRIMARY_KEYS))})/[^/?#]+"
)
# A zero-suppressed GTIN in a Digital Link query is padded to 14 digits, as GS1's own syntax
# engine does (the Digital Link standard's example ``/8004/...?01=9520123456788``).
_ZERO_SUPPRESSED_GTIN_LENGTHS = frozenset({8, 12, 13})
# Without an identifier, a read that starts with AI (01) or (02) and its 14 digits may be an
# element string whose FNC1s the scanner dropped; it is taken as one only if it parses whole.
_UNMARKED_ELEMENT_STRING = re.compile(r"0[12][0-9]{14}.", re.DOTALL)

_GS1_SYMBOLOGY_NAMES: Mapping[GS1Symbology, str] = {
    GS1Symbology.EAN_13: "EAN-13",
    GS1Symbology.EAN_TWO_DIGIT_ADD_ON: "EAN-2",
    GS1Symbology.EAN_FIVE_DIGIT_ADD_ON: "EAN-5",
    GS1Symbology.EAN_13_WITH_ADD_ON: "EAN-13 with add-on",
    GS1Symbology.EAN_8: "EAN-8",
    GS1Symbology.ITF_14: "ITF-14",
    GS1Symbology.GS1_128: "GS1-128",
    GS1Symbology.GS1_DATABAR: "GS1 DataBar",
    GS1Symbology.GS1_COMPOSITE_WITH_SEPARATOR_CHAR: "GS1 Composite",
    GS1Symbology.GS1_COMPOSITE_WITH_ESCAPE_CHAR: "GS1 Composite",
    GS1Symbology.GS1_DATAMATRIX: "GS1 DataMatrix",
    GS1Symbology.GS1_QR_CODE: "GS1 QR",
    GS1Symbology.GS1_DOTCODE: "GS1 DotCode",
}
_ISO_SYMBOLOGY_NAMES: Mapping[ISOSymbology, str] = {
    ISOSymbology.CODE_128: "Code 128",
    ISOSymbology.CODE_39: "Code 39",
    ISOSymbology.CODE_93: "Code 93",
    ISOSymbology.QR_CODE: "QR",
    ISOSymbology.DATA_MATRIX: "Data Matrix",
    ISOSymbology.PDF417: "PDF417",
    ISOSymbology.AZTEC_CODE: "Aztec",
    ISOSymbology.EAN_UPC: "EAN/UPC",
    ISOSymbology.ITF: "ITF",
    ISOSymbology.CODABAR: "Codabar",
}
# What a valid GTIN sent bare most likely was, by its length: the retail point-of-sale codes.
_BARE_GTIN_SYMBOLOGIES: Mapping[int, str] = {8: "EAN-8", 12: "UPC-A", 13: "EAN-13"}
# ]E0 carries EAN-13, UPC-A and UPC-E alike (EAN-8 has its own ]E4): the length tells them apart.
_E0_SYMBOLOGIES: Mapping[int, str] = {6: "UPC-E", 7: "UPC-E", 8: "UPC-E", 12: "UPC-A"}
_ELEMENT_STRING_SYMBOLOGIES = frozenset(
    {
        GS1Symbology.GS1_128,
        GS1Symbology.GS1_DATABAR,
        GS1Symbology.GS1_COMPOSITE_WITH_SEPARATOR_CHAR,
        GS1Symbology.GS1_COMPOSITE_WITH_ESCAPE_CHAR,
        GS1Symbology.GS1_DATAMATRIX,
        GS1Symbology.GS1_QR_CODE,
        GS1Symbology.GS1_DOTCODE,
    }
)
_ADD_ON_ONLY = frozenset({GS1Symbology.EAN_TWO_DIGIT_ADD_ON, GS1Symbology.EAN_FIVE_DIGIT_ADD_ON})
# DotCode's code character (ISO/IEC 15424), which biip does not know. Its modifier 1 is GS1
# DotCode (FNC1 first: element strings, GS1 General Specifications figure 5.1.2-2), as d2 is
# for Data Matrix; any other modifier is a DotCode of plain data, as d1 is.
_DOTCODE_FLAG = "]J"
_DOTCODE_IDENTIFIER = re.compile(r"\]J[0-9]")
_DOTCODE_NAME = "DotCode"

_GS1Data: TypeAlias = tuple[str | None, dict[str, str]]  # (GTIN-14, AI -> value)


@dataclass(frozen=True, slots=True)
class _Identifier:
    """A read's AIM symbology identifier; ``iso`` is None for DotCode, which biip lacks."""

    value: str
    iso: ISOSymbology | None
    gs1: GS1Symbology | None


def parse(message: Message) -> list[Observation] | None:
    """The read of one scanner message, or a decode error saying what is wrong."""
    code, given_symbology, observed_at = _payload(message)
    identifier = _identifier(code)
    body = code[len(identifier.value) :] if identifier is not None else code
    if not body.strip():
        raise DecodeError("empty barcode read")
    gtin, ai = _gs1_data(body, identifier)
    return [
        ScanRead(
            device_id=message.fields.get("device") or message.topic.rstrip("/").rsplit("/")[-1],
            observed_at=observed_at,
            code=code,
            symbology=given_symbology or _symbology_name(identifier, body, gtin),
            gtin=gtin,
            ai=ai,
        )
    ]


def gtin14(digits: str) -> str:
    """A GTIN-8, -12, -13 or -14 as 14 digits, its check digit verified; else a decode error."""
    if not _DIGITS.fullmatch(digits) or len(digits) not in _GTIN_LENGTHS:
        raise DecodeError(f"not a GTIN (8, 12, 13 or 14 digits): {digits[:20]!r}")
    return _verified_gtin(digits)


def _payload(message: Message) -> tuple[str, str | None, datetime | None]:
    """(code, symbology the payload names, the scanner's time) of a text or JSON read."""
    text = message.text()
    if not text.lstrip().startswith("{"):
        return text.strip(_SCANNER_TERMINATORS), None, None
    document = json_object(message, "scan JSON")
    code = document.get("code")
    if not isinstance(code, str) or not code:
        raise DecodeError("scan JSON has no code (a non-empty string)")
    return (
        code.strip(_SCANNER_TERMINATORS),
        json_str(document, "symbology"),
        json_time(document, "time"),
    )


def _identifier(code: str) -> _Identifier | None:
    if not code.startswith("]"):
        return None
    if code.startswith(_DOTCODE_FLAG):
        if not _DOTCODE_IDENTIFIER.match(code):
            raise DecodeError(f"bad symbology identifier: {code[:3]!r}")
        value = code[: len(_DOTCODE_FLAG) + 1]
        gs1 = GS1Symbology.GS1_DOTCODE if value[1:] == GS1Symbology.GS1_DOTCODE.value else None
        return _Identifier(value, None, gs1)
    try:
        identifier = SymbologyIdentifier.extract(code)
    except _BIIP_ERRORS:
        raise DecodeError(f"bad symbology identifier: {code[:3]!r}") from None
    return _Identifier(identifier.value, identifier.iso_symbology, identifier.gs1_symbology)


def _gs1_data(body: str, identifier: _Identifier | None) -> _GS1Data:
    """(GTIN-14, AIs) of the read's GS1 data; (None, {}) for a code that is not GS1."""
    gs1 = identifier.gs1 if identifier is not None else None
    url = _URL.fullmatch(body)
    if url is not None:
        is_link = _DIGITAL_LINK_PRIMARY_KEY.search(url[3]) is not None
        return _digital_link(url) if is_link else (None, {})
    if gs1 in _ELEMENT_STRING_SYMBOLOGIES or (identifier is None and _GS in body):
        return _element_strings(body)
    if identifier is None:
        return _unmarked(body)
    if identifier.iso is ISOSymbology.EAN_UPC and gs1 not in _ADD_ON_ONLY:
        return _ean_upc(body, gs1), {}
    if identifier.iso is ISOSymbology.ITF and len(body) == _ITF_14_LENGTH:
        return _verified_gtin(_digits(body, "ITF-14")), {}
    return None, {}


def _unmarked(body: str) -> _GS1Data:
    """GS1 data of a read without identifier or GS: a bare GTIN, or a whole element string."""
    if _UNMARKED_ELEMENT_STRING.match(body):
        try:
            message = GS1Message.parse(body)
        except _BIIP_ERRORS:
            return None, {}  # a code that merely starts like one
        return _ai_values(message.element_strings)
    if _DIGITS.fullmatch(body) and len(body) in _GTIN_LENGTHS:
        return _verified_gtin(body), {}
    return None, {}


def _ean_upc(body: str, gs1: GS1Symbology | None) -> str:
    """The GTIN-14 of an EAN/UPC read (]E0, ]E3, ]E4)."""
    digits = _digits(body, "EAN/UPC")
    if gs1 is GS1Symbology.EAN_13_WITH_ADD_ON:
        if len(digits) not in _EAN_13_WITH_ADD_ON_LENGTHS:
            raise DecodeError(f"EAN-13 with add-on read of {len(digits)} digits")
        return _verified_gtin(digits[:_EAN_13_LENGTH])
    if gs1 is GS1Symbology.EAN_13 and len(digits) in _UPC_E_LENGTHS:
        return _upc_e(digits)
    if len(digits) not in _GTIN_LENGTHS:
        raise DecodeError(f"EAN/UPC read of {len(digits)} digits is no GTIN")
    return _verified_gtin(digits)


def _upc_e(digits: str) -> str:
    """The GTIN-14 of a UPC-E read, expanded to its UPC-A; the check digit is the UPC-A's."""
    with_check_digit = len(digits) == _UPC_E_WITH_CHECK_DIGIT_LENGTH
    try:
        upc = Upc.parse(digits[:-1] if with_check_digit else digits)
    except _BIIP_ERRORS as exc:
        raise DecodeError(f"not a UPC-E: {exc}") from None
    if with_check_digit and digits[-1] != str(upc.check_digit):
        raise DecodeError(f"UPC-E check digit: expected {upc.check_digit}, got {digits[-1]}")
    return upc.as_gtin_14()


def _digits(body: str, what: str) -> str:
    if not _DIGITS.fullmatch(body):
        raise DecodeError(f"{what} read is not all digits: {body[:20]!r}")
    return body


def _verified_gtin(digits: str, what: str = "check digit") -> str:
    """The GTIN as 14 digits, or a decode error naming the check digit it should have."""
    expected = gs1_standard_check_digit(digits[:-1])
    if digits[-1] != str(expected):
        raise DecodeError(f"{what}: expected {expected}, got {digits[-1]}")
    return digits.zfill(_ITF_14_LENGTH)


def _element_strings(body: str) -> _GS1Data:
    try:
        message = GS1Message.parse(body)
    except _BIIP_ERRORS as exc:
        raise DecodeError(f"not a GS1 element string: {exc}") from None
    return _ai_values(message.element_strings)


def _digital_link(url: re.Match[str]) -> _GS1Data:
    """The element strings of a GS1 Digital Link, checked against the standard's rules.

    The path's primary key is the rightmost one in an unbroken run of AI/value pairs that ends
    the path, so a resolver stem may hold segments that look like keys (``/00/faux/00/...``).
    An AI appears once in path and query together, and never with an empty value; a numeric
    query key must be an AI. Other query parameters and the fragment are not GS1 data.
    """
    scheme, host, path, rest = url.groups()
    path_pairs = _digital_link_path(path.split("/")[1:])
    pairs = path_pairs + _digital_link_query(rest.partition("#")[0].removeprefix("?"))
    seen: set[str] = set()
    for ai, value in pairs:
        if ai in seen:
            raise DecodeError(f"GS1 Digital Link repeats AI ({ai})")
        if not value:
            raise DecodeError(f"GS1 Digital Link AI ({ai}) has an empty value")
        seen.add(ai)
    dl_path = "".join(f"/{ai}/{value}" for ai, value in path_pairs)
    dl_query = "&".join(f"{ai}={value}" for ai, value in pairs[len(path_pairs) :])
    try:
        link = GS1DigitalLinkURI.parse(f"{scheme.lower()}://{host.lower()}{dl_path}?{dl_query}")
    except _BIIP_ERRORS as exc:
        raise DecodeError(f"not a GS1 Digital Link: {exc}") from None
    return _ai_values(link.element_strings)


def _digital_link_path(segments: list[str]) -> list[tuple[str, str]]:
    """The (AI, value) pairs from the primary key on: the rightmost key in the unbroken run of
    AI/value pairs that ends the path (the GS1 syntax engine's rule)."""
    for start in range(len(segments) - 2, -1, -2):
        if not _is_ai(segments[start]):
            break
        if segments[start] in _DIGITAL_LINK_PRIMARY_KEYS:
            key_and_qualifiers = segments[start:]
            return list(zip(key_and_qualifiers[::2], key_and_qualifiers[1::2], strict=True))
    raise DecodeError("GS1 Digital Link path ends in no primary key and its value")


def _digital_link_query(query: str) -> list[tuple[str, str]]:
    """The query's (AI, value) pairs; parameters with a name that is not numeric are skipped."""
    pairs: list[tuple[str, str]] = []
    for parameter in query.split("&"):
        key, equals, value = parameter.partition("=")
        if not equals or not _DIGITS.fullmatch(key):
            continue
        if not _is_ai(key):
            raise DecodeError(f"GS1 Digital Link query names no AI: {key[:8]!r}")
        if key == "01" and _DIGITS.fullmatch(value) and len(value) in _ZERO_SUPPRESSED_GTIN_LENGTHS:
            value = value.zfill(_ITF_14_LENGTH)
        pairs.append((key, value))
    return pairs


def _is_ai(segment: str) -> bool:
    try:
        return GS1ApplicationIdentifier.extract(segment).ai == segment
    except _BIIP_ERRORS:
        return False


def _ai_values(element_strings: Iterable[GS1ElementString]) -> _GS1Data:
    """(verified GTIN-14, AI -> value with dates as ISO dates) of parsed element strings."""
    ai: dict[str, str] = {}
    for element in element_strings:
        moment = element.datetime or element.date
        ai[element.ai.ai] = moment.isoformat() if moment is not None else element.value
    gtin_ai = next((key for key in _GTIN_AIS if key in ai), None)
    if gtin_ai is None:
        return None, ai
    digits = _digits(ai[gtin_ai], f"AI ({gtin_ai})")  # biip's pattern allows digits only
    return _verified_gtin(digits, f"AI ({gtin_ai}) check digit"), ai


def _symbology_name(identifier: _Identifier | None, body: str, gtin: str | None) -> str | None:
    if identifier is None:
        bare_gtin = gtin is not None and _DIGITS.fullmatch(body) is not None
        return _BARE_GTIN_SYMBOLOGIES.get(len(body)) if bare_gtin else None
    gs1 = identifier.gs1
    if gs1 is GS1Symbology.EAN_13:
        return _E0_SYMBOLOGIES.get(len(body), "EAN-13")
    if gs1 is not None:
        return _GS1_SYMBOLOGY_NAMES[gs1]
    iso = identifier.iso
    if iso is None:
        return _DOTCODE_NAME
    if iso is ISOSymbology.ITF and gtin is not None:
        return "ITF-14"
    return _ISO_SYMBOLOGY_NAMES.get(iso, iso.name.replace("_", " ").title())

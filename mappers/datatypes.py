"""HL7 v2 data types → FHIR R4 data types (plain JSON dicts).

Follows the HL7 v2-to-FHIR IG data type maps
(https://hl7.org/fhir/uv/v2mappings/datatype_maps.html: DTM/TS, XPN, CX, XTN,
XAD, XCN, CWE, PL) with the Vietnamese deviations of DESIGN §3: names in
Vietnamese order, phones in E.164 (:mod:`common.phones`), identifier systems from
:mod:`common.identifiers`.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from typing import Any

from common import (
    BHYT_SYSTEM,
    CCCD_SYSTEM,
    InvalidInput,
    identifier_type_system,
    mrn_system,
    normalize_contact_point,
    practitioner_system,
)
from common import ORIGINAL_TEXT_URL as ORIGINAL_TEXT_URL
from common import normalize_phone as normalize_phone
from mappers.hl7_message import Repetition, cx_authority

JSON = dict[str, Any]

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
VN_OFFSET = "+07:00"

_TS_RE = re.compile(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,4}))?([+-]\d{4})?")

# ----------------------------------------------------------------------------- DTM / TS


#: The rule an error names.  Error texts never quote the value: they reach the HL7 journal and the
#: stored ACK, and a rejected birth date is personal data (issue #18 item 5, ISO/IEC 27001 A.8.11).
_DTM_RULE = "YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]"


def _parse_ts(value: str, location: str) -> tuple[list[str | None], str | None, str | None]:
    """Split and validate a DTM: ([Y, M, D, h, m, s], fraction, offset "+hh:mm")."""
    m = _TS_RE.fullmatch(value.strip())
    if m is None:
        raise InvalidInput(f"not an HL7 date/time ({_DTM_RULE})", location=location)
    parts: list[str | None] = list(m.groups()[:6])
    frac, off = m.group(7), m.group(8)
    if frac and parts[5] is None:
        raise InvalidInput(f"fractional seconds without seconds ({_DTM_RULE})", location=location)
    try:
        date(int(parts[0] or 1), int(parts[1] or 1), int(parts[2] or 1))
    except ValueError:
        raise InvalidInput("impossible date (month 01-12, day within the month)", location=location) from None
    hh, mi, ss = (int(p) if p else 0 for p in parts[3:6])
    if hh > 23 or mi > 59 or ss > 59:
        raise InvalidInput("impossible time (hour 00-23, minute and second 00-59)", location=location)
    offset = None
    if off:
        oh, om = int(off[1:3]), int(off[3:5])
        if oh > 14 or om > 59:
            raise InvalidInput("impossible UTC offset (at most +/-1459)", location=location)
        offset = f"{off[0]}{off[1:3]}:{off[3:5]}"
    return parts, frac, offset


def ts_to_date(value: str, *, location: str) -> str | None:
    """DTM → FHIR ``date`` (YYYY, YYYY-MM or YYYY-MM-DD, keeping the sent precision)."""
    if not value.strip():
        return None
    parts, _, _ = _parse_ts(value, location)
    y, mo, d = parts[:3]
    return "-".join(p for p in (y, mo, d if mo else None) if p)


def ts_to_datetime(value: str, *, location: str, default_offset: str = VN_OFFSET) -> str | None:
    """DTM → FHIR ``dateTime``; a time without offset is taken as ``default_offset`` (Vietnam)."""
    if not value.strip():
        return None
    parts, frac, offset = _parse_ts(value, location)
    if parts[3] is None:
        return ts_to_date(value, location=location)
    day = f"{parts[0]}-{parts[1]}-{parts[2]}"
    clock = f"{parts[3]}:{parts[4] or '00'}:{parts[5] or '00'}" + (f".{frac}" if frac else "")
    return f"{day}T{clock}{offset or default_offset}"


def ts_to_instant(value: str, *, location: str, default_offset: str = VN_OFFSET) -> str | None:
    """DTM → FHIR ``instant`` (needs at least a day; missing clock parts are zero)."""
    if not value.strip():
        return None
    parts, frac, offset = _parse_ts(value, location)
    if parts[2] is None:
        raise InvalidInput("an instant needs at least a day (YYYYMMDD)", location=location)
    clock = f"{parts[3] or '00'}:{parts[4] or '00'}:{parts[5] or '00'}" + (f".{frac}" if frac else "")
    return f"{parts[0]}-{parts[1]}-{parts[2]}T{clock}{offset or default_offset}"


def add_minutes(instant: str, minutes: int) -> str:
    """Add minutes to an instant produced by :func:`ts_to_instant`, keeping its offset."""
    dt = datetime.fromisoformat(instant) + timedelta(minutes=minutes)
    tz = dt.utcoffset() or timedelta(0)
    sign = "-" if tz < timedelta(0) else "+"
    total = abs(int(tz.total_seconds())) // 60
    return dt.replace(tzinfo=None).isoformat(timespec="seconds") + f"{sign}{total // 60:02d}:{total % 60:02d}"


def fhir_to_dtm(value: str) -> str:
    """FHIR date/dateTime/instant → HL7 DTM (``2026-11-25T09:00:00+07:00`` → ``20261125090000+0700``)."""
    if "T" not in value:
        return value.replace("-", "")
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    off = dt.utcoffset()
    stamp = dt.strftime("%Y%m%d%H%M%S")
    if off is None:
        return stamp
    return stamp + dt.replace(tzinfo=timezone(off)).strftime("%z")


# ----------------------------------------------------------------------------- XPN


_NAME_USE = {"L": "official", "D": "usual", "M": "maiden", "N": "nickname", "A": "anonymous", "T": "temp"}


def xpn_to_human_name(rep: Repetition) -> JSON | None:
    """XPN → HumanName in Vietnamese order (DESIGN §3).

    HL7 sends family^given^middle (``Nguyễn^An^Văn``); FHIR gets family
    ``Nguyễn``, given ``["Văn", "An"]`` (display order) and text ``Nguyễn Văn
    An``.  A whole name in XPN.1 alone (``NGUYEN VAN AN``) cannot be split
    safely, so it only fills ``text``.  Case and diacritics are never changed.
    """
    family = rep.component(1).strip()
    given = rep.component(2).strip()
    middle = rep.component(3).strip()
    suffix = rep.component(4).strip()
    prefix = rep.component(5).strip()
    name: JSON = {}
    use = _NAME_USE.get(rep.component(7).strip().upper())
    if use:
        name["use"] = use
    ordered = [p for p in (family, middle, given) if p]
    if not ordered:
        return None
    name["text"] = " ".join(ordered)
    whole_in_family = not given and not middle and len(family.split()) > 1
    if not whole_in_family:
        if family:
            name["family"] = family
        givens = [p for p in (middle, given) if p]
        if givens:
            name["given"] = givens
    if prefix:
        name["prefix"] = [prefix]
    if suffix:
        name["suffix"] = [suffix]
    return name


def person_display(family: str, given: str, middle: str) -> str:
    """Vietnamese display order: family middle given."""
    return " ".join(p for p in (family.strip(), middle.strip(), given.strip()) if p)


# ----------------------------------------------------------------------------- CX


def identifier_system(type_code: str, authority: str) -> str:
    """System URI for a CX by its identifier type (HL7 table 0203), see docs/identifiers.md."""
    code = type_code.upper()
    if code == "NI":
        return CCCD_SYSTEM
    if code == "HC":
        return BHYT_SYSTEM
    if code == "MR" or not code:
        return mrn_system(authority)
    return identifier_type_system(authority)


def cx_to_identifier(rep: Repetition, *, default_authority: str) -> JSON | None:
    """CX → Identifier with a stable system and a v2-0203 type coding."""
    value = rep.component(1).strip()
    if not value:
        return None
    type_code = rep.component(5).strip().upper()
    authority = cx_authority(rep, default_authority)
    ident: JSON = {"system": identifier_system(type_code, authority), "value": value}
    if type_code:
        ident["type"] = {"coding": [{"system": V2_0203, "code": type_code}]}
    if type_code not in ("NI", "HC") and authority:
        ident["assigner"] = {"display": authority}
    return ident


# ----------------------------------------------------------------------------- XTN

_USE = {"PRN": "home", "ORN": "home", "VHN": "home", "WPN": "work"}
_SYSTEM = {"PH": "phone", "CP": "phone", "FX": "fax", "BP": "pager", "INTERNET": "email", "X.400": "email"}


def xtn_to_contact_point(rep: Repetition) -> JSON | None:
    """XTN → ContactPoint (IG datatype-xtn-to-contactpoint), phones in E.164."""
    use_code = rep.component(2).strip().upper()
    equipment = rep.component(3).strip().upper()
    email = rep.component(4).strip()
    cp: JSON
    if email and (equipment in ("INTERNET", "X.400") or use_code == "NET" or not equipment):
        cp = {"system": "email", "value": email}
    else:
        original = rep.component(1).strip() or rep.component(12).strip()
        if not original and rep.component(7).strip():
            country = rep.component(5).strip()
            original = (
                (f"+{country} " if country else "") + rep.component(6).strip() + rep.component(7).strip()
            )
        if not original:
            return None
        cp = {"system": _SYSTEM.get(equipment, "phone"), "value": original}
        normalize_contact_point(cp)  # E.164, the original kept in an extension (common.phones)
    use = "mobile" if equipment == "CP" else _USE.get(use_code)
    if use:
        cp["use"] = use
    return cp


# ----------------------------------------------------------------------------- XAD

_ADDRESS_USE = {"H": "home", "B": "work", "O": "work", "C": "temp", "BA": "old", "BI": "billing"}


def xad_to_address(rep: Repetition) -> JSON | None:
    """XAD → Address (IG datatype-xad-to-address).

    Post-2025 two-level Vietnamese addresses arrive as ward in XAD-3 and
    province in XAD-4; older three-level data may carry the district in
    XAD-9 or XAD-2.  Everything is kept where it was sent; ``text`` joins it.
    """
    street = rep.component(1, 1).strip()
    other = rep.component(2).strip()
    city = rep.component(3).strip()
    state = rep.component(4).strip()
    postal = rep.component(5).strip()
    country = rep.component(6).strip()
    district = rep.component(9).strip()
    addr: JSON = {}
    kind = rep.component(7).strip().upper()
    if kind == "M":
        addr["type"] = "postal"
    elif kind in _ADDRESS_USE:
        addr["use"] = _ADDRESS_USE[kind]
    lines = [p for p in (street, other) if p]
    text_parts = [*lines, district, city, state]
    text = ", ".join(p for p in text_parts if p)
    if not text and not postal and not country:
        return None
    if text:
        addr["text"] = text
    if lines:
        addr["line"] = lines
    for key, val in (("city", city), ("district", district), ("state", state)):
        if val:
            addr[key] = val
    if postal:
        addr["postalCode"] = postal
    if country:
        addr["country"] = country
    return addr


# ----------------------------------------------------------------------------- XCN, CWE, PL


def xcn_to_reference(
    rep: Repetition, *, default_authority: str, resource_type: str = "Practitioner"
) -> JSON | None:
    """XCN → logical Reference (identifier + display); no Practitioner resource is created."""
    ident = rep.component(1).strip()
    display = person_display(rep.component(2), rep.component(3), rep.component(4))
    if not ident and not display:
        return None
    ref: JSON = {"type": resource_type}
    if ident:
        authority = rep.component(9, 1).strip() or default_authority
        ref["identifier"] = {"system": practitioner_system(authority), "value": ident}
    if display:
        ref["display"] = display
    return ref


_CODE_SYSTEMS = {
    "ICD10": "http://hl7.org/fhir/sid/icd-10",
    "I10": "http://hl7.org/fhir/sid/icd-10",
    "LN": "http://loinc.org",
    "SCT": "http://snomed.info/sct",
}


def code_system(name: str) -> str | None:
    """CWE-3 coding system name → FHIR system URI (HL7 tables → terminology.hl7.org)."""
    key = name.strip().upper()
    if key in _CODE_SYSTEMS:
        return _CODE_SYSTEMS[key]
    m = re.fullmatch(r"HL7(\d{4})", key)
    return f"http://terminology.hl7.org/CodeSystem/v2-{m.group(1)}" if m else None


def cwe_to_codeable_concept(rep: Repetition) -> JSON | None:
    """CWE/CE → CodeableConcept; local code systems keep code+display without a system."""
    code = rep.component(1).strip()
    display = rep.component(2).strip()
    if not code and not display:
        return None
    cc: JSON = {}
    if code:
        coding: JSON = {}
        system = code_system(rep.component(3))
        if system:
            coding["system"] = system
        coding["code"] = code
        if display:
            coding["display"] = display
        cc["coding"] = [coding]
    cc["text"] = display or code
    return cc


def pl_display(rep: Repetition) -> str:
    """PL → a human label: PL-9 description, else point of care/room/bed/building/floor."""
    description = rep.component(9).strip()
    if description:
        return description
    parts = [rep.component(i).strip() for i in (1, 2, 3, 7, 8)]
    return " - ".join(p for p in parts if p)

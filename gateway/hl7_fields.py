"""A message as a segment/field table with HL7 v2.5 field names (the console's message page).

Why a small table of our own rather than a full HL7 library: the page shows the
segments carebridge reads and answers with (ADT and SIU from a HIS, the ACK it
sends), and an engineer fixing a feed needs the field's position and its
standard name next to the value.  Names are those of HL7 v2.5 ch. 2 (MSH, MSA,
ERR), 3 (EVN, PID, PD1, NK1, PV1, PV2, MRG), 10 (SCH, RGS, AIS, AIG, AIL, AIP).
Unknown segments or positions are shown by position only.
"""

from __future__ import annotations

from dataclasses import dataclass

from mappers import CHARSETS, parse_message

_N = {
    "MSH": "Field Separator|Encoding Characters|Sending Application|Sending Facility|Receiving Application|"
    "Receiving Facility|Date/Time Of Message|Security|Message Type|Message Control ID|Processing ID|"
    "Version ID|Sequence Number|Continuation Pointer|Accept Acknowledgment Type|"
    "Application Acknowledgment Type|Country Code|Character Set|Principal Language Of Message",
    "MSA": "Acknowledgment Code|Message Control ID|Text Message|Expected Sequence Number|"
    "Delayed Acknowledgment Type|Error Condition",
    "ERR": "Error Code and Location|Error Location|HL7 Error Code|Severity|Application Error Code|"
    "Application Error Parameter|Diagnostic Information|User Message",
    "EVN": "Event Type Code|Recorded Date/Time|Date/Time Planned Event|Event Reason Code|Operator ID|"
    "Event Occurred|Event Facility",
    "PID": "Set ID - PID|Patient ID|Patient Identifier List|Alternate Patient ID - PID|Patient Name|"
    "Mother's Maiden Name|Date/Time of Birth|Administrative Sex|Patient Alias|Race|Patient Address|"
    "County Code|Phone Number - Home|Phone Number - Business|Primary Language|Marital Status|Religion|"
    "Patient Account Number|SSN Number - Patient|Driver's License Number - Patient|"
    "Mother's Identifier|Ethnic Group|Birth Place|Multiple Birth Indicator|Birth Order|Citizenship|"
    "Veterans Military Status|Nationality|Patient Death Date and Time|Patient Death Indicator",
    "PD1": "Living Dependency|Living Arrangement|Patient Primary Facility|"
    "Patient Primary Care Provider Name & ID No.",
    "NK1": "Set ID - NK1|Name|Relationship|Address|Phone Number|Business Phone Number|Contact Role",
    "MRG": "Prior Patient Identifier List|Prior Alternate Patient ID|Prior Patient Account Number|"
    "Prior Patient ID|Prior Visit Number|Prior Alternate Visit ID|Prior Patient Name",
    "PV1": "Set ID - PV1|Patient Class|Assigned Patient Location|Admission Type|Preadmit Number|"
    "Prior Patient Location|Attending Doctor|Referring Doctor|Consulting Doctor|Hospital Service|"
    "Temporary Location|Preadmit Test Indicator|Re-admission Indicator|Admit Source|"
    "Ambulatory Status|VIP Indicator|Admitting Doctor|Patient Type|Visit Number|Financial Class|"
    "Charge Price Indicator|Courtesy Code|Credit Rating|Contract Code|Contract Effective Date|"
    "Contract Amount|Contract Period|Interest Code|Transfer to Bad Debt Code|"
    "Transfer to Bad Debt Date|Bad Debt Agency Code|Bad Debt Transfer Amount|"
    "Bad Debt Recovery Amount|Delete Account Indicator|Delete Account Date|Discharge Disposition|"
    "Discharged to Location|Diet Type|Servicing Facility|Bed Status|Account Status|"
    "Pending Location|Prior Temporary Location|Admit Date/Time|Discharge Date/Time",
    "PV2": "Prior Pending Location|Accommodation Code|Admit Reason|Transfer Reason",
    "SCH": "Placer Appointment ID|Filler Appointment ID|Occurrence Number|Placer Group Number|"
    "Schedule ID|Event Reason|Appointment Reason|Appointment Type|Appointment Duration|"
    "Appointment Duration Units|Appointment Timing Quantity|Placer Contact Person|"
    "Placer Contact Phone Number|Placer Contact Address|Placer Contact Location|"
    "Filler Contact Person|Filler Contact Phone Number|Filler Contact Address|"
    "Filler Contact Location|Entered By Person|Entered By Phone Number|Entered By Location|"
    "Parent Placer Appointment ID|Parent Filler Appointment ID|Filler Status Code",
    "RGS": "Set ID - RGS|Segment Action Code|Resource Group ID",
    "AIS": "Set ID - AIS|Segment Action Code|Universal Service Identifier|Start Date/Time|"
    "Start Date/Time Offset|Start Date/Time Offset Units|Duration|Duration Units|"
    "Allow Substitution Code|Filler Status Code",
    "AIG": "Set ID - AIG|Segment Action Code|Resource ID|Resource Type|Resource Group|"
    "Resource Quantity|Resource Quantity Units|Start Date/Time",
    "AIL": "Set ID - AIL|Segment Action Code|Location Resource ID|Location Type - AIL|Location Group|"
    "Start Date/Time",
    "AIP": "Set ID - AIP|Segment Action Code|Personnel Resource ID|Resource Type|Resource Group|"
    "Start Date/Time",
}
FIELD_NAMES: dict[str, tuple[str, ...]] = {seg: tuple(names.split("|")) for seg, names in _N.items()}


@dataclass(frozen=True, slots=True)
class Field:
    position: str  # "PID-5"
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class SegmentRow:
    name: str
    fields: tuple[Field, ...]


def field_name(segment: str, index: int) -> str:
    names = FIELD_NAMES.get(segment, ())
    return names[index - 1] if 0 < index <= len(names) else ""


def decode(raw: bytes, default_charset: str) -> str:
    """The message as text: as the ingest reads it, else (undecodable) with U+FFFD where bytes break."""
    try:
        return parse_message(raw, default_charset=default_charset).text
    except Exception:
        first = raw.split(b"\r", 1)[0].split(b"\n", 1)[0]
        parts = first.split(first[3:4] or b"|")
        label = parts[17].decode("ascii", "replace").split("^")[0].strip() if len(parts) > 17 else ""
        codec = CHARSETS.get(label.upper(), default_charset)
        try:
            return raw.decode(codec, errors="replace")
        except LookupError:
            return raw.decode("utf-8", errors="replace")


def segment_table(text: str) -> list[SegmentRow]:
    """Each segment with its non-empty fields, numbered as HL7 numbers them (MSH-1 is the separator)."""
    rows: list[SegmentRow] = []
    lines = [line for line in text.replace("\r\n", "\r").replace("\n", "\r").split("\r") if line.strip()]
    if not lines or not lines[0].startswith("MSH") or len(lines[0]) < 4:
        return [SegmentRow("?", (Field("", "", line),)) for line in lines]
    separator = lines[0][3]
    for line in lines:
        name = line[:3]
        parts = line.split(separator)
        if name == "MSH":
            parts.insert(1, separator)
        fields = tuple(
            Field(f"{name}-{i}", field_name(name, i), value) for i, value in enumerate(parts[1:], 1) if value
        )
        rows.append(SegmentRow(name, fields))
    return rows

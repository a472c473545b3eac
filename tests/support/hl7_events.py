"""Real-shaped ADT/SIU messages for the event-order tests (HL7 v2.5.1 ch. 3 and 10).

Each builder takes the assigning authority (PID-3.4, MSH-4), so several
deliveries can share one database without sharing a record: the authority is
part of every identifier system (``common.identifiers.mrn_system``).  Times are
``YYYYMMDDHHMM`` in Vietnam time; the event time is EVN-2 (ADT) or MSH-7 (SIU).
"""

from __future__ import annotations

from dataclasses import dataclass

MSH = "MSH|^~\\&|HIS_VN|{auth}|FHIRGATE|CRM_CSKH|{when}00+0700||{kind}|{control}|P|2.5|||AL|NE|VNM|UNICODE UTF-8"


@dataclass(frozen=True)
class Person:
    mrn: str
    family: str
    given: str
    middle: str
    birth: str  # YYYYMMDD
    sex: str


def pid(auth: str, person: Person, *, street: str = "", phone: str = "", cccd: str = "") -> str:
    ids = f"{person.mrn}^^^{auth}^MR" + (f"~{cccd}^^^BCA^NI" if cccd else "")
    address = f"{street}^^Phường Cửa Nam^Hà Nội^100000^VNM^H" if street else ""
    telecom = f"{phone}^PRN^CP" if phone else ""
    name = f"{person.family}^{person.given}^{person.middle}^^^^L"
    return f"PID|1||{ids}||{name}||{person.birth}|{person.sex}|||{address}||{telecom}|||M"


def pv1(
    auth: str, visit: str, patient_class: str, admit: str, discharge: str = "", room: str = "P101"
) -> str:
    """PV1 with PV1-2 class, PV1-3 location, PV1-7 attending, PV1-19 visit number, PV1-44/45 times."""
    fields = [""] * 46
    fields[0] = "PV1"
    fields[1] = "1"
    fields[2] = patient_class
    fields[3] = f"KHAM^{room}^01^{auth}"
    fields[7] = "BS001^Trần^Bình^Thị^^^BS"
    fields[10] = "NHA"
    fields[19] = visit
    fields[44] = f"{admit}00+0700" if admit else ""
    fields[45] = f"{discharge}00+0700" if discharge else ""
    return "|".join(fields)


def adt(
    auth: str, trigger: str, when: str, control: str, person: Person, *segments: str, structure: str = ""
) -> bytes:
    """An ADT message: MSH, EVN (EVN-2 = ``when``), PID and the given segments."""
    kind = f"ADT^{trigger}^{structure or 'ADT_A01'}"
    lines = [
        MSH.format(auth=auth, when=when, kind=kind, control=control),
        f"EVN|{trigger}|{when}00+0700",
        *segments,
    ]
    if not any(s.startswith("PID|") for s in segments):
        lines.insert(2, pid(auth, person))
    return "\r".join(lines).encode()


def merge(auth: str, when: str, control: str, survivor: Person, retired: Person) -> bytes:
    """ADT^A40 (structure ADT_A39): PID of the survivor, MRG-1 the retired record number."""
    return "\r".join(
        [
            MSH.format(auth=auth, when=when, kind="ADT^A40^ADT_A39", control=control),
            f"EVN|A40|{when}00+0700",
            pid(auth, survivor),
            f"MRG|{retired.mrn}^^^{auth}^MR",
        ]
    ).encode()


def siu(
    auth: str, trigger: str, when: str, control: str, person: Person, booking: str, start: str, end: str
) -> bytes:
    """SIU (SIU_S12 structure): SCH, TQ1 timing (HL7 v2.5.1 ch. 10.6), PID, RGS, AIS, AIP."""
    status = {"S15": "Cancelled", "S26": "Noshow"}.get(trigger, "Booked")
    minutes = (int(end[8:10]) * 60 + int(end[10:12])) - (int(start[8:10]) * 60 + int(start[10:12]))
    return "\r".join(
        [
            MSH.format(auth=auth, when=when, kind=f"SIU^{trigger}^SIU_S12", control=control),
            f"SCH|{booking}^{auth}|{booking}^{auth}|||||TAIKHAM^Tái khám^LOCAL|ROUTINE^Routine^HL70276|"
            f"{minutes}|MIN^Phút||||||TN03^Hồ^Mai||||TN03^Hồ^Mai|||||{status}",
            f"TQ1|1||||||{start}00+0700|{end}00+0700|||||",
            pid(auth, person),
            "RGS|1|A",
            f"AIS|1|A|NIENG^Niềng răng - tái khám^LOCAL|{start}00+0700|||{minutes}|MIN",
            f"AIP|1|A|BS020^Lý^Khoa^Minh^^^BS|BS^Bác sĩ||{start}00+0700|||{minutes}|MIN",
        ]
    ).encode()


# -- a day of one clinic: 30 messages, in the order their events happened ---------------------

AN = Person("BN100001", "Nguyễn", "An", "Văn", "19850312", "M")
BINH = Person("BN100002", "Trần", "Bình", "Thị", "19900704", "F")
CHI = Person("BN100003", "Lê", "Chi", "Ngọc", "20010225", "F")
DUNG = Person("BN100004", "Phạm", "Dũng", "Minh", "19781130", "M")
AN_DUP = Person("BN100009", "Nguyễn", "An", "Văn", "19850312", "M")  # registered twice
HA = Person("BN100006", "Võ", "Hà", "Thu", "19951010", "F")


def clinic_day(auth: str) -> list[bytes]:
    """Registrations, visits, discharges, updates, appointments and a merge, in event order.

    Every message carries its own event time; arrival order is whatever the test chooses.
    """
    n = iter(range(1, 100))

    def c() -> str:
        return f"{auth}-{next(n):03d}"

    v = {k: f"V{auth}{k}" for k in range(1, 7)}
    return [
        siu(auth, "S12", "202611181610", c(), AN, "LH1", "202611250900", "202611250930"),
        siu(auth, "S12", "202611181620", c(), CHI, "LH2", "202611251000", "202611251030"),
        siu(auth, "S13", "202611190900", c(), AN, "LH1", "202611251400", "202611251430"),
        siu(auth, "S14", "202611191000", c(), AN, "LH1", "202611251400", "202611251445"),
        adt(auth, "A28", "202611191100", c(), HA, pid(auth, HA, street="5 Hàng Bài", phone="0905000111")),
        adt(
            auth,
            "A04",
            "202611200800",
            c(),
            AN,
            pid(auth, AN, street="12 Lý Thường Kiệt", phone="0912345678"),
            pv1(auth, v[1], "O", "202611200800"),
        ),
        adt(
            auth,
            "A04",
            "202611200805",
            c(),
            AN_DUP,
            pid(auth, AN_DUP, street="12 Lý Thường Kiệt"),
            pv1(auth, v[5], "O", "202611200805"),
        ),
        adt(
            auth,
            "A01",
            "202611200810",
            c(),
            BINH,
            pid(auth, BINH, street="45 Nguyễn Trãi", phone="0903111222"),
            pv1(auth, v[2], "I", "202611200810", room="P305"),
        ),
        adt(
            auth,
            "A08",
            "202611200820",
            c(),
            AN_DUP,
            pid(auth, AN_DUP, street="14 Lý Thường Kiệt"),
            pv1(auth, v[5], "O", "202611200805"),
        ),
        adt(
            auth,
            "A04",
            "202611200830",
            c(),
            CHI,
            pid(auth, CHI, street="7 Hai Bà Trưng", phone="0938555666"),
            pv1(auth, v[3], "O", "202611200830"),
        ),
        adt(
            auth,
            "A04",
            "202611200840",
            c(),
            DUNG,
            pid(auth, DUNG, street="3 Tràng Tiền", phone="0987000111"),
            pv1(auth, v[4], "O", "202611200840"),
        ),
        adt(
            auth,
            "A08",
            "202611200900",
            c(),
            AN,
            pid(auth, AN, street="88 Trần Hưng Đạo", phone="0912345678"),
            pv1(auth, v[1], "O", "202611200800"),
        ),
        adt(auth, "A11", "202611200915", c(), CHI, pv1(auth, v[3], "O", "202611200830")),
        adt(
            auth,
            "A08",
            "202611200930",
            c(),
            CHI,
            pid(auth, CHI, street="9 Hai Bà Trưng", phone="0938555666"),
            pv1(auth, v[3], "O", "202611200830"),
        ),
        adt(
            auth,
            "A03",
            "202611201000",
            c(),
            AN,
            pv1(auth, v[1], "O", "202611200800", "202611201000"),
            structure="ADT_A03",
        ),
        adt(
            auth,
            "A03",
            "202611201020",
            c(),
            DUNG,
            pv1(auth, v[4], "O", "202611200840", "202611201020"),
            structure="ADT_A03",
        ),
        adt(auth, "A31", "202611201030", c(), HA, pid(auth, HA, street="5 Hàng Bài", phone="0905999888")),
        adt(auth, "A13", "202611201045", c(), DUNG, pv1(auth, v[4], "O", "202611200840")),
        adt(auth, "A02", "202611201200", c(), BINH, pv1(auth, v[2], "I", "202611200810", room="P401")),
        merge(auth, "202611201300", c(), AN, AN_DUP),
        adt(
            auth,
            "A08",
            "202611201330",
            c(),
            BINH,
            pid(auth, BINH, street="46 Nguyễn Trãi", phone="0903111222"),
        ),
        adt(
            auth,
            "A08",
            "202611201400",
            c(),
            DUNG,
            pid(auth, DUNG, street="5 Tràng Tiền", phone="0987000111"),
            pv1(auth, v[4], "O", "202611200840"),
        ),
        adt(
            auth,
            "A01",
            "202611201500",
            c(),
            HA,
            pid(auth, HA, street="5 Hàng Bài", phone="0905999888"),
            pv1(auth, v[6], "I", "202611201500", room="P210"),
        ),
        siu(auth, "S15", "202611201600", c(), AN, "LH1", "202611251400", "202611251445"),
        adt(
            auth,
            "A08",
            "202611210900",
            c(),
            BINH,
            pid(auth, BINH, street="47 Nguyễn Trãi", phone="0903111333"),
            pv1(auth, v[2], "I", "202611200810", room="P401"),
        ),
        adt(
            auth,
            "A03",
            "202611211000",
            c(),
            BINH,
            pv1(auth, v[2], "I", "202611200810", "202611211000", room="P401"),
            structure="ADT_A03",
        ),
        adt(
            auth, "A08", "202611211100", c(), AN, pid(auth, AN, street="88 Trần Hưng Đạo", phone="0977888999")
        ),
        adt(
            auth,
            "A03",
            "202611221000",
            c(),
            HA,
            pv1(auth, v[6], "I", "202611201500", "202611221000", room="P210"),
            structure="ADT_A03",
        ),
        siu(auth, "S26", "202611251100", c(), CHI, "LH2", "202611251000", "202611251030"),
        adt(
            auth, "A08", "202611251200", c(), CHI, pid(auth, CHI, street="9 Hai Bà Trưng", phone="0938777888")
        ),
    ]

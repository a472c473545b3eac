"""Scan every column of every table for the HL7 samples' personal data in clear (issue #18 item 5).

What a dump or a stolen backup shows: the tables are reflected from the
database itself (not from our metadata), so a table or column added later is
scanned without anyone remembering to list it.  The secrets are read from the
sample messages (names, record numbers, CCCD, BHYT, phones, addresses, birth
dates in the usual spellings), plus the REST test patient's.  ``ALLOWED`` is
the documented allow-list (docs/compliance.md "Side tables at rest").
"""

from __future__ import annotations

from sqlalchemy import Engine, MetaData, select

from fhir_store.search_params import normalize_text
from mappers.hl7_message import parse_message
from tests.mllp.conftest import BAD, GOOD_ORDER, sample

#: (table, column) -> why a sample value may stay there in clear.  Empty: nothing is allowed.
ALLOWED: dict[tuple[str, str], str] = {}

REST_PERSON = ["Trần Thị Lan", "tran thi lan", "001099012345", "HC4010123456789", "987111222", "1992-05-17"]
REST_PERSON += ["19920517", "17/05/1992", "lan.tran@example.vn"]


def _date_spellings(value: str) -> list[str]:
    if len(value) < 8 or not value[:8].isdigit():
        return [value] if value else []
    y, m, d = value[:4], value[4:6], value[6:8]
    return [value[:8], f"{y}-{m}-{d}", f"{d}/{m}/{y}", f"{d}-{m}-{y}"]


def sample_secrets() -> list[str]:
    """Every patient value of the sample messages worth finding, in its usual spellings."""
    found: set[str] = set()
    for name in [*GOOD_ORDER, *BAD]:
        try:
            msg = parse_message(sample(name))
        except Exception:  # bad_no_msh: its PID repeats values of the good samples
            continue
        for seg in msg.segments("PID") + msg.segments("MRG"):
            ids = 3 if seg.name == "PID" else 1
            found.update(r.component(1) for r in seg.repetitions(ids) if len(r.component(1)) >= 4)
            if seg.name != "PID":
                continue
            for rep in seg.repetitions(5):
                family, given, middle = rep.component(1), rep.component(2), rep.component(3)
                full = " ".join(p for p in (family, middle, given) if p)
                found.update({full, normalize_text(full)} if " " in full else set())
                found.update(p for p in (family, given, middle) if len(p) >= 4 or not p.isascii())
            found.update(_date_spellings(seg.field(7)))
            for rep in seg.repetitions(11):
                found.update(p for p in (rep.component(1), rep.component(3)) if p)
            for rep in seg.repetitions(13):
                digits = "".join(c for c in rep.component(1) if c.isdigit())
                if len(digits) >= 9:
                    found.add(digits[-9:])
    # A short ASCII word or number could occur by chance in base64 ciphertext or a timestamp.
    return sorted(v for v in found if not v.isascii() or " " in v or len(v) >= 8)


#: shortest needle looked for inside binary (ciphertext) columns: 2^-48 per position by chance
BINARY_MIN_BYTES = 6


def leaks(engine: Engine, secrets: list[str]) -> list[tuple[str, str, str]]:
    """(table, column, secret) for every secret found in clear in any column of any table."""
    meta = MetaData()
    meta.reflect(engine)
    found: list[tuple[str, str, str]] = []
    wanted = [(s, s.encode()) for s in secrets]
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(select(table)):
                for column, value in zip(table.columns, row, strict=True):
                    if value is None or (table.name, column.name) in ALLOWED:
                        continue
                    binary = isinstance(value, bytes | memoryview)
                    raw = bytes(value) if binary else str(value).encode()
                    # Random ciphertext holds any given 3-byte sequence about once per 16 MiB, so a
                    # short needle ("Võ") is looked for in text only; in binary columns from 6 bytes.
                    found += [
                        (table.name, column.name, s)
                        for s, b in wanted
                        if (not binary or len(b) >= BINARY_MIN_BYTES) and b in raw
                    ]
    return sorted(set(found))

"""The patient's access log as a person reads it: CSV and XLSX with headers in words and Vietnam time.

Why (issue #19; Circular 13/2025/TT-BYT traceability; Law 91/2025/QH15 right to
know who processed one's data): ``carebridge audit export`` gives codes, UUIDs
and UTC instants for machines; a patient, an inspector or a hospital director
needs "who, role, when, why, what, result" in their language and local time.
The CSV starts with a UTF-8 byte order mark so spreadsheet programs read the
Vietnamese correctly (RFC 4180 text, Excel's convention for UTF-8); the XLSX
(openpyxl) has one sheet each for accesses, disclosures and consents.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable

from gateway.console.i18n import local_time
from gateway.console.labels import ACTIONS, CHANNELS, CONSENT_PURPOSES, OUTCOMES, PURPOSE_OF_USE, ROLES, label
from gateway.console.patient_record import PatientRecord

Gettext = Callable[[str], str]
Table = tuple[list[str], list[list[str]]]


def _role(code: str, _: Gettext) -> str:
    return label(ROLES, code, _) if code in ROLES else _(code)


def access_table(record: PatientRecord, _: Gettext) -> Table:
    headers = [
        _("Time (Vietnam)"),
        _("Who"),
        _("Role"),
        _("Purpose of use"),
        _("Action"),
        _("Interaction"),
        _("Outcome"),
    ]
    rows = [
        [
            local_time(a.recorded_us),
            a.who,
            _role(a.role, _),
            label(PURPOSE_OF_USE, a.purpose, _),
            label(ACTIONS, a.action, _),
            a.kind,
            label(OUTCOMES, a.outcome, _),
        ]
        for a in record.accesses
    ]
    return headers, rows


def disclosure_table(record: PatientRecord, _: Gettext) -> Table:
    headers = [_("Time (Vietnam)"), _("CRM"), _("Event"), _("Purposes")]
    rows = [
        [
            local_time(d.created_us),
            d.crm,
            d.event_type,
            ", ".join(label(CONSENT_PURPOSES, p, _) for p in d.purposes),
        ]
        for d in record.disclosures
    ]
    return headers, rows


def consent_table(record: PatientRecord, _: Gettext) -> Table:
    headers = [
        _("Time (Vietnam)"),
        _("Answer"),
        _("Purposes"),
        _("CRM"),
        _("Channel"),
        _("Recorded by"),
        _("Consent"),
    ]
    rows = [
        [
            local_time(c.stored_us),
            _("Granted") if c.granted else _("Withdrawn"),
            ", ".join(label(CONSENT_PURPOSES, p, _) for p in c.purposes),
            ", ".join(c.recipients) or _("every CRM"),
            label(CHANNELS, c.channel, _),
            c.recorded_by,
            f"{c.consent_id}/{c.version}",
        ]
        for c in record.consents
    ]
    return headers, rows


def access_csv(record: PatientRecord, _: Gettext) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    headers, rows = access_table(record, _)
    writer.writerow(headers)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8-sig")


def access_xlsx(record: PatientRecord, _: Gettext) -> bytes:
    from openpyxl import Workbook  # slow to import (docs/benchmarks.md): only when a workbook is asked for

    book = Workbook()
    sheets = (
        (_("Accesses"), access_table),
        (_("Disclosures"), disclosure_table),
        (_("Consents"), consent_table),
    )
    for index, (title, build) in enumerate(sheets):
        sheet = book.active if index == 0 else book.create_sheet()
        assert sheet is not None
        sheet.title = title[:31]  # the XLSX limit on a sheet name
        headers, rows = build(record, _)
        sheet.append(headers)
        for row in rows:
            sheet.append(row)
        for column, header in zip(sheet.columns, headers, strict=False):
            width = max([len(header), *(len(str(cell.value or "")) for cell in column)])
            sheet.column_dimensions[column[0].column_letter].width = min(width + 2, 60)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()

"""Patient lookup and the patient's page for the compliance officer (issue #19).

``/console/patients?q=`` finds a patient by record number (PID-3 MR), CCCD or
name; ``/console/patients/{id}`` shows the consents as a timeline, the
disclosures to each CRM and every access to the record, with exports a person
can read (``.csv``, ``.xlsx``) and a printable page.  Each of them shows
patient data, so each leaves an AuditEvent naming the person and the patients
shown (Circular 13/2025/TT-BYT; ISO/IEC 27001:2022 A.8.15); the query text is
not recorded (a CCCD or a name is patient data).  The reading itself lives in
``gateway.console.patient_record`` and ``gateway.console.access_export``.
"""

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from gateway.auth.sessions import Session
from gateway.console.access_export import (
    access_csv,
    access_table,
    access_xlsx,
    consent_table,
    disclosure_table,
)
from gateway.console.i18n import load_catalog
from gateway.console.patient_record import PatientRecord, find_patients, read_record
from gateway.console.web import console_of, person

#: DICOM 110106 Export: the file leaves carebridge.
EXPORT = "110106"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


router = APIRouter(include_in_schema=False)
PERSON = Depends(person("patients"))


def _gettext(request: Request) -> Callable[[str], str]:
    console = console_of(request)
    catalog = load_catalog(console.language(request))
    return lambda message: catalog.get(message, message)


async def _record_or_404(request: Request, session: Session, patient_id: str) -> PatientRecord | Response:
    console = console_of(request)
    record = await run_in_threadpool(read_record, console.runtime, patient_id)
    if record is None:
        message = _gettext(request)("No such patient")
        return console.page(request, "error.html", session, status=404, message=message)
    return record


@router.get("/console/patients")
async def lookup(request: Request, session: Annotated[Session, PERSON], q: str = "") -> Response:
    console = console_of(request)
    matches = await run_in_threadpool(find_patients, console.runtime.store, q) if q.strip() else []
    if q.strip():
        await console.audit_view(request, session, "patient lookup", tuple(m.id for m in matches))
    return console.page(request, "patients.html", session, q=q, matches=matches, searched=bool(q.strip()))


@router.get("/console/patients/{patient_id}")
async def patient(request: Request, session: Annotated[Session, PERSON], patient_id: str) -> Response:
    console = console_of(request)
    record = await _record_or_404(request, session, patient_id)
    if isinstance(record, Response):
        return record
    await console.audit_view(
        request, session, "patient record (consents, disclosures, accesses)", (patient_id,)
    )
    _ = _gettext(request)
    return console.page(
        request,
        "patient.html",
        session,
        record=record,
        accesses=access_table(record, _),
        disclosures=disclosure_table(record, _),
        consents=consent_table(record, _),
    )


@router.get("/console/patients/{patient_id}/print")
async def printable(request: Request, session: Annotated[Session, PERSON], patient_id: str) -> Response:
    console = console_of(request)
    record = await _record_or_404(request, session, patient_id)
    if isinstance(record, Response):
        return record
    await console.audit_view(request, session, "printable access log", (patient_id,))
    _ = _gettext(request)
    return console.page(
        request,
        "patient_print.html",
        session,
        record=record,
        accesses=access_table(record, _),
        disclosures=disclosure_table(record, _),
        consents=consent_table(record, _),
    )


@router.get("/console/patients/{patient_id}/accesses.{fmt}")
async def export(
    request: Request, session: Annotated[Session, PERSON], patient_id: str, fmt: str
) -> Response:
    console = console_of(request)
    if fmt not in ("csv", "xlsx"):
        return console.page(request, "error.html", session, status=404, message="404")
    record = await _record_or_404(request, session, patient_id)
    if isinstance(record, Response):
        return record
    await console.audit(
        request,
        session,
        event_type=EXPORT,
        subtype="console-export",
        status=200,
        description=f"console: access log export ({fmt})",
        patient_ids=(patient_id,),
    )
    _ = _gettext(request)
    if fmt == "csv":
        body, media = await run_in_threadpool(access_csv, record, _), "text/csv; charset=utf-8"
    else:
        body, media = await run_in_threadpool(access_xlsx, record, _), XLSX
    filename = f"truy-cap-{patient_id}.{fmt}"
    return Response(
        body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )

"""A group commit's units through the CRM hook at once: same events and decisions as one by one."""

from __future__ import annotations

import orjson
from sqlalchemy import select

from audit.schema import audit_event
from consent.purposes import POST_VISIT_CARE
from fhir_store.model import Create, RequestContext, Update
from fhir_store.write_path import WriteUnit
from tests.crm_bridge.conftest import CRM_ID, CrmClient, counter_consent, encounter, full_patient
from tests.http.live import LiveServer


def _ctx(n: int) -> RequestContext:
    return RequestContext(f"req-group-{n}", client_id="his-a", channel="hl7")


def test_units_of_a_group_get_their_events_in_order_and_their_own_decision_records(
    crm_live: LiveServer, crm: CrmClient
) -> None:
    store = crm_live.runtime.store
    setup = RequestContext("req-setup", client_id="his-a")
    patients, encounters = [], []
    for n in range(3):
        pid = store.transact([Create(full_patient())], setup)[0].stored.id  # type: ignore[union-attr]
        if n != 1:  # the second patient never consented: no event, a deny decision
            store.transact([Create(counter_consent(pid, POST_VISIT_CARE))], setup)
        eid = store.transact([Create(encounter(pid, status="in-progress"))], setup)[0].stored.id  # type: ignore[union-attr]
        patients.append(pid)
        encounters.append(eid)
    cursor = max([0, *(e["seq"] for e in crm.feed())])

    units = [
        WriteUnit([Update("Encounter", eid, {**encounter(pid), "id": eid})], _ctx(n))
        for n, (pid, eid) in enumerate(zip(patients, encounters, strict=True))
    ]
    # the first patient's encounter again: unchanged, so nothing more for it
    units.append(
        WriteUnit(
            [Update("Encounter", encounters[0], {**encounter(patients[0]), "id": encounters[0]})], _ctx(3)
        )
    )
    store.transact_group(units)

    events = crm.feed(cursor)
    assert [e["type"] for e in events] == ["encounter.completed", "encounter.completed"]
    pseudonyms = [crm_live.runtime.crm.keys.pseudonym(CRM_ID, p) for p in patients]
    assert [e["subject"] for e in events] == [pseudonyms[0], pseudonyms[2]]
    assert events[0]["seq"] < events[1]["seq"]

    with crm_live.runtime.engine.connect() as conn:
        decisions = [
            orjson.loads(row[0])
            for row in conn.execute(select(audit_event.c.content).order_by(audit_event.c.seq))
            if b"consent-decision" in row[0] and b"req-group-" in row[0]
        ]
    by_request = [(_request_id(e), e["outcome"]) for e in decisions]
    assert by_request == [("req-group-0", "0"), ("req-group-1", "4"), ("req-group-2", "0")]


def _request_id(event: dict[str, object]) -> str:
    text = orjson.dumps(event).decode()
    return next(f"req-group-{n}" for n in range(4) if f"req-group-{n}" in text)

"""Issue #15 item 2, as a property: delivery order does not matter, the newest event wins.

For any sequence of A04/A08/A03/A11/A13 events of one visit, with distinct random
event times, delivered in any order, the stored Patient is the one of the newest
event that states the demographics (A04/A08: full PID) and the stored Encounter
the one of the newest event that states the visit (A04/A03/A11/A13).  Each event
carries different content (address, phone, room), so a wrong winner shows.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common import AuditSettings
from common.identifiers import mrn_system, visit_system
from fhir_store.writer import find_identifier_owner
from gateway.ingest import Ingestor
from gateway.runtime import Runtime
from mappers import map_message, parse_message
from tests.support.hl7_events import Person, adt, pid, pv1
from tests.support.settings import open_settings

AUTH = "BVPROP"
START = datetime(2026, 11, 20, 7, 0)
PATIENT_EVENTS = ("A04", "A08")
VISIT_EVENTS = ("A04", "A03", "A11", "A13")
_run = itertools.count(1)


@pytest.fixture(scope="module")
def runtime() -> Iterator[Runtime]:
    folder = tempfile.mkdtemp(prefix="carebridge-order-")
    rt = Runtime.create(
        open_settings(
            database_url=f"sqlite:///{folder}/o.db", audit=AuditSettings(key_file=f"{folder}/audit.pem")
        )
    )
    yield rt
    rt.close()


def message(run: int, index: int, trigger: str, minute: int) -> bytes:
    person = Person(f"P{run:06d}", "Nguyễn", "An", "Văn", "19850312", "M")
    when = (START + timedelta(minutes=minute)).strftime("%Y%m%d%H%M")
    visit = pv1(
        AUTH,
        f"V{run:06d}",
        "O",
        "202611200700",
        when if trigger == "A03" else "",
        room=f"P{100 + index}",
    )
    control = f"{run}-{index}"
    if trigger in PATIENT_EVENTS:
        full = pid(AUTH, person, street=f"{index} Phố Huế", phone=f"09120000{index:02d}")
        return adt(AUTH, trigger, when, control, person, full, visit)
    return adt(AUTH, trigger, when, control, person, visit, structure="ADT_A03" if trigger == "A03" else "")


def mapped(raw: bytes, resource_type: str) -> dict[str, Any]:
    bundle = map_message(parse_message(raw)).bundle
    resource = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type)
    return {k: v for k, v in resource.items() if k not in ("subject",)}


def stored(rt: Runtime, resource_type: str, system: str, value: str) -> dict[str, Any]:
    with rt.engine.connect() as conn:
        res_id = find_identifier_owner(conn, resource_type, system, rt.store.cipher.blind(value))
    assert res_id is not None
    resource = rt.store.read(resource_type, res_id).resource()
    return {k: v for k, v in resource.items() if k not in ("id", "meta", "subject")}


events = st.lists(
    st.tuples(st.sampled_from(("A04", "A08", "A03", "A11", "A13")), st.integers(0, 24 * 60)),
    min_size=1,
    max_size=7,
    unique_by=lambda e: e[1],
).filter(lambda evs: any(t == "A04" for t, _ in evs))


@given(events, st.randoms(use_true_random=False))
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_any_delivery_order_ends_with_the_newest_event(
    runtime: Runtime, sequence: list[tuple[str, int]], shuffler: Any
) -> None:
    run = next(_run)
    messages = [message(run, i, trigger, minute) for i, (trigger, minute) in enumerate(sequence)]
    order = list(range(len(messages)))
    shuffler.shuffle(order)
    ingestor = Ingestor(runtime.store, runtime.settings)
    for i in order:
        assert ingestor.handle(messages[i]).ack_code == "AA"

    newest_patient = max(
        (i for i, (t, _) in enumerate(sequence) if t in PATIENT_EVENTS), key=lambda i: sequence[i][1]
    )
    newest_visit = max(
        (i for i, (t, _) in enumerate(sequence) if t in VISIT_EVENTS), key=lambda i: sequence[i][1]
    )
    patient = stored(runtime, "Patient", mrn_system(AUTH), f"P{run:06d}")
    assert patient == mapped(messages[newest_patient], "Patient")
    encounter = stored(runtime, "Encounter", visit_system(AUTH), f"V{run:06d}")
    assert encounter == mapped(messages[newest_visit], "Encounter")

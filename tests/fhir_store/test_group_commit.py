"""FhirStore.transact_group: several requests in one transaction, rows sent once, same answers.

Every unit's rows wait in one PendingRows until the last unit, so a later unit
that reads what an earlier one wrote must still see it (identifier claims from
the pending rows, a resource by id or a search after a flush).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection

from fhir_store.model import ConditionalUpdate, Create, RequestContext, ResourceChange, Update
from fhir_store.pipeline import HookPipeline
from fhir_store.repository import FhirStore
from fhir_store.search import parse_query
from fhir_store.write_path import WriteUnit
from tests.fhir_store.conftest import MRN, patient


def _ids(store: FhirStore, mrn: str) -> list[str]:
    page = store.search(parse_query("Patient", [("identifier", f"{MRN}|{mrn}")]))
    return [r.id for r in page.matches]


def test_a_later_unit_finds_an_identifier_an_earlier_unit_claimed(
    store: FhirStore, ctx: RequestContext
) -> None:
    first = Create(patient("G1"), if_none_exist=f"identifier={MRN}|G1")
    second = ConditionalUpdate("Patient", f"identifier={MRN}|G1", patient("G1", gender="female"))
    out = store.transact_group([WriteUnit([first], ctx), WriteUnit([second], ctx)])
    assert out[0][0].status == 201 and out[1][0].status == 200
    assert _ids(store, "G1") == [out[0][0].stored.id]  # type: ignore[union-attr]
    current = store.read("Patient", _ids(store, "G1")[0])
    assert current.version_id == 2 and current.resource()["gender"] == "female"


def test_a_later_unit_updates_what_an_earlier_unit_wrote(store: FhirStore, ctx: RequestContext) -> None:
    units = [
        WriteUnit([Update("Patient", "group-p1", patient("G2", id="group-p1"))], ctx),
        WriteUnit([Update("Patient", "group-p1", patient("G2", id="group-p1", gender="female"))], ctx),
        WriteUnit([Update("Patient", "group-p1", patient("G2", id="group-p1", gender="female"))], ctx),
    ]
    out = store.transact_group(units)
    assert [r[0].status for r in out] == [201, 200, 200] and out[2][0].message == "unchanged"
    assert store.read("Patient", "group-p1").version_id == 2
    assert [e[0].version_id for e in store.history("Patient", "group-p1")[0]] == [2, 1]


def test_a_committed_resource_updated_twice_by_identifier_in_one_group(
    store: FhirStore, ctx: RequestContext
) -> None:
    """The claim lookup reads the owner's current version with it; after an earlier unit of the
    group rewrote that resource, the later unit must plan against the rewritten version."""
    created = store.transact([Create(patient("G5"))], ctx)[0].stored
    assert created is not None
    criteria = f"identifier={MRN}|G5"
    units = [
        WriteUnit([ConditionalUpdate("Patient", criteria, patient("G5", gender="female"))], ctx),
        WriteUnit([ConditionalUpdate("Patient", criteria, patient("G5", gender="male"))], ctx),
        WriteUnit([ConditionalUpdate("Patient", criteria, patient("G5", gender="male"))], ctx),
    ]
    out = store.transact_group(units)
    assert [r[0].status for r in out] == [200, 200, 200]
    assert [r[0].message for r in out][2] == "unchanged"
    assert [r[0].stored.version_id for r in out] == [2, 3, 3]  # type: ignore[union-attr]
    current = store.read("Patient", created.id)
    assert current.version_id == 3 and current.resource()["gender"] == "male"


def test_a_search_condition_sees_an_earlier_units_rows(store: FhirStore, ctx: RequestContext) -> None:
    named = patient("G3", name=[{"family": "Quách", "given": ["Thị", "Nhung"]}])
    again = patient("G3-other", name=[{"family": "Quách", "given": ["Thị", "Nhung"]}])
    out = store.transact_group(
        [
            WriteUnit([Create(named)], ctx),
            WriteUnit([Create(again, if_none_exist="family=Quách&given=Nhung")], ctx),
        ]
    )
    assert out[0][0].status == 201 and out[1][0].status == 200  # matched, not created
    assert _ids(store, "G3-other") == []


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def on_changes(
        self, conn: Connection, changes: Sequence[ResourceChange], context: RequestContext
    ) -> None:
        self.calls.append([f"{context.request_id}:{c.action}" for c in changes])


class _GroupRecorder(_Recorder):
    def on_group_changes(
        self, conn: Connection, batches: Sequence[tuple[Sequence[ResourceChange], RequestContext]]
    ) -> None:
        self.calls.append([f"{ctx.request_id}:{c.action}" for changes, ctx in batches for c in changes])


def test_hooks_see_every_unit_in_order_once_or_unit_by_unit(store: FhirStore) -> None:
    plain, grouped = _Recorder(), _GroupRecorder()
    store.pipeline = HookPipeline.of(("plain", "pre-commit", plain), ("grouped", "group", grouped))
    a, b = (RequestContext(f"r{n}", client_id="t", role="his_integration", channel="hl7") for n in (1, 2))
    unchanged = patient("G5", id="group-p5")
    store.transact([Update("Patient", "group-p5", unchanged)], a)
    plain.calls.clear()
    grouped.calls.clear()
    store.transact_group(
        [
            WriteUnit([Create(patient("G4"))], a),
            WriteUnit([Update("Patient", "group-p5", unchanged)], a),  # no change: no batch
            WriteUnit(
                [
                    Create(patient("G6")),
                    Update("Patient", "group-p5", patient("G5", id="group-p5", gender="female")),
                ],
                b,
            ),
        ]
    )
    assert plain.calls == [["r1:create"], ["r2:create", "r2:update"]]
    assert grouped.calls == [["r1:create", "r2:create", "r2:update"]]


def test_an_identifier_released_by_an_earlier_unit_is_free_for_a_later_one(
    store: FhirStore, ctx: RequestContext
) -> None:
    """A claim released by an earlier unit (an immediate DELETE) is free for a later unit's create."""
    old = store.transact([Create(patient("G7"))], ctx)[0].stored
    assert old is not None
    renumbered = patient("G7-new", id=old.id)
    newcomer = Create(patient("G7", gender="female"), if_none_exist=f"identifier={MRN}|G7")
    other = Create(patient("G8"), if_none_exist=f"identifier={MRN}|G8")
    out = store.transact_group(
        [WriteUnit([Update("Patient", old.id, renumbered)], ctx), WriteUnit([newcomer, other], ctx)]
    )
    assert out[1][0].status == 201 and out[1][0].stored is not None
    assert _ids(store, "G7") == [out[1][0].stored.id] != [old.id]
    assert _ids(store, "G7-new") == [old.id]

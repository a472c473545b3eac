"""Encryption at rest in the store, on both backends: sealed rows, blind indexes, key checks, rotation.

Every assertion about "not in clear" reads the raw database rows, not the API:
the point is what a database dump would show.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, select, text, update

from common.errors import InvalidInput
from common.keyring import KeyMaterialError
from common.settings import Settings
from fhir_store import journal
from fhir_store.blind_index import reindex
from fhir_store.content_cipher import ENV_KEYS, MAGIC, SealedDataError, StoreKeys, envelope_kid
from fhir_store.database import make_engine, writer
from fhir_store.key_registry import open_cipher, rotate_blind_key
from fhir_store.model import Create, RequestContext, StoredResource, Update
from fhir_store.repository import FhirStore
from fhir_store.rewrap import keys_in_use, rewrap
from fhir_store.schema import (
    hl7_journal,
    identifier_claim,
    resource_current,
    resource_version,
    search_token,
    store_key,
)
from fhir_store.search import parse_query
from tests.fhir_store.conftest import MRN, patient

CCCD = "https://id.carebridge.vn/cccd"
SECRETS = ("079085001234", "912345678", "an.nguyen@example.vn")


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url, pool_size=8)
    yield eng
    eng.dispose()


@pytest.fixture
def key_file(tmp_path: Path) -> str:
    return str(tmp_path / "keys" / "store-keys.json")


@pytest.fixture
def keyed(engine: Engine, key_file: str) -> FhirStore:
    return FhirStore(engine, cipher=open_cipher(engine, key_file))


def an(mrn: str = "ENC1", cccd: str = "079085001234", **overrides: object) -> dict[str, object]:
    return patient(
        mrn,
        identifier=[{"system": MRN, "value": mrn}, {"system": CCCD, "value": cccd}],
        telecom=[
            {"system": "phone", "value": "+84912345678"},
            {"system": "email", "value": "an.nguyen@example.vn"},
        ],
        **overrides,
    )


def create(store: FhirStore, ctx: RequestContext, body: dict[str, object]) -> StoredResource:
    stored = store.transact([Create(body)], ctx)[0].stored
    assert stored is not None
    return stored


def raw_rows(engine: Engine) -> bytes:
    """Every column of the tables a dump would show, as bytes."""
    out = bytearray()
    with engine.connect() as conn:
        for table in (resource_current, resource_version, search_token, identifier_claim):
            for row in conn.execute(select(table)):
                for value in row:
                    out += value if isinstance(value, bytes) else str(value).encode()
                    out += b"\x00"
    return bytes(out)


def ids(store: FhirStore, *params: tuple[str, str]) -> set[str]:
    return {m.id for m in store.search(parse_query("Patient", list(params))).matches}


def test_rows_are_sealed_and_identifiers_blinded_yet_searchable(
    keyed: FhirStore, engine: Engine, ctx: RequestContext
) -> None:
    pid = create(keyed, ctx, an()).id
    dump = raw_rows(engine)
    for secret in SECRETS:
        assert secret.encode() not in dump, secret
    with engine.connect() as conn:
        content = conn.execute(select(resource_current.c.content)).scalar_one()
    assert bytes(content).startswith(MAGIC) and envelope_kid(bytes(content)) == "c1"
    assert keyed.read("Patient", pid).resource()["telecom"][1]["value"] == "an.nguyen@example.vn"
    # every lookup form still finds the patient
    assert ids(keyed, ("identifier", f"{CCCD}|079085001234")) == {pid}
    assert ids(keyed, ("identifier", "079085001234")) == {pid}
    assert ids(keyed, ("identifier", f"{CCCD}|")) == {pid}  # the system is kept in clear
    assert ids(keyed, ("phone", "0912345678")) == {pid}  # local form → E.164
    assert ids(keyed, ("phone", "+84912345678"), ("email", "an.nguyen@example.vn")) == {pid}
    assert ids(keyed, ("telecom", "phone|+84912345678")) == {pid}
    assert ids(keyed, ("identifier", f"{CCCD}|079085001235")) == set()
    assert ids(keyed, ("email:missing", "false")) == {pid}
    # conditional create finds the owner through the blinded claim
    again = keyed.transact([Create(an("ENC1b"), if_none_exist=f"identifier={CCCD}|079085001234")], ctx)[0]
    assert again.status == 200 and again.stored is not None and again.stored.id == pid


@pytest.mark.parametrize("param", ["identifier:contains", "phone:exact", "email:contains", "telecom:exact"])
def test_substring_search_on_blinded_values_is_a_clear_400(keyed: FhirStore, param: str) -> None:
    with pytest.raises(InvalidInput) as info:
        keyed.search(parse_query("Patient", [(param, "0790")]))
    assert info.value.http_status == 400 and "exact value only" in info.value.message


def test_swapped_ciphertext_fails_to_decrypt(keyed: FhirStore, engine: Engine, ctx: RequestContext) -> None:
    first, second = create(keyed, ctx, an("SW1")), create(keyed, ctx, patient("SW2"))
    rc = resource_current
    with writer(engine).begin() as conn:
        blob = conn.execute(select(rc.c.content).where(rc.c.res_id == first.id)).scalar_one()
        conn.execute(update(rc).where(rc.c.res_id == second.id).values(content=blob))
    with pytest.raises(SealedDataError) as info:
        keyed.read("Patient", second.id)
    assert info.value.http_status == 500 and f"Patient/{second.id} version 1" in str(info.value)
    assert "079085001234" not in str(info.value)
    # an old version pasted over the current one is refused too (the version is bound)
    keyed.transact([Update("Patient", first.id, an("SW1", gender="female"))], ctx)
    rv = resource_version
    with writer(engine).begin() as conn:
        v1 = conn.execute(select(rv.c.content).where(rv.c.res_id == first.id, rv.c.version == 1)).scalar_one()
        conn.execute(update(rc).where(rc.c.res_id == first.id).values(content=v1))
    with pytest.raises(SealedDataError):
        keyed.read("Patient", first.id)


def test_legacy_plaintext_rows_stay_readable(keyed: FhirStore, engine: Engine, ctx: RequestContext) -> None:
    stored = create(keyed, ctx, an("LEG1"))
    plain = keyed.read("Patient", stored.id).content
    assert plain is not None and plain.startswith(b"{")
    with writer(engine).begin() as conn:  # as written before encryption existed
        conn.execute(update(resource_current).values(content=plain))
        conn.execute(update(resource_version).values(content=plain))
    assert keyed.read("Patient", stored.id).content == plain
    assert keyed.vread("Patient", stored.id, 1).content == plain
    assert ids(keyed, ("identifier", f"{MRN}|LEG1")) == {stored.id}


def test_legacy_index_is_rebuilt_blinded_on_first_start(
    database_url: str, engine: Engine, key_file: str, ctx: RequestContext
) -> None:
    store = FhirStore(engine, cipher=open_cipher(engine, key_file))
    pid = create(store, ctx, an("OLD1")).id
    # Turn the database into one written before blinding: clear claims and tokens, no key registry.
    with writer(engine).begin() as conn:
        conn.execute(delete(store_key))
        conn.execute(update(identifier_claim).values(value=text("'clear-' || res_id")))
        conn.execute(delete(search_token).where(search_token.c.param.in_(["identifier", "phone", "email"])))
    fresh = make_engine(database_url, pool_size=2)
    try:
        reopened = FhirStore(fresh, cipher=open_cipher(fresh, key_file))  # first start: rebuilds the index
        assert ids(reopened, ("identifier", f"{CCCD}|079085001234")) == {pid}
        assert ids(reopened, ("phone", "0912345678")) == {pid}
        assert b"clear-" not in raw_rows(fresh)
    finally:
        fresh.dispose()


def test_a_missing_or_different_key_file_is_refused(engine: Engine, keyed: FhirStore, tmp_path: Path) -> None:
    _ = keyed  # the database now has rows under the keys of ``key_file``
    missing = tmp_path / "nowhere" / "store-keys.json"
    with pytest.raises(KeyMaterialError, match="does not exist"):
        open_cipher(engine, str(missing))
    assert not missing.exists()  # never silently replaced by new keys
    other = tmp_path / "other.json"
    StoreKeys.create(str(other))  # another site's (or a freshly generated) key file
    with pytest.raises(KeyMaterialError, match="not the key this database was written with"):
        open_cipher(engine, str(other))
    # the same keys through the environment variable are accepted
    env = {ENV_KEYS: Path(keyed.cipher.keys.location).read_text(), "CAREBRIDGE_STORE_KEY_FILE": str(missing)}
    assert open_cipher(engine, Settings.from_env(env).store.key_source).content_kid == "c1"
    assert oct(Path(keyed.cipher.keys.location).stat().st_mode & 0o777) == "0o600"


def test_rotation_then_rewrap_moves_every_row_to_the_new_key(
    keyed: FhirStore, engine: Engine, key_file: str, ctx: RequestContext
) -> None:
    old_ids = [create(keyed, ctx, an(f"ROT{i}", cccd=f"07908500000{i}")).id for i in range(3)]
    keyed.transact([Update("Patient", old_ids[0], patient("ROT0", gender="female"))], ctx)
    rotating = open_cipher(engine, key_file)  # what `carebridge store rotate-key` does
    assert rotating.keys.rotate_content() == ("c1", "c2")
    after = FhirStore(engine, cipher=open_cipher(engine, key_file))  # a process started after the rotation
    new_id = create(after, ctx, patient("ROT9")).id
    before = keys_in_use(engine)
    assert before["resource_current"] == {"c1": 3, "c2": 1}
    # rows written before the rotation stay readable, by old and new processes alike
    assert {after.read("Patient", i).id for i in old_ids} == set(old_ids)
    assert keyed.read("Patient", new_id).id == new_id  # reloaded the key file on the unknown key id
    report = rewrap(engine, after.cipher, batch=2)
    assert report.rewritten == {"resource_version": 4, "resource_current": 3, "hl7_journal": 0}
    assert report.retired == ["c1"]
    assert keys_in_use(engine) == {
        "resource_version": {"c2": 5},
        "resource_current": {"c2": 4},
        "hl7_journal": {},
    }
    assert after.vread("Patient", old_ids[0], 1).resource()["gender"] == "male"
    assert after.read("Patient", old_ids[0]).resource()["gender"] == "female"
    assert ids(after, ("identifier", f"{MRN}|ROT1")) == {old_ids[1]}
    # c1 may now leave the key file: a start without it is accepted
    data = json.loads(Path(key_file).read_text())
    del data["content"]["keys"]["c1"]
    Path(key_file).write_text(json.dumps(data))
    assert open_cipher(engine, key_file).content_kid == "c2"


def test_blind_key_rotation_rebuilds_the_index(
    keyed: FhirStore, engine: Engine, key_file: str, ctx: RequestContext
) -> None:
    pid = create(keyed, ctx, an("BK1")).id
    with writer(engine).begin() as conn:
        old, new, count = rotate_blind_key(conn, keyed.cipher)
    assert (old, new, count) == ("b1", "b2", 1)
    assert ids(keyed, ("identifier", f"{CCCD}|079085001234"), ("phone", "0912345678")) == {pid}
    restarted = FhirStore(engine, cipher=open_cipher(engine, key_file))
    assert restarted.cipher.blind_kid == "b2"
    assert ids(restarted, ("identifier", f"{MRN}|BK1")) == {pid}
    with engine.connect() as conn:
        values = [str(v) for v in conn.execute(select(identifier_claim.c.value)).scalars()]
    assert len(values) == 2 and all(v.startswith("b2.") for v in values)
    with writer(engine).begin() as conn:  # `carebridge store reindex` without rotation: same result
        assert reindex(conn, restarted.cipher.open_resource, restarted.cipher.blind) == 1
    assert ids(restarted, ("identifier", f"{CCCD}|079085001234")) == {pid}


def test_journal_raw_is_sealed_bound_to_its_sender_and_legacy_rows_open(
    keyed: FhirStore, engine: Engine
) -> None:
    pid_segment = b"PID|1||BN1^^^BVDK_HN^MR~079085001234^^^BCA^NI||Nguyen^An||19850312|M|||||0912345678\r"

    def journal_row(control_id: str) -> int:
        row_id = journal.insert_message(
            engine,
            raw=b"MSH|^~\\&|HIS_VN|BVDK_HN|GW|CRM|20261120||ADT^A04|"
            + control_id.encode()
            + b"|P|2.5\r"
            + pid_segment,
            peer="10.0.0.1",
            sending_application="HIS_VN",
            sending_facility="BVDK_HN",
            control_id=control_id,
            message_type="ADT^A04",
            cipher=keyed.cipher,
        )
        assert row_id is not None
        return row_id

    first, second, legacy = journal_row("J1"), journal_row("J2"), journal_row("J3")
    assert journal_row_raw(engine, first).startswith(MAGIC) and b"079085001234" not in journal_row_raw(
        engine, first
    )
    entry = journal.load(engine, first, keyed.cipher)
    assert entry is not None and pid_segment in entry.raw
    # duplicate detection still works on the clear sender + control id
    assert (
        journal.insert_message(
            engine,
            raw=b"x",
            peer="",
            sending_application="HIS_VN",
            sending_facility="BVDK_HN",
            control_id="J1",
            message_type="",
            cipher=keyed.cipher,
        )
        is None
    )
    found = journal.find_duplicate(engine, "HIS_VN", "BVDK_HN", "J1", keyed.cipher)
    assert found is not None and found.raw == entry.raw
    with writer(engine).begin() as conn:  # ciphertext of J1 pasted onto J2's row
        conn.execute(
            update(hl7_journal).where(hl7_journal.c.id == second).values(raw=journal_row_raw(engine, first))
        )
        conn.execute(
            update(hl7_journal).where(hl7_journal.c.id == legacy).values(raw=b"MSH|legacy\r" + pid_segment)
        )
    with pytest.raises(SealedDataError, match="HL7 journal message J2"):
        journal.load(engine, second, keyed.cipher)
    old = journal.load(engine, legacy, keyed.cipher)  # journaled before encryption: plaintext, readable
    assert old is not None and old.raw == b"MSH|legacy\r" + pid_segment
    with writer(engine).begin() as conn:
        conn.execute(delete(hl7_journal).where(hl7_journal.c.id == second))
    assert rewrap(engine, keyed.cipher).rewritten["hl7_journal"] == 1
    assert keys_in_use(engine)["hl7_journal"] == {"c1": 2}
    reread = journal.load(engine, legacy, keyed.cipher)
    assert reread is not None and reread.raw == old.raw


def journal_row_raw(engine: Engine, row_id: int) -> bytes:
    with engine.connect() as conn:
        return bytes(conn.execute(select(hl7_journal.c.raw).where(hl7_journal.c.id == row_id)).scalar_one())

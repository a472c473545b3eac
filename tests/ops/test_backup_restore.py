"""Backup → wipe → restore → verify on both backends, through the real runtime and the CLI.

Data is created the way production creates it: FHIR Patients through
``FhirStore.transact`` with the runtime's audit hook attached, an ADT^A04
through the HL7 ingest service (journal + mapped resources), and audited reads.
A restore must bring back exactly the same resources and versions, and an audit
chain that ``carebridge audit verify`` accepts with the same event count; a
tampered, truncated or wrongly-keyed archive must be refused without touching
the target database.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from common import AuditSettings
from fhir_store.database import make_engine
from fhir_store.model import Create, RequestContext, Update
from fhir_store.schema import hl7_journal, resource_current, resource_version
from gateway.cli import main
from gateway.ingest import Ingestor
from gateway.mllp.client import parse_ack
from gateway.runtime import Runtime
from tests.support.postgres import PostgresCluster
from tests.support.settings import open_settings

CTX = RequestContext(
    request_id="req-ops-1",
    client_id="his-bvdk",
    role="his_integration",
    channel="rest",
    source_address="10.1.2.3",
    purpose_of_use="TREAT",
    # what authentication puts on a REST context: the store's scope-policy stage checks it
    grants=("system/Patient.cruds",),
)

A04 = (
    "MSH|^~\\&|HIS_OLD|PK_CU|GW|CRM|20261120083000||ADT^A04|OPS1|P|2.5|||||VNM|UNICODE UTF-8\r"
    "PID|1||MR-OPS-1^^^PK_CU^MR||Trần^Bình^Thị||19900101|F\r"
).encode()


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every resource version, the current pointers and the HL7 journal, in a stable order."""
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            return {
                table.name: sorted(tuple(row) for row in conn.execute(select(table)))
                for table in (resource_version, resource_current, hl7_journal)
            }
    finally:
        engine.dispose()


def populate(url: str, audit_key: Path) -> list[str]:
    """Patients (one updated to version 2), an HL7 ADT^A04, audited reads; returns the Patient ids."""
    runtime = Runtime.create(
        open_settings(database_url=url, audit=AuditSettings(key_file=str(audit_key))), migrate=False
    )
    try:
        ids = []
        for family, given in (("Nguyễn", ["Văn", "An"]), ("Lê", ["Thị", "Hà"])):
            patient = {"resourceType": "Patient", "name": [{"family": family, "given": given}]}
            result = runtime.store.transact([Create(patient)], CTX)
            assert result[0].stored is not None
            ids.append(result[0].stored.id)
        updated = {"resourceType": "Patient", "id": ids[0], "gender": "male", "name": [{"family": "Nguyễn"}]}
        runtime.store.transact([Update("Patient", ids[0], updated)], CTX)
        outcome = Ingestor(runtime.store, runtime.settings).handle(A04)
        assert parse_ack(outcome.acks[0]).code == "AA"
        for pid in ids:
            runtime.store.read("Patient", pid, context=CTX)
    finally:
        runtime.close()  # flushes buffered access events into the chain
    return ids


@pytest.fixture(autouse=True)
def tombstone_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The erasure tombstone file a running carebridge keeps (empty: no erasure yet); restore needs it."""
    path = tmp_path / "var" / "erasure-tombstones.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    monkeypatch.setenv("CAREBRIDGE_PRIVACY_TOMBSTONE_FILE", str(path))
    return path


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "keys" / "backup.key", tmp_path / "keys" / "audit.pem"


@pytest.fixture
def empty_database(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A second, never-migrated database on the same backend: the "wiped" target."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'restored' / 'carebridge.db'}"
        return
    cluster: PostgresCluster = request.getfixturevalue("fast_pg_cluster")
    name = f"r_{uuid.uuid4().hex}"
    url = cluster.create_database(name)
    yield url
    cluster.drop_database(name)


def verify_line(url: str, audit_key: Path) -> str:
    code, out, err = run_cli("audit", "verify", "--database-url", url, "--key-file", str(audit_key))
    assert code == 0, out + err
    return out.strip()


@pytest.mark.slow
def test_backup_wipe_restore_verify(
    database_url: str, empty_database: str, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    backup_key, audit_key = keys
    populate(database_url, audit_key)
    archive = tmp_path / "out" / "carebridge.cbbackup"

    code, out, err = run_cli(
        "backup", "--database-url", database_url, "--output", str(archive),
        "--key-file", str(backup_key), "--audit-key-file", str(audit_key),
    )  # fmt: skip
    assert code == 0, err
    assert "created a new backup key" in err and "AES-256-GCM" in out
    assert backup_key.stat().st_mode & 0o777 == 0o600 and archive.stat().st_mode & 0o777 == 0o600
    before = snapshot(database_url)
    line = verify_line(database_url, audit_key)  # includes the backup's own AuditEvent
    assert line.startswith("ok ") and int(line.split()[1]) >= 7
    assert "Nguyễn".encode() not in archive.read_bytes() and b"PK_CU" not in archive.read_bytes()

    # restore into a brand-new empty database (the original is "lost")
    code, out, err = run_cli(
        "restore", "--database-url", empty_database, "--input", str(archive),
        "--key-file", str(backup_key), "--audit-key-file", str(audit_key),
    )  # fmt: skip
    assert code == 0, err
    assert f"audit: {line}" in out and "tombstones re-applied: 0" in out
    assert snapshot(empty_database) == before
    assert verify_line(empty_database, audit_key) == line

    # restore over a database that moved on after the backup: back to the backed-up state
    populate(database_url, audit_key)
    assert snapshot(database_url) != before
    code, out, err = run_cli(
        "restore", "--database-url", database_url, "--input", str(archive),
        "--key-file", str(backup_key), "--audit-key-file", str(audit_key),
    )  # fmt: skip
    assert code == 0, err
    assert snapshot(database_url) == before
    assert verify_line(database_url, audit_key) == line

    # the restored database is a working carebridge database: it takes new writes and stays verifiable
    populate(database_url, audit_key)
    assert verify_line(database_url, audit_key).startswith("ok ")


def _mutate_middle(data: bytes) -> bytes:
    i = len(data) // 2
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]


def _mutate_backend(data: bytes) -> bytes:
    return data[:9] + bytes([3 - data[9]]) + data[10:]  # sqlite <-> postgresql in the header


MUTATIONS: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "flipped byte": (_mutate_middle, "tampered"),
    "truncated": (lambda data: data[:-10], "truncated"),
    "appended": (lambda data: data + b"\0" * 20, "tampered"),
    "edited header": (_mutate_backend, "tampered"),
    "not an archive": (lambda data: b"SQLite format 3\0" + data[16:], "not a carebridge backup"),
}


def test_tampered_archives_and_wrong_keys_are_refused(
    database_url: str, empty_database: str, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    backup_key, audit_key = keys
    populate(database_url, audit_key)
    archive = tmp_path / "a.cbbackup"
    code, _, err = run_cli(
        "backup", "--database-url", database_url, "--output", str(archive),
        "--key-file", str(backup_key), "--audit-key-file", str(audit_key),
    )  # fmt: skip
    assert code == 0, err
    before = snapshot(database_url)
    data = archive.read_bytes()

    def restore(path: Path, key: Path, target: str = database_url) -> tuple[int, str]:
        code, out, err = run_cli(
            "restore", "--database-url", target, "--input", str(path),
            "--key-file", str(key), "--audit-key-file", str(audit_key),
        )  # fmt: skip
        return code, out + err

    for name, (mutate, message) in MUTATIONS.items():
        bad = tmp_path / f"bad-{name.replace(' ', '-')}.cbbackup"
        bad.write_bytes(mutate(data))
        code, text = restore(bad, backup_key)
        assert code == 1 and message in text, (name, text)

    other_key = tmp_path / "other.key"
    other_key.write_bytes(bytes(range(32)))
    code, text = restore(archive, other_key)
    assert code == 1 and "wrong backup key" in text

    code, text = restore(archive, tmp_path / "missing.key")
    assert code == 1 and "does not exist" in text and not (tmp_path / "missing.key").exists()

    assert snapshot(database_url) == before  # nothing was touched by the refused restores
    code, text = restore(archive, backup_key, empty_database)  # and the genuine archive still works
    assert code == 0, text

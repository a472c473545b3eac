"""``carebridge restore`` and the erasure tombstone file (issue #18 item 7), both backends.

Without the file a restore is refused before the database is touched, unless the
operator passes ``--without-tombstones``; every restore lists the erasures it
re-applied (request ids), so none is silently lost or silently repeated.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from consent.rights.tombstones import append_to_file, subject_hashes
from crm_bridge.schema import crm_pseudonym
from fhir_store import FhirStore, make_engine, open_cipher
from tests.ops.test_backup_restore import keys, populate, run_cli, snapshot, tombstone_file  # noqa: F401


def _backup(database_url: str, keys: tuple[Path, Path], archive: Path) -> None:  # noqa: F811
    backup_key, audit_key = keys
    code, _, err = run_cli(
        "backup", "--database-url", database_url, "--output", str(archive),
        "--key-file", str(backup_key), "--audit-key-file", str(audit_key),
    )  # fmt: skip
    assert code == 0, err


def _restore(database_url: str, keys: tuple[Path, Path], archive: Path, *extra: str) -> tuple[int, str, str]:  # noqa: F811
    backup_key, audit_key = keys
    return run_cli(
        "restore", "--database-url", database_url, "--input", str(archive),
        "--key-file", str(backup_key), "--audit-key-file", str(audit_key), *extra,
    )  # fmt: skip


@pytest.mark.slow
def test_restore_needs_the_tombstone_file_and_lists_what_it_reapplied(
    database_url: str,
    keys: tuple[Path, Path],  # noqa: F811
    tombstone_file: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = populate(database_url, keys[1])
    archive = tmp_path / "b.cbbackup"
    _backup(database_url, keys, archive)
    populate(database_url, keys[1])  # the database moves on after the backup
    moved_on = snapshot(database_url)

    # 1. the file is missing: refused, nothing touched
    missing = tmp_path / "lost" / "erasure-tombstones.jsonl"
    monkeypatch.setenv("CAREBRIDGE_PRIVACY_TOMBSTONE_FILE", str(missing))
    code, out, err = _restore(database_url, keys, archive)
    assert code == 1 and "--without-tombstones" in err and str(missing) in err, out + err
    assert snapshot(database_url) == moved_on

    # 2. told explicitly: restored, and it says the erasures were not re-applied
    code, out, err = _restore(database_url, keys, archive, "--without-tombstones")
    assert code == 0, err
    assert "tombstones re-applied: 0" in out and "erasures re-applied: skipped (--without-tombstones)" in out
    assert "not re-applied" in err

    # 3. an erasure made after the backup: re-applied and listed by request id
    engine = make_engine(database_url, pool_size=1)
    try:
        cipher = open_cipher(engine, "var/store-keys.json")
        patient = FhirStore(engine, cipher=cipher).read("Patient", ids[1]).resource()
        hashes = subject_hashes(patient, cipher)
    finally:
        engine.dispose()
    assert hashes
    append_to_file(
        tombstone_file,
        [
            {"request_id": "req-after-backup", "subject_hash": h, "kind": kind, "erased_us": 1,
             "scope": "{}", "legal_basis": "Law 91/2025/QH15 Art. 14"}
            for h, kind in hashes
        ],
    )  # fmt: skip
    monkeypatch.setenv("CAREBRIDGE_PRIVACY_TOMBSTONE_FILE", str(tombstone_file))
    code, out, err = _restore(database_url, keys, archive)
    assert code == 0, err
    assert "tombstones re-applied: 1" in out and "erasures re-applied: req-after-backup" in out
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            assert (
                conn.execute(select(crm_pseudonym).where(crm_pseudonym.c.patient_id == ids[1])).first()
                is None
            )
        relabelled = FhirStore(engine, cipher=open_cipher(engine, "var/store-keys.json")).read(
            "Patient", ids[1]
        )
    finally:
        engine.dispose()
    assert any(s["code"] == "R" for s in relabelled.resource()["meta"]["security"])

"""Tables of the audit trail (registered on the store's shared ``metadata``).

Why it looks like this (ISO/IEC 27001:2022 A.8.15 logging, A.5.33 protection of
records; IHE BALP):

* ``audit_event`` is append-only: one row per FHIR AuditEvent.  ``content`` holds
  the canonical JSON bytes (orjson, sorted keys) of the AuditEvent exactly as
  hashed; the other columns are a search index derived from it (they are
  re-checked against ``content`` by the verifier, so editing an index column
  is detected too).
* ``hash = SHA-256(prev_hash || content)`` links every row to its predecessor,
  so editing, deleting, inserting or reordering rows breaks the chain at the
  first tampered row.  ``seq`` is the chain position (gap-free by construction:
  the writer assigns ``last seq + 1`` under the chain lock rather than relying
  on a database sequence, which can leave gaps on rollback).  ``mac`` is an
  HMAC of ``hash`` under a key kept outside the database, so even a row whose
  chain hash was recomputed by an attacker is caught.
* ``audit_event_patient`` lists the patients of events that involve more than
  one (a search result), so "who accessed patient X" is an indexed query.
* ``audit_checkpoint`` stores Ed25519 signatures over the chain head every N
  events: an attacker who can rewrite the whole chain (DB superuser) still
  cannot forge a checkpoint without the private key, which lives outside the
  database.
* On PostgreSQL, migration ``0002`` adds triggers that reject UPDATE, DELETE and
  TRUNCATE, and a ``carebridge_app`` NOLOGIN role with INSERT/SELECT only on
  these tables (see ``docs``/``audit/README`` in the migration docstring).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, LargeBinary, String, Table

from fhir_store.schema import metadata

AUDIT_TABLES = ("audit_event", "audit_event_patient", "audit_checkpoint")

audit_event = Table(
    "audit_event",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("recorded_us", BigInteger, nullable=False),
    Column("action", String(1), nullable=False),
    Column("type", String(40), nullable=False),
    Column("subtype", String(40), nullable=True),
    Column("outcome", String(2), nullable=False),
    Column("agent", String(128), nullable=True),
    Column("patient_id", String(64), nullable=True),
    Column("entity", String(128), nullable=True),
    Column("purpose", String(64), nullable=True),
    Column("request_id", String(128), nullable=True),
    Column("content", LargeBinary, nullable=False),
    Column("prev_hash", LargeBinary, nullable=False),
    Column("hash", LargeBinary, nullable=False),
    # HMAC-SHA256(audit key, hash): a forged row with a correctly recomputed chain
    # hash is still detected, because the attacker lacks the key file.
    Column("mac", LargeBinary, nullable=False),
    Index(None, "recorded_us"),
    Index(None, "patient_id", "recorded_us"),
    Index(None, "agent", "recorded_us"),
    Index(None, "entity"),
)

audit_event_patient = Table(
    "audit_event_patient",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("patient_id", String(64), primary_key=True),
    Index(None, "patient_id", "seq"),
)

audit_checkpoint = Table(
    "audit_checkpoint",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("created_us", BigInteger, nullable=False),
    Column("hash", LargeBinary, nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("signature", LargeBinary, nullable=False),
)

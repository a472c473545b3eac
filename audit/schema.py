"""Tables of the audit trail (on the audit package's own ``metadata``, registered by ``audit.registration``).

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
* ``audit_event_key`` is the search index for the two random-valued filters,
  patient and entity (migration ``0008``): one row per patient of an event
  (``Patient/<id>``, ``patient`` true) and one for the entity's unversioned
  reference unless it is one of those patients -- so a Patient read or
  change, the commonest event, has a single key row instead of an entry in a
  patient index *and* an entity index on ``audit_event``.  Why: each
  random-key B-tree insert costs SQLite CPU per event (more as the trail
  outgrows the page cache), the largest part of an audited read on SQLite
  (docs/benchmarks.md, "Design figures").  Its primary key ``(seq, key)`` is written in
  chain order (cheap, and lets the verifier and the export read an event's
  keys by ``seq``); ``(key, seq)`` serves the searches.  The verifier
  re-derives every event's key rows from its content, so a deleted, edited
  or added key row is detected like an edited column.
* ``audit_checkpoint`` stores Ed25519 signatures over the chain head every N
  events: an attacker who can rewrite the whole chain (DB superuser) still
  cannot forge a checkpoint without the private key, which lives outside the
  database.
* On PostgreSQL, migration ``0002`` adds triggers that reject UPDATE, DELETE and
  TRUNCATE, and a ``carebridge_app`` NOLOGIN role with INSERT/SELECT only on
  these tables (see ``docs``/``audit/README`` in the migration docstring).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, LargeBinary, String, Table

from fhir_store import new_metadata

AUDIT_TABLES = ("audit_event", "audit_event_key", "audit_checkpoint")

metadata = new_metadata()

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
    # patient and entity are searched through audit_event_key (random keys cost most per insert)
    Index(None, "recorded_us"),
    Index(None, "agent", "recorded_us"),
)

audit_event_key = Table(
    "audit_event_key",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    #: ``Patient/<id>`` (ids clipped to 64 like ``patient_id``) or the entity without ``/_history/<v>``
    Column("key", String(128), primary_key=True),
    #: the key names a patient of the event (not only its entity)
    Column("patient", Boolean, nullable=False),
    Index(None, "key", "patient", "seq"),  # covers both searches without a table lookup
    # one B-tree on SQLite: the rows are the primary key's entries
    sqlite_with_rowid=False,
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

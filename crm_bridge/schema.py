"""Tables of the CRM bridge (own ``metadata``, registered by ``crm_bridge.registration``; migration ``0004``).

* ``crm_outbox`` — the transactional outbox: one row per event per CRM,
  inserted by the store hook inside the write transaction, so an event exists
  iff its change committed.  ``seq`` is the change-feed cursor; inserts are
  serialized (SQLite: one writer; PostgreSQL: an advisory transaction lock),
  so ``seq`` order is commit order and a reader can never skip a row that
  commits later with a smaller ``seq``.  ``payload`` is AES-GCM sealed
  (``key_id``) because it may carry consented contact data (Decree 356 Art. 9).
  The columns sealed under the CRM field key (this one, the webhook
  ``secret`` and the booking ``message``) are listed in
  ``crm_bridge.field_keys.FIELD_SEALED``: ``carebridge crm rewrap-fields``
  moves them to a rotated key.
* ``crm_pseudonym`` — the link pseudonym → patient per CRM and key id: the
  only way back from a pseudonym (re-identification, bookings, erasure).
* ``crm_disclosure`` — the purposes last announced to a CRM per patient, so a
  ``consent.changed`` goes out exactly when the answer changes.
* ``crm_subscription`` / ``crm_dead_letter`` — webhooks (cursor and retry
  state per subscription; sealed signing secret) and events given up on.
* ``crm_feed_start`` — where each CRM's feed begins: the outbox head when
  its OAuth client was registered (migration ``0016``); a CRM never reads
  events written before it existed unless an operator grants a backlog
  (``carebridge crm grant-backlog``, audited).
* ``crm_his_outbox`` — SIU^S12 booking requests waiting for the HIS ACK.
  ``last_error`` holds the HIS's free-text answer (ERR/MSA-3 may name the
  patient), so it is sealed under the store's content key
  (``fhir_store.sealed_columns``: moved by ``carebridge store rewrap``;
  migration ``0009`` widened it to Text).

What stays in clear and why (docs/compliance.md "Side tables at rest"):
internal patient ids, pseudonyms and their key ids (keyed HMACs; the link table
is the re-identification path and is destroyed on erasure), purposes,
statuses, counters, webhook URLs and error classes (``HTTP 503``, exception
names: never response bodies).  ``projection_hash`` is a keyed HMAC
(``KeyStore.projection_digest``) so a guessed name and phone cannot be
confirmed against it.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, LargeBinary, String, Table, Text

from fhir_store import SealedText, SequenceId, new_metadata

metadata = new_metadata()

crm_outbox = Table(
    "crm_outbox",
    metadata,
    Column("seq", SequenceId, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("crm_id", String(100), nullable=False),
    Column("event_type", String(40), nullable=False),
    Column("patient_id", String(64), nullable=True),
    Column("created_us", BigInteger, nullable=False),
    Column("key_id", String(16), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    # purposes the event was disclosed under (space-separated; "" = not purpose-bound): a
    # withdrawal removes the patient's events left without a permitted purpose (migration 0016)
    Column("purposes", String(200), nullable=False, server_default=""),
    Index(None, "crm_id", "seq"),
    Index(None, "patient_id"),
)

crm_pseudonym = Table(
    "crm_pseudonym",
    metadata,
    Column("crm_id", String(100), primary_key=True),
    Column("pseudonym", String(64), primary_key=True),
    Column("key_id", String(16), nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Index(None, "crm_id", "patient_id"),
)

crm_disclosure = Table(
    "crm_disclosure",
    metadata,
    Column("crm_id", String(100), primary_key=True),
    Column("patient_id", String(64), primary_key=True),
    Column("purposes", String(200), nullable=False),  # space-separated purpose codes
    Column("projection_hash", String(64), nullable=False, default=""),
    Column("updated_us", BigInteger, nullable=False),
)

crm_subscription = Table(
    "crm_subscription",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("crm_id", String(100), nullable=False),
    Column("url", Text, nullable=False),
    Column("events", Text, nullable=False),  # space-separated types, "*" = all
    Column("secret_key_id", String(16), nullable=False),
    Column("secret", LargeBinary, nullable=False),  # AES-GCM sealed
    Column("active", Boolean, nullable=False),
    Column("cursor", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_us", BigInteger, nullable=False),
    Column("last_error", String(200), nullable=True),
    Column("created_us", BigInteger, nullable=False),
    Index(None, "crm_id"),
)

crm_dead_letter = Table(
    "crm_dead_letter",
    metadata,
    Column("id", SequenceId, primary_key=True, autoincrement=True),
    Column("subscription_id", String(36), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("status", String(12), nullable=False),  # dead | requeued | delivered
    Column("last_error", String(200), nullable=True),
    Column("created_us", BigInteger, nullable=False),
    Index(None, "subscription_id", "status"),
)

crm_his_outbox = Table(
    "crm_his_outbox",
    metadata,
    Column("id", SequenceId, primary_key=True, autoincrement=True),
    Column("crm_id", String(100), nullable=False),
    Column("idempotency_key", String(100), nullable=False),
    Column("appointment_id", String(64), nullable=False),
    Column("control_id", String(40), nullable=False, unique=True),
    Column("message", LargeBinary, nullable=False),  # AES-GCM sealed SIU^S12 (carries the MRN)
    Column("key_id", String(16), nullable=False),
    Column("status", String(12), nullable=False),  # pending | booked | rejected | failed
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_us", BigInteger, nullable=False),
    Column("ack_code", String(2), nullable=True),
    Column("last_error", Text, nullable=True),  # sealed (String(200) before migration 0009)
    Column("created_us", BigInteger, nullable=False),
    Index(None, "status", "next_attempt_us"),
    Index("uq_crm_his_outbox_idem", "crm_id", "idempotency_key", unique=True),
)

crm_feed_start = Table(
    "crm_feed_start",
    metadata,
    Column("crm_id", String(100), primary_key=True),
    Column("start_seq", BigInteger, nullable=False),  # the CRM reads only events after this seq
    Column("registered_us", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),  # last backlog grant (audited by the CLI)
)

CRM_TABLES = (
    crm_outbox,
    crm_pseudonym,
    crm_disclosure,
    crm_subscription,
    crm_dead_letter,
    crm_his_outbox,
    crm_feed_start,
)

#: The HIS's answer text of a booking, sealed per row (seal and open with ``(id,)``).
HIS_LAST_ERROR = SealedText(crm_his_outbox, "last_error", ("id",))

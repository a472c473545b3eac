"""SQLAlchemy table definitions of the FHIR store, shared by SQLite and PostgreSQL.

Design (why it looks like this):

* ``resource_version`` keeps **every** version (FHIR history,
  https://hl7.org/fhir/R4/http.html#history); its autoincrement ``seq`` gives
  the global order used by system history and the change feed.
* ``resource_current`` is the latest version only, keyed by (type, id), so a
  read is one primary-key lookup that returns the stored JSON bytes unchanged
  (no re-validation on the read path).
* ``search_*`` tables are the search index, rewritten on every write of a
  resource, so search is SQL over narrow indexed rows instead of JSON scans.
* ``identifier_claim`` makes business-identifier uniqueness a database
  constraint: two concurrent conditional creates with the same identifier can
  never both commit (the loser gets a unique violation and re-resolves).
* Instants are stored as integer microseconds since the epoch (UTC) so both
  backends compare them the same way.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

#: Constraint and index names every package's tables use (the migrations created them so).
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
}


def new_metadata() -> MetaData:
    """A package's own ``MetaData`` with the shared naming convention.

    Each package declares its tables on its own ``MetaData`` (importing a schema
    module adds nothing to another package's); ``fhir_store.registry`` collects
    them for Alembic, so one migration history still covers the whole database.
    """
    return MetaData(naming_convention=dict(NAMING_CONVENTION))


#: The store's own tables.
metadata = new_metadata()

# BIGINT on PostgreSQL, INTEGER on SQLite (only INTEGER PRIMARY KEY autoincrements there).
SequenceId = BigInteger().with_variant(Integer(), "sqlite")

resource_version = Table(
    "resource_version",
    metadata,
    Column("seq", SequenceId, primary_key=True, autoincrement=True),
    Column("res_type", String(40), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("last_updated_us", BigInteger, nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("method", String(8), nullable=False),
    Column("content", LargeBinary, nullable=True),
    UniqueConstraint("res_type", "res_id", "version"),
    Index(None, "res_type", "seq"),
    Index(None, "last_updated_us"),
)

resource_current = Table(
    "resource_current",
    metadata,
    Column("res_type", String(40), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("last_updated_us", BigInteger, nullable=False),
    Column("deleted", Boolean, nullable=False),
    Column("content", LargeBinary, nullable=True),
    PrimaryKeyConstraint("res_type", "res_id"),
    Index(None, "last_updated_us", "res_type"),  # time first: see migration 0007
)

search_token = Table(
    "search_token",
    metadata,
    Column("res_type", String(40), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("param", String(40), nullable=False),
    Column("system", String(255), nullable=False, default=""),
    Column("code", String(255), nullable=False),
    Index(None, "res_type", "param", "code", "system"),
    Index(None, "res_id", "res_type"),  # res_id first: see migration 0007
)

search_string = Table(
    "search_string",
    metadata,
    Column("res_type", String(40), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("param", String(40), nullable=False),
    # lower-cased, accents removed (FHIR string search is case/accent-insensitive)
    Column("norm", String(255), nullable=False),
    Column("exact", String(255), nullable=False),
    Index(None, "res_type", "param", "norm"),
    Index(None, "res_id", "res_type"),  # res_id first: see migration 0007
)

search_date = Table(
    "search_date",
    metadata,
    Column("res_type", String(40), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("param", String(40), nullable=False),
    Column("low_us", BigInteger, nullable=False),
    Column("high_us", BigInteger, nullable=False),
    Index(None, "res_type", "param", "low_us"),
    Index(None, "res_id", "res_type"),  # res_id first: see migration 0007
)

search_reference = Table(
    "search_reference",
    metadata,
    Column("res_type", String(40), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("param", String(40), nullable=False),
    Column("target_type", String(40), nullable=False),
    Column("target_id", String(64), nullable=False),
    Index(None, "target_type", "target_id", "param"),
    Index(None, "res_id", "res_type"),  # res_id first: see migration 0007
)

identifier_claim = Table(
    "identifier_claim",
    metadata,
    Column("res_type", String(40), nullable=False),
    Column("system", String(255), nullable=False),
    Column("value", String(255), nullable=False),
    Column("res_id", String(64), nullable=False),
    PrimaryKeyConstraint("res_type", "system", "value"),
    Index(None, "res_id", "res_type"),  # res_id first: see migration 0007
)

resource_event_time = Table(
    "resource_event_time",
    metadata,
    # The HL7 v2 event time that last set the resource's content, and who sent it
    # (``fhir_store.event_order``): an older message never overwrites newer state.
    Column("res_type", String(40), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("event_us", BigInteger, nullable=True),
    Column("event_source", String(64), nullable=True),  # request id of the message, "hl7-<journal id>"
    Column("merged_us", BigInteger, nullable=True),  # a Patient: event time of the merge that retired it
    PrimaryKeyConstraint("res_type", "res_id"),
)

search_snapshot = Table(
    "search_snapshot",
    metadata,
    Column("token", String(64), primary_key=True),
    Column("created_us", BigInteger, nullable=False),
    Column("res_type", String(40), nullable=False),
    Column("query", Text, nullable=False),
    Column("ids", Text, nullable=False),  # JSON list of "Type/id" in result order
    Column("total", Integer, nullable=False),
)

hl7_journal = Table(
    "hl7_journal",
    metadata,
    Column("id", SequenceId, primary_key=True, autoincrement=True),
    Column("received_us", BigInteger, nullable=False),
    Column("peer", String(100), nullable=False, default=""),
    Column("sending_application", String(180), nullable=False, default=""),
    Column("sending_facility", String(180), nullable=False, default=""),
    Column("control_id", String(199), nullable=False, default=""),
    Column("message_type", String(40), nullable=False, default=""),
    Column("raw", LargeBinary, nullable=False),
    Column("status", String(16), nullable=False),  # received | processed | failed | rejected | ignored
    Column("ack_code", String(2), nullable=True),
    Column("ack", LargeBinary, nullable=True),
    Column("error", Text, nullable=True),
    Column("processed_us", BigInteger, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    # keyed digest of the content without MSH-7 (fhir_store.journal): "<blind kid>.<HMAC>",
    # "" for rows journaled before it existed, "~<uuid>" for rows never matched as duplicates
    Column("digest", String(64), nullable=False, default="", server_default=""),
    # the sender+MSH-10 was already journaled with other content (issue #15 item 1)
    Column("control_id_reused", Boolean, nullable=False, default=False, server_default=false()),
    Index(None, "status"),
)

# Duplicate delivery detection: the same sender, MSH-10 *and* content (HL7 v2.5 ch. 2.10.1).
# A partial index is not portable, so messages without a usable control id get a unique
# surrogate "~<id>", and those never to be answered from the journal a surrogate digest.
hl7_journal_dedup = Index(
    "uq_hl7_journal_sender_control_digest",
    hl7_journal.c.sending_application,
    hl7_journal.c.sending_facility,
    hl7_journal.c.control_id,
    hl7_journal.c.digest,
    unique=True,
)

# Keys the store's rows are sealed/blinded under (fingerprints only, never key material): a
# process refuses to start with a key file that does not match, instead of making rows
# unreadable or creating duplicate patients through an index it cannot see (key_registry.py).
store_key = Table(
    "store_key",
    metadata,
    Column("purpose", String(16), nullable=False),  # content | blind
    Column("kid", String(32), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("registered_us", BigInteger, nullable=False),
    # content: no row is sealed under it any more; blind: the index no longer uses it
    Column("retired_us", BigInteger, nullable=True),
    PrimaryKeyConstraint("purpose", "kid"),
)

INDEX_TABLES = (search_token, search_string, search_date, search_reference)

"""Resolving what a transaction entry points at: conditional criteria, current versions, merges.

FHIR transaction rules (https://hl7.org/fhir/R4/http.html#trules) resolve
conditional entries before any write.  Criteria and identifiers are blinded
before they are looked up (the index holds keyed hashes), a lone
``identifier=system|value`` is answered from the claim table, and a Patient
found by a merged record's number resolves to the survivor.  Rows a group
commit has not sent yet (``PendingRows``) count as written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Connection

from common import (
    SECONDARY_IDENTIFIER_SYSTEMS,
    InvalidInput,
    MultipleMatches,
    PreconditionFailed,
    SearchSettings,
)
from fhir_store.blind_index import blind_query
from fhir_store.blind_rows import PREFIX_MAX
from fhir_store.blind_text import needs_recheck
from fhir_store.content_cipher import StoreCipher
from fhir_store.model import StoredResource
from fhir_store.patient_links import follow_replaced_by
from fhir_store.search import DEFAULT_LIMITS, SearchQuery, find_ids, parse_criteria
from fhir_store.writer import (
    PendingRows,
    find_identifier_owner,
    find_identifier_owner_current,
    load_current,
)


def identifier_lookup(
    conn: Connection,
    query: SearchQuery,
    pending: PendingRows | None = None,
    prefetch: Prefetch | None = None,
) -> list[str] | None:
    """Answer a lone ``identifier=system|value`` filter from the claim table, else ``None``.

    ``query`` must be blinded (:func:`~fhir_store.blind_index.blind_query`): claims hold keyed hashes.
    Claims still waiting in ``pending`` (a group commit's unflushed rows) count as held.
    With ``prefetch``, an owner found in the database comes with its current version
    (one round trip for the lookup and the load that always follows it).
    """
    if len(query.filters) != 1 or query.offset or query.sort:
        return None
    only = query.filters[0]
    if only.param != "identifier" or only.modifier is not None or len(only.values) != 1:
        return None
    system, bar, value = only.values[0].partition("|")
    if not bar or not value or system in SECONDARY_IDENTIFIER_SYSTEMS:
        return None  # a CCCD/BHYT may be shared by possible duplicates: only the index knows them all
    owner = None if pending is None else pending.claims.get((query.resource_type, system, value))
    if owner is None and prefetch is not None:
        found = find_identifier_owner_current(conn, query.resource_type, system, value, prefetch.cipher)
        if found is not None:
            owner, prefetch.current[(query.resource_type, found[0])] = found
    elif owner is None:
        owner = find_identifier_owner(conn, query.resource_type, system, value)
    return [] if owner is None else [owner]


def match_criteria(
    conn: Connection,
    resource_type: str,
    criteria: str,
    cipher: StoreCipher,
    pending: PendingRows | None = None,
    prefetch: Prefetch | None = None,
    limits: SearchSettings = DEFAULT_LIMITS,
) -> list[str]:
    """Ids matching a conditional URL; ``identifier=sys|val`` alone uses the claim table.

    A search over the index first flushes ``pending``, so it sees this transaction's writes.
    ``limits`` are the server's search limits: criteria are a search (issue #17).
    """
    query = blind_query(parse_criteria(resource_type, criteria, limits), cipher.blind)
    owned = identifier_lookup(conn, query, pending, prefetch)
    if owned is not None:
        return owned
    if not query.filters:
        raise InvalidInput("a conditional operation needs search criteria", location="url")
    if needs_recheck(query):
        raise InvalidInput(
            "conditional criteria on names and addresses are limited to "
            f"{PREFIX_MAX} characters and 3-character ':contains' (encrypted at rest)",
            location="url",
        )
    if pending is not None and pending.rows:
        pending.flush(conn)
    return find_ids(conn, query, limit=2)


@dataclass
class Prefetch:
    """Current versions read with a claim lookup, for the :func:`load` of the same plan step."""

    cipher: StoreCipher
    current: dict[tuple[str, str], StoredResource | None] = field(default_factory=dict)


def load(
    conn: Connection,
    resource_type: str,
    resource_id: str,
    cipher: StoreCipher,
    pending: PendingRows,
    prefetch: Prefetch | None = None,
) -> StoredResource | None:
    """The current version, after flushing ``pending`` if it holds rows of that resource.

    A version ``prefetch`` read with the claim is used unless this transaction wrote the
    resource since (then its pending rows are flushed and the row read again).
    """
    key = (resource_type, resource_id)
    if key in pending.touched:
        pending.flush(conn)
    elif prefetch is not None and key in prefetch.current:
        return prefetch.current[key]
    return load_current(conn, resource_type, resource_id, cipher)


def single(
    conn: Connection,
    resource_type: str,
    criteria: str,
    cipher: StoreCipher,
    pending: PendingRows,
    prefetch: Prefetch | None = None,
    limits: SearchSettings = DEFAULT_LIMITS,
) -> str | None:
    ids = match_criteria(conn, resource_type, criteria, cipher, pending, prefetch, limits)
    if len(ids) > 1:
        raise MultipleMatches(f"criteria '{criteria}' match more than one {resource_type}", location="url")
    return ids[0] if ids else None


def survivor(
    conn: Connection,
    found: str,
    cipher: StoreCipher,
    pending: PendingRows,
    prefetch: Prefetch,
) -> tuple[str, list[StoredResource]]:
    """The Patient a conditional write for ``found`` goes to: the end of its ``replaced-by`` chain.

    A message quoting a merged record's number updates the survivor and never
    revives the merged record (``fhir_store.patient_links``).
    """
    return follow_replaced_by(found, lambda pid: load(conn, "Patient", pid, cipher, pending, prefetch))


def if_match_version(if_match: str) -> int:
    text = if_match.strip()
    if text.startswith("W/"):
        text = text[2:]
    try:
        return int(text.strip('"'))
    except ValueError as exc:
        raise PreconditionFailed(f"If-Match '{if_match}' is not a version ETag", location="If-Match") from exc

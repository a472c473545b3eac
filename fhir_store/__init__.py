"""The FHIR store's public API: what the other packages may import (``from fhir_store import ...``).

Everything else in the package is internal; an import-linter ``protected``
contract (pyproject.toml) refuses imports of ``fhir_store.<module>`` from
outside the package (docs/architecture.md, "Packages and dependency direction").
The tables' driver-level statements and dialect branches stay behind named
functions here (``fhir_store.table_reads``, ``fhir_store.journal``), so a change to
the store's layout is made in one package.  Names that would be ambiguous at the
package root carry their subject: the HL7 journal's (``journal_*``, ``JOURNAL_*``),
the engine wrappers (``for_reading``/``for_writing``), the driver cursor helpers.
"""

from __future__ import annotations

from fhir_store.batch_rewrite import (
    rewrite_rows,
)
from fhir_store.blind_index import (
    reindex,
)
from fhir_store.bundles import (
    ReadEntry,
    bundle_operations,
    entry_operation,
)
from fhir_store.content_cipher import (
    StoreCipher,
)
from fhir_store.database import (
    is_sqlite,
    make_engine,
    normalize_url,
    private_sqlite_file,
)
from fhir_store.database import (
    reader as for_reading,
)
from fhir_store.database import (
    writer as for_writing,
)
from fhir_store.driver_sql import (
    BulkInsert,
    DriverQuery,
    MultiInsert,
)
from fhir_store.driver_sql import (
    cursor as driver_cursor,
)
from fhir_store.driver_sql import (
    run as run_on_driver,
)
from fhir_store.event_order import stale_notes
from fhir_store.instants import (
    format_instant,
    from_us,
    http_date,
    now_us,
    parse_fhir_instant_range,
    to_us,
)
from fhir_store.journal import (
    FAILED as JOURNAL_FAILED,
)
from fhir_store.journal import (
    FINAL_STATUSES as JOURNAL_FINAL_STATUSES,
)
from fhir_store.journal import (
    IGNORED as JOURNAL_IGNORED,
)
from fhir_store.journal import (
    OPEN_STATUSES as JOURNAL_OPEN_STATUSES,
)
from fhir_store.journal import (
    PROCESSED as JOURNAL_PROCESSED,
)
from fhir_store.journal import (
    RECEIVED as JOURNAL_RECEIVED,
)
from fhir_store.journal import (
    REJECTED as JOURNAL_REJECTED,
)
from fhir_store.journal import (
    STALE as JOURNAL_STALE,
)
from fhir_store.journal import (
    Inserted as JournalInserted,
)
from fhir_store.journal import (
    JournalEntry,
)
from fhir_store.journal import (
    find_duplicate as journal_find_duplicate,
)
from fhir_store.journal import (
    insert_entry as journal_insert_entry,
)
from fhir_store.journal import (
    insert_message as journal_insert_message,
)
from fhir_store.journal import (
    insert_message_entry as journal_insert_message_entry,
)
from fhir_store.journal import (
    insert_row as journal_insert_row,
)
from fhir_store.journal import (
    list_to_replay as journal_list_to_replay,
)
from fhir_store.journal import (
    load as journal_load,
)
from fhir_store.journal import (
    mark_failed as journal_mark_failed,
)
from fhir_store.journal import (
    mark_processed as journal_mark_processed,
)
from fhir_store.journal import (
    mark_retryable as journal_mark_retryable,
)
from fhir_store.journal import (
    mark_stale as journal_mark_stale,
)
from fhir_store.journal import (
    oldest_received_us as journal_oldest_received_us,
)
from fhir_store.journal import (
    open_counts as journal_open_counts,
)
from fhir_store.journal_search import (
    JournalQuery,
    JournalSummary,
    journal_error_groups,
    journal_ids_matching,
    journal_summary,
    patients_by_identifier,
    search_journal,
)
from fhir_store.key_registry import (
    open_cipher,
    register_key,
    registered,
    rotate_blind_key,
)
from fhir_store.migrations import (
    alembic_config,
    current_revision,
    head_revision,
    upgrade,
)
from fhir_store.model import (
    Amend,
    ConditionalDelete,
    ConditionalUpdate,
    Create,
    Delete,
    Operation,
    OperationResult,
    RequestContext,
    ResourceChange,
    StoredResource,
    Update,
)
from fhir_store.patient_links import (
    replaced_by,
)
from fhir_store.pipeline import (
    HookPipeline,
)
from fhir_store.registration import (
    register as register_store,
)
from fhir_store.registry import (
    Registry,
)
from fhir_store.repository import (
    FhirStore,
)
from fhir_store.rewrap import (
    keys_in_use,
)
from fhir_store.rewrap import (
    rewrap as rewrap_store,
)
from fhir_store.schema import (
    SequenceId,
    new_metadata,
)
from fhir_store.sealed_columns import (
    SealedText,
)
from fhir_store.search import (
    parse_query,
)
from fhir_store.search_params import (
    INCLUDES,
    SEARCH_SPECS,
    ResourceSearchSpec,
    SearchParam,
    extract_index_rows,
)
from fhir_store.table_reads import (
    claimed_ids,
    current_consents_of_patient,
    iter_current_sealed,
)
from fhir_store.transient import WriteFailure, WriteHealth, transient_kind
from fhir_store.validation import (
    SUPPORTED_TYPES,
    validate_resource,
)
from fhir_store.write_path import (
    WriteUnit,
)
from fhir_store.writer import (
    load_current,
    write_version,
)

__all__ = [
    "INCLUDES",
    "JOURNAL_FAILED",
    "JOURNAL_FINAL_STATUSES",
    "JOURNAL_IGNORED",
    "JOURNAL_OPEN_STATUSES",
    "JOURNAL_PROCESSED",
    "JOURNAL_RECEIVED",
    "JOURNAL_REJECTED",
    "JOURNAL_STALE",
    "SEARCH_SPECS",
    "SUPPORTED_TYPES",
    "Amend",
    "BulkInsert",
    "ConditionalDelete",
    "ConditionalUpdate",
    "Create",
    "Delete",
    "DriverQuery",
    "FhirStore",
    "HookPipeline",
    "JournalEntry",
    "JournalInserted",
    "JournalQuery",
    "JournalSummary",
    "MultiInsert",
    "Operation",
    "OperationResult",
    "ReadEntry",
    "Registry",
    "RequestContext",
    "ResourceChange",
    "ResourceSearchSpec",
    "SealedText",
    "SearchParam",
    "SequenceId",
    "StoreCipher",
    "StoredResource",
    "Update",
    "WriteFailure",
    "WriteHealth",
    "WriteUnit",
    "alembic_config",
    "bundle_operations",
    "claimed_ids",
    "current_consents_of_patient",
    "current_revision",
    "driver_cursor",
    "entry_operation",
    "extract_index_rows",
    "for_reading",
    "for_writing",
    "format_instant",
    "from_us",
    "head_revision",
    "http_date",
    "is_sqlite",
    "iter_current_sealed",
    "journal_error_groups",
    "journal_find_duplicate",
    "journal_ids_matching",
    "journal_insert_entry",
    "journal_insert_message",
    "journal_insert_message_entry",
    "journal_insert_row",
    "journal_list_to_replay",
    "journal_load",
    "journal_mark_failed",
    "journal_mark_processed",
    "journal_mark_retryable",
    "journal_mark_stale",
    "journal_oldest_received_us",
    "journal_open_counts",
    "journal_summary",
    "keys_in_use",
    "load_current",
    "make_engine",
    "new_metadata",
    "normalize_url",
    "now_us",
    "open_cipher",
    "parse_fhir_instant_range",
    "parse_query",
    "patients_by_identifier",
    "private_sqlite_file",
    "register_key",
    "register_store",
    "registered",
    "reindex",
    "replaced_by",
    "rewrap_store",
    "rewrite_rows",
    "rotate_blind_key",
    "run_on_driver",
    "search_journal",
    "stale_notes",
    "to_us",
    "transient_kind",
    "upgrade",
    "validate_resource",
    "write_version",
]

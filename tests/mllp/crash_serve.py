"""``carebridge`` that dies (exit 86) right after the first journal commit: test-only fault injection.

Run as ``python -m tests.mllp.crash_serve serve ...`` (see ``ServeProcess``).  The crash
points are the two moments the commit-acknowledge rule (HL7 v2.5 ch. 2.9) is about:

* original mode: the store transaction holding the journal row and the message's
  effects has committed, and the AA has not been sent (``Ingestor.applied``);
* enhanced mode with a commit ACK: the ``received`` journal row has committed in a
  transaction of its own, and the CA has not been sent (``journal_insert_message_entry`` as ``gateway.ingest`` binds it).

Production code carries no hook for this: the patches below exist only in this process.
"""

from __future__ import annotations

import os
from typing import Any

import gateway.ingest
from fhir_store import journal
from gateway.cli import run
from gateway.ingest import Ingestor

CRASH_EXIT_CODE = 86


def _die_instead(*_args: Any, **_kwargs: Any) -> Any:
    os._exit(CRASH_EXIT_CODE)


def install() -> None:
    insert_message_entry = journal.insert_message_entry

    def insert_then_die(engine: Any, **row: Any) -> journal.Inserted | None:
        inserted = insert_message_entry(engine, **row)
        if inserted is not None and "status" not in row:  # a new ``received`` row (commit ACK wanted)
            os._exit(CRASH_EXIT_CODE)
        return inserted

    # gateway.ingest binds the journal's public name (fhir_store.journal_insert_message_entry) at import.
    gateway.ingest.journal_insert_message_entry = insert_then_die  # type: ignore[attr-defined]
    Ingestor.applied = _die_instead  # type: ignore[method-assign]


if __name__ == "__main__":
    install()
    run()

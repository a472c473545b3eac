"""The result a request handler hands back to the workflow (applied in one store transaction)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from fhir_store import Operation, OperationResult

InTransaction = Callable[[Connection, Sequence[OperationResult]], None]
"""Runs in the request's store transaction after the writes; gets the results of ``Outcome.ops``."""


@dataclass
class Outcome:
    status: str  # completed | in-progress (erasure waiting for processor receipts)
    document: dict[str, Any]
    ops: list[Operation] = field(default_factory=list)
    business_status: str | None = None
    in_transaction: InTransaction | None = None
    after_commit: Callable[[], None] | None = None

"""Scope enforcement inside the store path, so bundles and every adapter obey it.

The HTTP dependency already refuses a request whose route needs a scope the
token lacks (a clean 403 before any work).  This hook is the second line: a
transaction Bundle may touch several types, and a batch may read some, so each
change and each disclosed resource is checked against the caller's granted
scopes (``RequestContext.grants``) inside the transaction — a refused entry
rolls the whole transaction back.  HL7 and internal contexts carry no grants
and are authorized by their own channel (MLLP sender allow-list).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Literal

from sqlalchemy import Connection

from fhir_store import RequestContext, ResourceChange, StoredResource
from gateway.auth.scopes import Interaction, Scope, parse_scopes, require

_CHANGE_INTERACTION: dict[str, Interaction] = {"create": "c", "update": "u", "delete": "d"}
_ACCESS_INTERACTION: dict[str, Interaction] = {"read": "r", "vread": "r", "history": "r", "search": "s"}


@lru_cache(maxsize=1024)
def _scopes(grants: tuple[str, ...]) -> list[Scope]:
    return parse_scopes(" ".join(grants))


class ScopePolicyHook:
    """StoreHook + AccessHook: every REST change/disclosure needs a matching scope."""

    def on_changes(
        self, conn: Connection, changes: Sequence[ResourceChange], context: RequestContext
    ) -> None:
        if context.channel != "rest":
            return
        for resource_type, interaction in sorted(
            {(c.resource_type, _CHANGE_INTERACTION[c.action]) for c in changes}
        ):
            require(_scopes(context.grants), context.role, resource_type, interaction)

    def on_access(
        self,
        conn: Connection,
        action: Literal["read", "vread", "search", "history"],
        resources: Sequence[StoredResource],
        context: RequestContext,
        query: str | None,
    ) -> None:
        if context.channel != "rest":
            return
        interaction = _ACCESS_INTERACTION[action]
        for resource_type in sorted({r.resource_type for r in resources}):
            require(_scopes(context.grants), context.role, resource_type, interaction)

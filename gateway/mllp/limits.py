"""Caps on open MLLP connections, kept under the process's open-file limit (issue #17 item 4).

Why: every accepted connection is a file descriptor.  When idle connections use
up ``RLIMIT_NOFILE``, ``accept()`` fails with EMFILE for *every* listener of the
process -- HTTP (``/healthz``, ``/readyz``) and MLLP alike -- and the event loop
logs the failure on each retry.  A cap on connections in total and per peer
address (``CAREBRIDGE_MLLP_MAX_CONNECTIONS``,
``CAREBRIDGE_MLLP_MAX_CONNECTIONS_PER_PEER``) closes the excess at once, before
it can hold a descriptor for the idle timeout, so one misbehaving or hostile
peer cannot starve the registered senders nor the rest of the process.

The caps are checked against the soft open-file limit when the listener starts
(:func:`connection_limits`): a quarter of the limit, and at least
:data:`RESERVED_FILES`, stays for HTTP connections, the database pool, log and
key files, and :data:`ACCEPT_BACKLOG` more for the connections asyncio accepts in
one burst before the listener can count (and close) them; a cap above what is
left is lowered to it, with a warning.
"""

from __future__ import annotations

import resource
from collections import Counter
from dataclasses import dataclass

from common import MllpSettings

RESERVED_FILES = 128
# asyncio accepts up to ``backlog`` connections per readiness event before any of them is seen
ACCEPT_BACKLOG = 64


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The caps in force and why (``clamped`` lists the settings that were lowered)."""

    total: int
    per_peer: int
    open_files: int | None  # the soft RLIMIT_NOFILE; None when unlimited
    clamped: tuple[str, ...] = ()


def open_file_limit() -> tuple[int | None, int | None]:
    """(soft, hard) ``RLIMIT_NOFILE`` of this process; None stands for unlimited."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    def value(v: int) -> int | None:
        return None if v == resource.RLIM_INFINITY or v < 0 else int(v)

    return value(soft), value(hard)


def connection_limits(settings: MllpSettings, open_files: int | None) -> ConnectionLimits:
    """The caps of ``settings``, lowered to fit under ``open_files`` (pure)."""
    total, per_peer = settings.max_connections, settings.max_connections_per_peer
    clamped: list[str] = []
    if open_files is not None:
        budget = max(1, open_files - max(RESERVED_FILES, open_files // 4) - ACCEPT_BACKLOG)
        if total > budget:
            total = budget
            clamped.append("CAREBRIDGE_MLLP_MAX_CONNECTIONS")
    if per_peer > total:
        per_peer = total
        if "CAREBRIDGE_MLLP_MAX_CONNECTIONS" in clamped:
            clamped.append("CAREBRIDGE_MLLP_MAX_CONNECTIONS_PER_PEER")
    return ConnectionLimits(total, per_peer, open_files, tuple(clamped))


class ConnectionGate:
    """Counts open connections in total and per peer address (one event loop: no lock needed)."""

    __slots__ = ("_by_peer", "_open", "limits")

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self._open = 0
        self._by_peer: Counter[str] = Counter()

    @property
    def open(self) -> int:
        return self._open

    def admit(self, address: str) -> str | None:
        """Count a new connection from ``address``; or the reason it is refused (``total``, ``per-peer``)."""
        if self._open >= self.limits.total:
            return "total"
        if self._by_peer[address] >= self.limits.per_peer:
            return "per-peer"
        self._open += 1
        self._by_peer[address] += 1
        return None

    def release(self, address: str) -> None:
        """An admitted connection from ``address`` closed."""
        self._open -= 1
        self._by_peer[address] -= 1
        if self._by_peer[address] <= 0:
            del self._by_peer[address]

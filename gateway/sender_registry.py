"""The HL7 sender registry: its table, its commands' operations, and the cached view the ingest reads.

Why a table and not a setting: senders are added and withdrawn while the
server runs (a HIS moves to a new subnet, a compromised interface engine is
cut off), and every process must see the change without a restart.  The
ingest reads the registry through :class:`SenderDirectory`, a snapshot of the
whole (small) table reloaded at most every :data:`REFRESH_S` seconds, so a
message costs a dictionary lookup and ``carebridge senders disable`` takes
effect within that interval in every running process.

The table lives on this module's own ``metadata``; ``gateway.registration``
adds it to the registry so one Alembic history covers the whole database
(revision 0013).
"""

from __future__ import annotations

import codecs
import threading
import time
from collections.abc import Callable, Sequence

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Engine,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from common import InvalidInput
from fhir_store import new_metadata, now_us
from gateway.hl7_senders import RegisteredSender, parse_network
from mappers import CHARSETS as HL7_CHARSETS

metadata = new_metadata()

hl7_sender = Table(
    "hl7_sender",
    metadata,
    Column("application", String(180), nullable=False),  # MSH-3.1
    Column("facility", String(180), nullable=False),  # MSH-4.1
    Column("networks", Text, nullable=False, default=""),  # space-separated CIDRs
    Column("certificate_cn", String(200), nullable=True),  # subject CN of its TLS client certificate
    Column("enabled", Boolean, nullable=False, default=True),
    # default character set of its messages without MSH-18 (a Python codec name; revision 0021)
    Column("charset", String(40), nullable=True),
    Column("created_us", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("application", "facility"),
)

#: longest time a running process keeps answering from a stale registry (``senders disable``: ≤ 5 s)
REFRESH_S = 2.0


def _row_sender(row: Sequence[object]) -> RegisteredSender:
    app, fac, networks, cn, enabled, charset = row
    return RegisteredSender(
        str(app),
        str(fac),
        tuple(parse_network(n) for n in str(networks or "").split()),
        None if cn is None else str(cn),
        bool(enabled),
        None if charset is None else str(charset),
    )


_COLUMNS = (
    hl7_sender.c.application,
    hl7_sender.c.facility,
    hl7_sender.c.networks,
    hl7_sender.c.certificate_cn,
    hl7_sender.c.enabled,
    hl7_sender.c.charset,
)


def check_charset(charset: str | None) -> str | None:
    """A charset the ingest can decode with (normalised codec name), None to clear; InvalidInput otherwise.

    Python codec names (``latin-1``, ``cp1258``) as ``CAREBRIDGE_HL7_SENDER_CHARSETS``
    takes them, or the HL7 table 0211 labels MSH-18 would carry (``8859/1``).
    """
    text = (charset or "").strip()
    if not text:
        return None
    name = HL7_CHARSETS.get(text.upper(), text)
    try:
        return codecs.lookup(name).name
    except LookupError:
        raise InvalidInput(f"unknown character set {text!r} (e.g. utf-8, latin-1, cp1258)") from None


class SenderRegistry:
    """Add, list, enable, disable and remove senders (the ``carebridge senders`` commands)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(
        self,
        application: str,
        facility: str,
        *,
        networks: Sequence[str] = (),
        certificate_cn: str | None = None,
        charset: str | None = None,
    ) -> RegisteredSender:
        """Register an enabled sender; it must be tied to a network or a certificate CN.

        A sender with neither could be anyone who can reach the port, which is
        what the registry exists to prevent, so it is refused here.
        """
        application, facility = application.strip(), facility.strip()
        if not application or not facility:
            raise InvalidInput("a sender needs both --application (MSH-3) and --facility (MSH-4)")
        try:
            parsed = [parse_network(n) for n in networks]
        except ValueError as exc:
            raise InvalidInput(f"not a network: {exc}") from None
        cn = (certificate_cn or "").strip() or None
        codec = check_charset(charset)
        if not parsed and cn is None:
            raise InvalidInput(
                "a sender needs --network or --certificate-cn: otherwise anyone could send as it"
            )
        now = now_us()
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(hl7_sender).values(
                        application=application,
                        facility=facility,
                        networks=" ".join(str(n) for n in dict.fromkeys(parsed)),
                        certificate_cn=cn,
                        enabled=True,
                        charset=codec,
                        created_us=now,
                        updated_us=now,
                    )
                )
        except IntegrityError:
            raise InvalidInput(f"sender {application}^{facility} is already registered") from None
        sender = self.get(application, facility)
        assert sender is not None
        return sender

    def get(self, application: str, facility: str) -> RegisteredSender | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(*_COLUMNS).where(
                    hl7_sender.c.application == application, hl7_sender.c.facility == facility
                )
            ).first()
        return None if row is None else _row_sender(row)

    def list(self) -> list[RegisteredSender]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(*_COLUMNS).order_by(hl7_sender.c.application, hl7_sender.c.facility))
            return [_row_sender(row) for row in rows]

    def set_enabled(self, application: str, facility: str, enabled: bool) -> bool:
        """Enable or disable a sender; False if it is not registered."""
        with self.engine.begin() as conn:
            done = conn.execute(
                update(hl7_sender)
                .where(hl7_sender.c.application == application, hl7_sender.c.facility == facility)
                .values(enabled=enabled, updated_us=now_us())
            )
        return done.rowcount > 0

    def set_charset(self, application: str, facility: str, charset: str | None) -> bool:
        """Set (or clear, with None/"") a sender's default charset; False if it is not registered."""
        codec = check_charset(charset)
        with self.engine.begin() as conn:
            done = conn.execute(
                update(hl7_sender)
                .where(hl7_sender.c.application == application, hl7_sender.c.facility == facility)
                .values(charset=codec, updated_us=now_us())
            )
        return done.rowcount > 0

    def remove(self, application: str, facility: str) -> bool:
        """Forget a sender (its journaled messages stay); False if it is not registered."""
        with self.engine.begin() as conn:
            done = conn.execute(
                delete(hl7_sender).where(
                    hl7_sender.c.application == application, hl7_sender.c.facility == facility
                )
            )
        return done.rowcount > 0


class SenderDirectory:
    """The registry as the ingest reads it: a snapshot reloaded at most every ``refresh_s`` seconds.

    Thread-safe.  The reload is one SELECT of a table with a row per HIS
    interface; it runs in the caller (the MLLP event loop) because the next
    message must not be judged on a snapshot older than ``refresh_s``.  A reload
    that fails raises, and the caller refuses the message (fail closed).
    """

    def __init__(
        self, engine: Engine, *, refresh_s: float = REFRESH_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.engine = engine
        self.refresh_s = refresh_s
        self._clock = clock
        self._lock = threading.Lock()
        self._senders: dict[tuple[str, str], RegisteredSender] = {}
        self._loaded_at: float | None = None

    def lookup(self, application: str, facility: str) -> RegisteredSender | None:
        now = self._clock()
        with self._lock:
            if self._loaded_at is None or now - self._loaded_at >= self.refresh_s:
                with self.engine.connect() as conn:
                    rows = conn.execute(select(*_COLUMNS)).all()
                self._senders = {(str(r[0]), str(r[1])): _row_sender(r) for r in rows}
                self._loaded_at = now
            return self._senders.get((application, facility))

    def count(self) -> int:
        """How many senders are registered (enabled or not), read now."""
        with self.engine.connect() as conn:
            return len(conn.execute(select(hl7_sender.c.application)).all())

"""Who may send what over MLLP, and the sender fields read before a message is decoded.

Kept apart from the ingest service: :class:`SenderPolicy` is configuration
(``CAREBRIDGE_MLLP_ALLOWED_SENDERS``, see gateway.mllp.tls) and
:func:`peek_sender` must work on bytes whose charset is not known yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SenderPolicy:
    """Which MSH-3^MSH-4 each TLS client identity (certificate CN) may send as.

    Parsed from ``"CN1=APP^FAC|APP2^*;CN2=*"``; ``*`` matches anything.  An
    empty policy allows everyone; otherwise unknown identities are refused
    (deny by default, ISO/IEC 27001 A.5.15).
    """

    allowed: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> SenderPolicy:
        allowed: dict[str, tuple[tuple[str, str], ...]] = {}
        for item in filter(None, (p.strip() for p in text.split(";"))):
            identity, _, senders = item.partition("=")
            pairs = []
            for sender in filter(None, (s.strip() for s in senders.split("|"))):
                app, _, fac = sender.partition("^")
                pairs.append((app.strip() or "*", fac.strip() or "*"))
            allowed[identity.strip()] = tuple(pairs)
        return cls(allowed)

    def permits(self, identity: str | None, application: str, facility: str) -> bool:
        if not self.allowed:
            return True
        if identity is None or identity not in self.allowed:
            return False
        return any(a in ("*", application) and f in ("*", facility) for a, f in self.allowed[identity])


def peek_sender(raw: bytes) -> tuple[str, str]:
    """MSH-3.1 and MSH-4.1 from the raw bytes (MSH is ASCII), to pick the default charset."""
    start = raw.find(b"MSH")
    if start < 0 or start > 8 or len(raw) < start + 8:
        return "", ""
    end = len(raw)
    for terminator in (b"\r", b"\n"):
        pos = raw.find(terminator, start)
        if 0 <= pos < end:
            end = pos
    line = raw[start:end].decode("latin-1")
    fs = line[3]
    parts = line.split(fs)
    comp = parts[1][:1] if len(parts) > 1 and parts[1] else "^"
    app = parts[2].split(comp)[0] if len(parts) > 2 else ""
    fac = parts[3].split(comp)[0] if len(parts) > 3 else ""
    return app, fac

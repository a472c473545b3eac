"""Who may send what over MLLP, and the sender fields read before a message is decoded.

Two checks, both before anything is looked up or written for a message:

* the sender registry (``carebridge senders``, :mod:`gateway.sender_registry`):
  MSH-3/MSH-4 must name a registered, enabled sender and the connection must be
  that sender's -- its source address in one of the sender's networks, or its
  verified TLS client certificate's CN equal to the registered one.  HL7 v2 has
  no authentication of its own (v2.5 ch. 2.9: MSH-3/MSH-4 are whatever the peer
  writes), so the transport is the only evidence of who is speaking; deny by
  default, ISO/IEC 27001:2022 A.5.15/A.8.5.  ``CAREBRIDGE_MLLP_OPEN=true`` skips
  it (demos and local trials).
* :class:`SenderPolicy`, the optional per-certificate allow-list
  (``CAREBRIDGE_MLLP_ALLOWED_SENDERS``, see gateway.mllp.tls), which narrows it further.

:func:`peek_sender` must work on bytes whose charset is not known yet.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from common import Forbidden

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class SenderNotRegistered(Forbidden):
    """MSH-3/MSH-4 is not a registered, enabled sender for this connection: AR.

    HL7 table 0357 code 103 "table value not found" at MSH-3: MSH-3 and MSH-4
    are coded against the user-defined tables 0361 (application) and 0362
    (facility), which the sender registry is.  One text for every reason
    (unknown, disabled, wrong network or certificate), so a probe learns
    nothing about which senders exist; the reason goes to the log and the
    metric ``carebridge_hl7_senders_refused_total``.
    """

    hl7_error_code = "103"

    def __init__(self, application: str, facility: str) -> None:
        super().__init__(
            f"{NOT_REGISTERED}: {application}^{facility} may not send on this connection", location="MSH-3"
        )


class SenderWithdrawn(Forbidden):
    """Replay of a journaled message whose sender has been disabled or removed since: AR, row kept.

    Disabling a sender is how an operator cuts off an interface they no longer
    trust, so its old messages are not applied behind their back; enabling it
    again makes them replayable.  Not a receipt-time refusal (:func:`refused_at_receipt`).
    """

    hl7_error_code = "103"

    def __init__(self, application: str, facility: str) -> None:
        super().__init__(
            f"sender disabled or removed since receipt: {application}^{facility}; enable it to replay",
            location="MSH-3",
        )


#: start of the journaled error text of every sender refusal (see :func:`refused_at_receipt`)
NOT_REGISTERED = "sender not registered"
#: start of the text of the per-certificate allow-list's refusal
NOT_ALLOWED = "sender not allowed"
#: start of the text of a message refused because the registry could not be read (fail closed)
NOT_CHECKED = "sender not checked"


def refused_at_receipt(error: str | None) -> bool:
    """Whether a journal row's error says the transport check refused it when it arrived.

    Such a row is never applied by ``carebridge hl7 replay``: registering the
    sender later must not turn a forged message into an applied one.
    """
    if error is None:
        return False
    legacy = error.startswith("sender ") and "is not allowed for this connection" in error
    return legacy or error.startswith((NOT_REGISTERED, NOT_ALLOWED, NOT_CHECKED))


@dataclass(frozen=True, slots=True)
class RegisteredSender:
    """One row of the sender registry (``carebridge senders add``)."""

    application: str
    facility: str
    networks: tuple[IpNetwork, ...]
    certificate_cn: str | None
    enabled: bool
    charset: str | None = None  # default for messages without MSH-18 (codec name), before the settings map

    def matches(self, address: IpAddress | None, identity: str | None) -> bool:
        """The peer is this sender's: its address is in a network, or its verified CN is the one registered."""
        if address is not None and any(address in network for network in self.networks):
            return True
        return self.certificate_cn is not None and identity is not None and identity == self.certificate_cn


def parse_network(text: str) -> IpNetwork:
    """A CIDR (``10.20.0.0/16``) or a single address, normalised; ValueError if it is neither."""
    return ipaddress.ip_network(text.strip(), strict=False)


def peer_address(peer: str) -> IpAddress | None:
    """The IP address of an MLLP peer written ``host:port`` (IPv4-mapped IPv6 reduced to IPv4)."""
    host = peer.rpartition(":")[0] if ":" in peer else peer
    host = host.strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


#: finds the registered sender of MSH-3/MSH-4 (a cached read of the registry), or None
SenderLookup = Callable[[str, str], RegisteredSender | None]


def registry_refusal(
    lookup: SenderLookup, application: str, facility: str, peer: str, identity: str | None, *, replay: bool
) -> str | None:
    """Why the registry refuses this sender on this connection (a log/metric reason), or None.

    ``replay``: the message was journaled after passing the peer check when it
    arrived (the journal keeps the address, not the TLS identity), so only the
    registration itself -- present and enabled now -- is checked again.
    """
    sender = lookup(application, facility)
    if sender is None:
        return "unknown"
    if not sender.enabled:
        return "disabled"
    if replay or sender.matches(peer_address(peer), identity):
        return None
    return "peer"


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

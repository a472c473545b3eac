"""Where carebridge may POST webhooks: the server-side request forgery (SSRF) guard.

Why: a CRM chooses the URL and carebridge connects to it from inside the
hospital network, with patient events in the body.  Unchecked, a CRM can make
carebridge talk to its own ports (``/metrics``, the MLLP listener), to loopback
services or to internal hosts, and read the socket errors back as a port
scanner (OWASP ASVS 4.0.3 V12.6.1, "OWASP SSRF Prevention Cheat Sheet").  Plain
``http://`` would carry names and phones in clear (Decree 13/2023/ND-CP Art.
26: security measures for personal data in transit).

Rules, checked when a subscription is registered and again before every new
connection (a name may resolve elsewhere by then: DNS rebinding):

- the scheme is ``https`` (``http`` only with ``CAREBRIDGE_CRM_ALLOW_HTTP_WEBHOOKS``);
- the host name is resolved once and *every* address it resolves to must pass;
  the dispatcher then connects to an address it checked, never resolving again;
- an address that is not globally routable (loopback, link-local, private,
  unspecified, multicast, reserved, shared or documentation ranges: RFC 6890)
  or that belongs to this machine is refused unless it lies in
  ``CAREBRIDGE_CRM_WEBHOOK_ALLOWED_NETWORKS``;
- carebridge's own listening endpoints (an address of this machine with the HTTP
  or MLLP port) are refused always: no configuration makes them a CRM.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit

from common import CrmSettings

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: host, port -> the addresses to try (injected by tests to simulate DNS answers).
Resolver = Callable[[str, int], list[str]]


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses ``getaddrinfo`` gives for a TCP connection, in its order, without duplicates."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class TargetRefused(Exception):
    """The URL or one of its addresses is not allowed; ``reason`` is safe to show the CRM."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidTarget(TargetRefused):
    """Not a usable URL at all (no host, another scheme, a bad port)."""


class Unresolvable(TargetRefused):
    """The host name has no address (at delivery a DNS failure, not a policy refusal)."""


@dataclass(frozen=True)
class Target:
    """A webhook URL split into what the connection needs."""

    scheme: str
    host: str  # as written (Host header and TLS server name)
    port: int
    parts: SplitResult


def _plain(address: IpAddress) -> IpAddress:
    """An IPv4-mapped IPv6 address (``::ffff:127.0.0.1``) is the IPv4 address it carries."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _category(address: IpAddress) -> str | None:
    """Why an address is not public, or ``None`` when it is globally routable."""
    if address.is_loopback:
        return "loopback"
    if address.is_unspecified:
        return "unspecified"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_private:
        return "private"
    if not address.is_global:
        return "non-public"
    return None


def is_local_address(address: IpAddress) -> bool:
    """Whether this machine owns ``address`` (the kernel lets a socket bind only to its own)."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((str(address), 0))
    except OSError:
        return False
    return True


def parse_networks(text: str) -> tuple[IpNetwork, ...]:
    """``"10.1.0.0/16, fd00::/8"`` as networks; a malformed entry is an error (a typo must not open)."""
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in text.split(",") if item.strip())


@dataclass
class WebhookPolicy:
    """The rules above, shared by the registration and the dispatcher of one process."""

    allow_http: bool = False
    allowed_networks: tuple[IpNetwork, ...] = ()
    resolver: Resolver = system_resolver
    own_ports: set[int] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_settings(cls, settings: CrmSettings, own_ports: Iterable[int] = ()) -> WebhookPolicy:
        return cls(
            allow_http=settings.allow_http_webhooks,
            allowed_networks=parse_networks(settings.webhook_allowed_networks),
            own_ports={port for port in own_ports if port},
        )

    @property
    def relaxed(self) -> bool:
        """Whether the configuration allows anything beyond public ``https`` (worth a warning)."""
        return self.allow_http or bool(self.allowed_networks)

    def listening_on(self, port: int) -> None:
        """Record a port carebridge listens on (the server calls it once its sockets are bound)."""
        with self._lock:
            self.own_ports.add(port)

    def target(self, url: str) -> Target:
        """The URL's scheme, host and port, or :class:`TargetRefused` (nothing is resolved here)."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise InvalidTarget("url is not a valid URL") from exc
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidTarget("url must be an https URL with a host")
        if parts.scheme == "http" and not self.allow_http:
            raise TargetRefused("url must use https (plain http is not allowed on this server)")
        if parts.username is not None or parts.password is not None:
            raise TargetRefused("url must not carry credentials")
        default = 443 if parts.scheme == "https" else 80
        return Target(parts.scheme, parts.hostname, port or default, parts)

    def check_address(self, text: str, port: int) -> str:
        """``text`` if it may be connected to on ``port``, else :class:`TargetRefused`."""
        try:
            address = _plain(ipaddress.ip_address(text.split("%", 1)[0]))  # drop an IPv6 zone
        except ValueError as exc:
            raise InvalidTarget("url host resolved to an unusable address") from exc
        category = _category(address)
        local = category in ("loopback", "unspecified") or is_local_address(address)
        with self._lock:
            own_port = port in self.own_ports
        if local and own_port:
            raise TargetRefused("url points at carebridge itself")
        if category is None and not local:
            return text
        if any(address in network for network in self.allowed_networks):
            return text
        reason = category or "this server's own"
        raise TargetRefused(f"url resolves to a {reason} address, not allowed for webhooks")

    def resolve(self, target: Target) -> list[str]:
        """Every address of the target, each checked; :class:`TargetRefused` if any fails or none."""
        host = target.host
        try:
            literal: IpAddress | None = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [host]
        else:
            try:
                addresses = self.resolver(host, target.port)
            except OSError as exc:
                raise Unresolvable("url host does not resolve") from exc
        if not addresses:
            raise Unresolvable("url host does not resolve")
        return [self.check_address(address, target.port) for address in addresses]

    def check(self, url: str) -> None:
        """The registration check: the URL and every address it resolves to now."""
        self.resolve(self.target(url))


__all__ = [
    "InvalidTarget",
    "Resolver",
    "Target",
    "TargetRefused",
    "Unresolvable",
    "WebhookPolicy",
    "is_local_address",
    "parse_networks",
    "system_resolver",
]

"""TLS and mutual TLS for MLLP (HL7 "MLLP over TLS"; IHE ITI TF-2 §3.2 ATNA secure node).

HL7 v2 has no authentication of its own: on an untrusted network the
transport provides it.  With ``CAREBRIDGE_MLLP_TLS_CERT``/``_KEY`` the listener
speaks TLS ≥ 1.2; with ``CAREBRIDGE_MLLP_TLS_CLIENT_CA`` it also requires a client
certificate signed by that CA, and the certificate's subject CN becomes the
*sender identity*.  A :class:`~gateway.hl7_senders.SenderPolicy` then limits which
MSH-3/MSH-4 each identity may claim (so one hospital cannot inject messages
in another's name), configured as
``CAREBRIDGE_MLLP_ALLOWED_SENDERS="his-a.example=HIS_VN^BVDK_HN|HIS_VN^*;his-b=*"``.
"""

from __future__ import annotations

import ssl
from typing import Any

from common import MllpSettings
from gateway.hl7_senders import SenderPolicy


def server_context(settings: MllpSettings) -> ssl.SSLContext | None:
    """The listener's TLS context, or None for plain TCP (no certificate configured)."""
    if not settings.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert, settings.tls_key or None)
    if settings.tls_client_ca:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=settings.tls_client_ca)
    return context


def client_context(
    ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None
) -> ssl.SSLContext:
    """A client context that verifies the server against ``ca_file`` and may present a certificate."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file:
        context.load_cert_chain(cert_file, key_file or None)
    return context


def peer_identity(peercert: dict[str, Any] | None) -> str | None:
    """Subject common name of a verified peer certificate (``getpeercert()`` form), or None."""
    if not peercert:
        return None
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def sender_policy(settings: MllpSettings) -> SenderPolicy:
    return SenderPolicy.parse(settings.allowed_senders)

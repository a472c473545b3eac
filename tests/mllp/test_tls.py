"""MLLP over TLS and mutual TLS, with a throwaway CA made by `cryptography` for each test."""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common import MllpSettings
from gateway.hl7_senders import SenderPolicy
from gateway.mllp.client import MllpClient
from gateway.mllp.tls import client_context, peer_identity, server_context
from tests.mllp.conftest import RunningServer, a04


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> tuple[str, str]:
    key_path, cert_path = path.with_suffix(".key"), path.with_suffix(".pem")
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(cert_path), str(key_path)


class Ca:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name("carebridge test CA"))
            .issuer_name(_name("carebridge test CA"))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.path, _ = _write(directory / "ca", self.key, self.cert)

    def issue(self, cn: str, *, server: bool) -> tuple[str, str]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
        return _write(self.dir / cn, key, builder.sign(self.key, hashes.SHA256()))


@pytest.fixture
def ca(tmp_path: Path) -> Ca:
    return Ca(tmp_path)


def _server_ctx(ca: Ca, *, mutual: bool) -> ssl.SSLContext:
    cert, key = ca.issue("localhost", server=True)
    settings = MllpSettings(tls_cert=cert, tls_key=key, tls_client_ca=ca.path if mutual else "")
    context = server_context(settings)
    assert context is not None
    return context


def _client(port: int, ctx: ssl.SSLContext) -> MllpClient:
    return MllpClient("127.0.0.1", port, ssl_context=ctx, server_hostname="localhost", timeout=10)


def test_tls_listener(start_server: Callable[..., RunningServer], ca: Ca) -> None:
    mllp = start_server(ssl_context=_server_ctx(ca, mutual=False))
    with _client(mllp.port, client_context(ca.path)) as client:
        ack = client.exchange(a04("TLS1", "TLS-1"))
    assert ack is not None and ack.code == "AA"
    untrusting = ssl.create_default_context()  # does not know our CA
    with pytest.raises(ssl.SSLCertVerificationError):
        _client(mllp.port, untrusting)


def test_mutual_tls_identity_and_sender_allow_list(
    start_server: Callable[..., RunningServer], ca: Ca
) -> None:
    policy = SenderPolicy.parse("his-bvdk=HIS_VN^BVDK_HN|LAB^*;his-other=OTHER^X")
    mllp = start_server(ssl_context=_server_ctx(ca, mutual=True), policy=policy)
    cert, key = ca.issue("his-bvdk", server=False)
    with _client(mllp.port, client_context(ca.path, cert, key)) as client:
        allowed = client.exchange(a04("MTLS1", "MTLS-1"))
        wildcard = client.exchange(a04("MTLS2", "MTLS-2", app="LAB", fac="ANY"))
        spoofed = client.exchange(a04("MTLS3", "MTLS-3", app="HIS_VN", fac="OTHER_HOSPITAL"))
    assert allowed is not None and allowed.code == "AA"
    assert wildcard is not None and wildcard.code == "AA"
    assert spoofed is not None and spoofed.code == "AR" and "not allowed" in spoofed.text

    stranger_cert, stranger_key = ca.issue("unknown-his", server=False)
    with _client(mllp.port, client_context(ca.path, stranger_cert, stranger_key)) as client:
        refused = client.exchange(a04("MTLS4", "MTLS-4"))
    assert refused is not None and refused.code == "AR"

    # No client certificate: the handshake fails (with TLS 1.3 at the first read), no ACK, no journal row.
    answer: bytes | None = None
    try:
        with _client(mllp.port, client_context(ca.path)) as no_cert:
            no_cert.send(a04("MTLS5", "MTLS-5"))
            answer = no_cert.read_frame(5)
    except (ssl.SSLError, OSError):
        pass
    assert answer is None
    with _client(mllp.port, client_context(ca.path, cert, key)) as client:
        after = client.exchange(a04("MTLS6", "MTLS-6"))
    assert after is not None and after.code == "AA"


def test_peer_identity_reads_the_subject_cn() -> None:
    assert peer_identity({"subject": ((("countryName", "VN"),), (("commonName", "his-a"),))}) == "his-a"
    assert peer_identity(None) is None and peer_identity({}) is None

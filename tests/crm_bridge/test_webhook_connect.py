"""The dispatcher's client under the webhook policy: pinned addresses, DNS rebinding, error categories."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from crm_bridge.webhook_http import CATEGORIES, WebhookClient, WebhookError, status_category
from crm_bridge.webhook_policy import WebhookPolicy, parse_networks

PUBLIC = "93.184.216.34"


class _Receiver:
    """Plain or TLS HTTP receiver on loopback; records Host headers and the TLS server names asked for."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.hosts: list[str] = []
        self.server_names: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                outer.hosts.append(self.headers["Host"])
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            tls.sni_callback = lambda _sock, name, _ctx: outer.server_names.append(name)
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    r = _Receiver()
    yield r
    r.close()


def _resolver(*answers: list[str]) -> Callable[[str, int], list[str]]:
    """A DNS that gives ``answers[0]`` to the first question, ``answers[1]`` to the next... (last repeats)."""
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return answers[min(len(asked), len(answers)) - 1]

    return resolve


def _loopback_allowed(resolver: Callable[[str, int], list[str]]) -> WebhookPolicy:
    return WebhookPolicy(allow_http=True, allowed_networks=parse_networks("127.0.0.0/8"), resolver=resolver)


def _category(client: WebhookClient, url: str) -> str:
    with pytest.raises(WebhookError) as caught:
        client.post(url, b"{}", {})
    assert caught.value.category in CATEGORIES
    return caught.value.category


def test_the_connection_goes_to_the_checked_address_under_the_urls_name(receiver: _Receiver) -> None:
    client = WebhookClient(5.0, _loopback_allowed(_resolver(["127.0.0.1"])))
    assert client.post(f"http://crm.example:{receiver.port}/hook", b"{}", {}) == 204
    client.close()
    assert receiver.hosts == [f"crm.example:{receiver.port}"]


def test_dns_rebinding_is_refused_at_the_connection(receiver: _Receiver) -> None:
    """Public when the CRM registers, loopback when carebridge connects: nothing is sent."""
    policy = WebhookPolicy(allow_http=True, resolver=_resolver([PUBLIC], ["127.0.0.1"]))
    url = f"http://crm.example:{receiver.port}/hook"
    policy.check(url)  # registration: fine
    assert _category(WebhookClient(5.0, policy), url) == "target-refused-by-policy"
    assert receiver.hosts == []


def test_each_new_connection_is_checked_again(receiver: _Receiver) -> None:
    """A kept-alive connection stays on its address; a new one re-resolves and re-checks."""
    policy = WebhookPolicy(
        allow_http=True,
        allowed_networks=parse_networks("127.0.0.1/32"),
        resolver=_resolver(["127.0.0.1"], ["127.0.0.2"]),
    )
    client = WebhookClient(5.0, policy)
    url = f"http://crm.example:{receiver.port}/hook"
    assert client.post(url, b"{}", {}) == 204
    assert client.post(url, b"{}", {}) == 204  # same connection: no new question
    client.close()
    assert _category(client, url) == "target-refused-by-policy"  # 127.0.0.2 is not allowed
    assert len(receiver.hosts) == 2


def test_error_categories_never_carry_socket_text(receiver: _Receiver) -> None:
    client = WebhookClient(5.0, _loopback_allowed(_resolver(["127.0.0.1"])))
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        free = closed.getsockname()[1]  # nobody listens once closed
    assert _category(client, f"http://127.0.0.1:{free}/hook") == "connection-refused"
    with socket.socket() as silent:  # accepts (kernel backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        impatient = WebhookClient(0.3, client.policy)
        assert _category(impatient, f"http://127.0.0.1:{silent.getsockname()[1]}/hook") == "timeout"
    assert _category(client, f"https://127.0.0.1:{receiver.port}/hook") == "tls-error"  # plain http
    with socket.socket() as garbage:
        garbage.bind(("127.0.0.1", 0))
        garbage.listen(1)
        accepted: list[socket.socket] = []  # kept open: the client must read the garbage, not a reset

        def answer() -> None:
            conn = garbage.accept()[0]
            accepted.append(conn)
            conn.sendall(b"HELLO\r\n\r\n")

        threading.Thread(target=answer, daemon=True).start()
        assert _category(client, f"http://127.0.0.1:{garbage.getsockname()[1]}/hook") == "protocol-error"
        for conn in accepted:
            conn.close()

    def no_such_host(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    client.policy.resolver = no_such_host
    assert _category(client, "http://nowhere.example/hook") == "dns-error"
    strict = WebhookClient(5.0, WebhookPolicy())
    assert _category(strict, f"https://127.0.0.1:{receiver.port}/hook") == "target-refused-by-policy"
    assert _category(strict, f"http://{PUBLIC}/hook") == "target-refused-by-policy"  # http not allowed
    assert _category(strict, "ftp://crm.example/hook") == "invalid-url"
    assert [status_category(s) for s in (200, 204, 302, 404, 429, 500, 503)] == [
        None,
        None,
        "http-3xx",
        "http-4xx",
        "http-4xx",
        "http-5xx",
        "http-5xx",
    ]


def _certificate(tmp: Path, name: str) -> tuple[Path, Path, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(pem)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path, pem


def test_https_keeps_the_name_for_sni_and_the_certificate_check(tmp_path: Path) -> None:
    cert, key, pem = _certificate(tmp_path, "crm.example")
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    receiver = _Receiver(server_tls)
    try:
        trusting = ssl.create_default_context(cadata=pem.decode())
        policy = _loopback_allowed(_resolver(["127.0.0.1"]))
        client = WebhookClient(5.0, policy, tls=trusting)
        assert client.post(f"https://crm.example:{receiver.port}/hook", b"{}", {}) == 204
        client.close()
        assert receiver.server_names == ["crm.example"]
        assert receiver.hosts == [f"crm.example:{receiver.port}"]
        # the certificate names crm.example, not the address dialled, nor another name
        policy.resolver = _resolver(["127.0.0.1"])
        assert _category(
            WebhookClient(5.0, policy, tls=trusting), f"https://other.example:{receiver.port}/"
        ) == ("tls-error")
        # and the system trust store does not know this certificate
        assert _category(WebhookClient(5.0, policy), f"https://crm.example:{receiver.port}/") == "tls-error"
    finally:
        receiver.close()


def test_errors_stored_before_categories_are_shown_as_categories() -> None:
    from crm_bridge.subscriptions import _reported

    assert _reported(None) is None
    assert _reported("timeout") == "timeout"
    assert _reported("HTTP 503") == "http-5xx"
    assert _reported("ConnectionRefusedError") == "connection-error"

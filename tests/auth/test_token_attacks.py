"""Issue #16 items 2 and 3: each attack on access tokens, replayed, now fails (SQLite and PostgreSQL).

"Another process" is a second :class:`TokenService` on the same database: it shares
nothing with the first but the database, as an HTTP worker does.  It is built with
``refresh_s=0`` (check the revision on every request) so the tests need no clock;
``tests/auth/test_revocation_live.py`` runs the real multi-worker server.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey
from pydantic import ValidationError
from sqlalchemy import Engine, insert, select

from common import Unauthenticated
from common.settings import AuthSettings
from fhir_store import make_engine
from gateway.auth.clients import Client, ClientRegistry
from gateway.auth.schema import auth_revision, signing_key
from gateway.auth.scopes import parse_scopes
from gateway.auth.tokens import ASSERTION_TYPE, TokenService, audience_urls
from tests.support import TEST_SECRET_LOG2N
from tests.support.store_keys import cipher_for

FHIR = "https://carebridge.example.vn/fhir"
TOKEN_URL = "https://carebridge.example.vn/auth/token"


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url, pool_size=2)
    yield engine
    engine.dispose()


def service(engine: Engine, *, audience: str = FHIR, refresh_s: float = 0.0) -> TokenService:
    return TokenService(
        engine,
        cipher_for(engine),
        audience=audience,
        token_url=TOKEN_URL,
        refresh_s=refresh_s,
        lifetime_s=600,
    )


def registered(engine: Engine, client_id: str = "his-1", role: str = "his_integration", **kw: Any) -> Client:
    registry = ClientRegistry(engine, secret_log2n=TEST_SECRET_LOG2N)
    registry.add(client_id, role, **kw)
    client = registry.get(client_id)
    assert client is not None
    return client


def signed(tokens: TokenService, **claims: Any) -> str:
    """A token signed with the server's real key (what only a key holder can make)."""
    key = tokens.state.current().signing
    now = int(time.time())
    body = {"iss": "carebridge", "aud": FHIR, "iat": now, "nbf": now, "exp": now + 60, "gen": 0, **claims}
    return jwt.encode({"alg": "ES256", "kid": key.kid}, body, key)


# -- item 2: sealed signing keys, tokens checked against the client table ----------------------------


def test_database_copy_cannot_mint_a_token(engine: Engine, database_url: str, tmp_path: Path) -> None:
    tokens = service(engine)
    tokens.jwks()  # first start: the signing key is created
    with engine.connect() as conn:
        rows = conn.execute(select(signing_key)).all()
    assert rows and all(r.private_key.startswith("cb1:") for r in rows)
    assert not any("PRIVATE KEY" in r.private_key for r in rows)
    for row in rows:  # what the attacker did with a read-only copy: import the PEM
        with pytest.raises(ValueError):
            ECKey.import_key(row.private_key)
    if database_url.startswith("sqlite"):
        data = Path(database_url.removeprefix("sqlite:///")).read_bytes()
        assert b"PRIVATE KEY" not in data
    # the best the copy offers: a key of the attacker's own under the real kid
    forged_key = ECKey.generate_key("P-256", parameters={"kid": rows[0].kid})
    now = int(time.time())
    forged = jwt.encode(
        {"alg": "ES256", "kid": rows[0].kid},
        {"iss": "carebridge", "aud": FHIR, "client_id": "his-1", "role": "his_integration", "exp": now + 60},
        forged_key,
    )
    with pytest.raises(Unauthenticated):
        service(engine).verify(forged)


def test_clear_key_rows_are_sealed_at_start_and_still_verify(engine: Engine) -> None:
    """A database migrated from before sealing holds clear PEMs: the first start seals them."""
    legacy = ECKey.generate_key("P-256", parameters={"kid": "legacy1"})
    with engine.begin() as conn:
        conn.execute(
            insert(signing_key).values(
                kid="legacy1",
                algorithm="ES256",
                private_key=legacy.as_pem(private=True).decode(),
                created_us=1,
            )
        )
    client = registered(engine)
    tokens = service(engine)
    old_token = jwt.encode(
        {"alg": "ES256", "kid": "legacy1"},
        {
            "iss": "carebridge",
            "aud": FHIR,
            "client_id": "his-1",
            "role": "his_integration",
            "gen": 0,
            "iat": int(time.time()),
            "exp": int(time.time()) + 60,
        },
        legacy,
    )
    assert tokens.verify(old_token).client_id == client.client_id
    with engine.connect() as conn:
        stored = conn.execute(
            select(signing_key.c.private_key).where(signing_key.c.kid == "legacy1")
        ).scalar()
    assert stored is not None and stored.startswith("cb1:") and "PRIVATE KEY" not in stored


def test_token_of_an_unknown_client_is_refused(engine: Engine) -> None:
    tokens = service(engine)
    ghost = Client("ghost", "his_integration", "system/Patient.cruds", None, None, True, None)
    with pytest.raises(Unauthenticated, match="unknown or disabled"):
        tokens.verify(tokens.issue(ghost, parse_scopes(ghost.scopes))["access_token"])


# -- item 3: revocation reaches every process ---------------------------------------------------------


def _disable(registry: ClientRegistry) -> None:
    registry.set_active("his-1", False)


def _remove(registry: ClientRegistry) -> None:
    registry.remove("his-1")


def _rotate(registry: ClientRegistry) -> None:
    registry.rotate_secret("his-1")


def _demote(registry: ClientRegistry) -> None:
    registry.set_role("his-1", "clinician")


@pytest.mark.parametrize("change", [_disable, _remove, _rotate, _demote], ids=lambda f: f.__name__[1:])
def test_changed_client_token_is_refused_in_another_process(engine: Engine, change: Any) -> None:
    client = registered(engine)
    issuer, worker = service(engine), service(engine)
    token = issuer.issue(client, parse_scopes(client.scopes))["access_token"]
    assert worker.verify(token).role == "his_integration"  # cached in the worker from now on
    before = _revision(engine)
    change(ClientRegistry(engine, secret_log2n=TEST_SECRET_LOG2N))
    assert _revision(engine) > before
    with pytest.raises(Unauthenticated):
        worker.verify(token)
    with pytest.raises(Unauthenticated):
        issuer.verify(token)


def test_enabled_again_client_works_and_new_secret_gets_a_valid_token(engine: Engine) -> None:
    client = registered(engine)
    registry = ClientRegistry(engine, secret_log2n=TEST_SECRET_LOG2N)
    issuer, worker = service(engine), service(engine)
    token = issuer.issue(client, [])["access_token"]
    registry.set_active("his-1", False)
    with pytest.raises(Unauthenticated):
        worker.verify(token)
    registry.set_active("his-1", True)
    assert worker.verify(token).client_id == "his-1"
    secret = registry.rotate_secret("his-1")
    fresh = registry.authenticate_secret("his-1", secret)
    assert fresh.generation == 1
    assert worker.verify(issuer.issue(fresh, [])["access_token"]).generation == 1


def test_rotation_signs_with_the_new_key_everywhere_and_publishes_both(engine: Engine) -> None:
    client = registered(engine)
    worker = service(engine)
    old_token = worker.issue(client, [])["access_token"]
    old_kid = worker.jwks()["keys"][0]["kid"]
    new_kid = service(engine).rotate()  # `carebridge keys rotate-signing`, another process
    assert (
        jwt.decode(worker.issue(client, [])["access_token"], worker.state.current().keys).header["kid"]
        == new_kid
    )
    assert {k["kid"] for k in worker.jwks()["keys"]} == {old_kid, new_kid}
    assert worker.verify(old_token).client_id == "his-1"  # retired key still verifies until expiry


def test_refresh_setting_is_at_most_five_seconds() -> None:
    assert AuthSettings().refresh_s <= 5
    with pytest.raises(ValidationError):
        AuthSettings(refresh_s=6)


# -- claims ------------------------------------------------------------------------------------------


def test_token_for_another_audience_is_refused(engine: Engine) -> None:
    client = registered(engine)
    elsewhere = service(engine, audience="https://other.example.vn/fhir")
    token = elsewhere.issue(client, [])["access_token"]
    with pytest.raises(Unauthenticated, match="aud"):
        service(engine).verify(token)
    with pytest.raises(Unauthenticated, match="aud"):
        service(engine).verify(signed(service(engine), client_id="his-1", role="his_integration", aud=None))


@pytest.mark.parametrize("claim", ["iat", "nbf"])
def test_token_from_the_future_is_refused(engine: Engine, claim: str) -> None:
    registered(engine)
    tokens = service(engine)
    now = int(time.time())
    with pytest.raises(Unauthenticated, match="not valid yet"):
        tokens.verify(signed(tokens, client_id="his-1", role="his_integration", **{claim: now + 600}))
    # within the clock-skew leeway (CAREBRIDGE_AUTH_CLOCK_SKEW_S) it is accepted
    assert tokens.verify(signed(tokens, client_id="his-1", role="his_integration", **{claim: now + 5}))


def test_patient_token_without_patient_claim_is_refused(engine: Engine) -> None:
    registered(engine, "pt-1", "patient", patient_id="p-123")
    tokens = service(engine)
    with pytest.raises(Unauthenticated, match="patient"):
        tokens.verify(signed(tokens, client_id="pt-1", role="patient", scope="patient/*.rs"))
    with pytest.raises(Unauthenticated):  # nor bound to another patient than the client's
        tokens.verify(signed(tokens, client_id="pt-1", role="patient", patient="p-999"))
    assert (
        tokens.verify(signed(tokens, client_id="pt-1", role="patient", patient="p-123")).patient_id == "p-123"
    )


# -- private_key_jwt ---------------------------------------------------------------------------------


def _assertion(key: ECKey, client_id: str, aud: str, jti: str) -> str:
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": aud, "exp": now + 120, "iat": now, "jti": jti}
    return jwt.encode({"alg": "ES256", "kid": key.kid}, claims, key)


def test_client_assertion_is_single_use_in_every_process(engine: Engine) -> None:
    key = ECKey.generate_key("P-256", parameters={"kid": "backend-1"})
    jwks = json.dumps({"keys": [key.as_dict(private=False)]})
    client = registered(engine, "backend", "his_integration", jwks=jwks, with_secret=False)
    assertion = _assertion(key, "backend", TOKEN_URL, "once-1")
    service(engine).verify_client_assertion(client, assertion)
    for process in (service(engine), service(engine)):
        with pytest.raises(Unauthenticated, match="already used"):
            process.verify_client_assertion(client, assertion)
    with pytest.raises(Unauthenticated, match="audience"):  # built from a Host header the client chose
        service(engine).verify_client_assertion(
            client, _assertion(key, "backend", "http://attacker.example/auth/token", "once-2")
        )
    with pytest.raises(Unauthenticated, match="jti"):
        service(engine).verify_client_assertion(client, _assertion(key, "backend", TOKEN_URL, ""))
    assert ASSERTION_TYPE.endswith("jwt-bearer")


def test_audience_urls_come_from_settings() -> None:
    assert audience_urls("https://cb.example.vn/", "0.0.0.0", 8080) == (
        "https://cb.example.vn/fhir",
        "https://cb.example.vn/auth/token",
    )
    assert audience_urls("https://cb.example.vn/fhir", "h", 1)[0] == "https://cb.example.vn/fhir"
    assert audience_urls("", "127.0.0.1", 8080) == (
        "http://127.0.0.1:8080/fhir",
        "http://127.0.0.1:8080/auth/token",
    )


def _revision(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(auth_revision.c.revision)).scalar() or 0)

"""Scope grammar, role ceilings, client secrets and token signing/rotation on real databases."""

from __future__ import annotations

import time

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import Engine

from common.errors import Forbidden, InvalidInput, Unauthenticated, VersionConflict
from fhir_store.database import make_engine
from gateway.auth.clients import DEFAULT_SECRET_LOG2N, ClientRegistry, hash_secret, secret_matches
from gateway.auth.scopes import grant, grantable, parse_scope, parse_scopes, require
from gateway.auth.tokens import TokenService
from tests.support.store_keys import cipher_for


def test_scope_grammar_v2_and_v1() -> None:
    scope = parse_scope("system/Patient.cruds")
    assert scope is not None and scope.permissions == frozenset("cruds")
    assert str(parse_scope("patient/*.read")) == "patient/*.rs"
    assert parse_scope("openid") is None
    with pytest.raises(InvalidInput):
        parse_scope("system/Patient.xyz")


def test_role_ceiling_narrows_requests() -> None:
    assert [str(s) for s in grantable("clinician", "system/Patient.cruds")] == ["system/Patient.rs"]
    assert grantable("crm", "system/*.cruds") == []
    assert {str(s) for s in grantable("his_integration", "system/*.r")} == {
        "system/Patient.r",
        "system/Encounter.r",
        "system/Appointment.r",
        "system/Consent.r",  # the HIS may record consents captured at its front desk
    }
    assert [str(s) for s in grant(parse_scopes("system/Patient.rs"), "system/Patient.cruds")] == [
        "system/Patient.rs"
    ]


def test_require_names_the_missing_scope() -> None:
    scopes = parse_scopes("system/Patient.rs")
    assert require(scopes, "clinician", "Patient", "r") == "system"
    with pytest.raises(Forbidden) as info:
        require(scopes, "clinician", "Patient", "c")
    assert "system/Patient.c" in info.value.message
    with pytest.raises(Forbidden):  # a token scope beyond the role ceiling is not honoured
        require(parse_scopes("system/Patient.cruds"), "compliance_officer", "Patient", "r")


def test_secret_hash_round_trip() -> None:
    stored = hash_secret("s3cret")
    assert secret_matches("s3cret", stored) and not secret_matches("s3cret!", stored)
    assert "s3cret" not in stored


def test_clients_and_tokens(database_url: str) -> None:
    engine = make_engine(database_url, pool_size=2)
    registry = ClientRegistry(engine)
    secret = registry.add("his-1", "his_integration")
    assert secret
    with pytest.raises(VersionConflict):
        registry.add("his-1", "clinician")
    with pytest.raises(Unauthenticated):
        registry.authenticate_secret("his-1", "wrong")
    client = registry.authenticate_secret("his-1", secret)

    tokens = _service(engine)
    issued = tokens.issue(client, parse_scopes(client.scopes))
    principal = tokens.verify(issued["access_token"])
    assert principal.client_id == "his-1" and principal.role == "his_integration"
    assert any(s.allows("Patient", "c") for s in principal.scopes)

    old_kid = tokens.jwks()["keys"][0]["kid"]
    tokens.rotate()
    kids = [k["kid"] for k in tokens.jwks()["keys"]]
    assert old_kid in kids and len(kids) == 2  # old key still published until its tokens expire
    assert tokens.verify(issued["access_token"]).client_id == "his-1"
    fresh = _service(engine)  # another process: same keys from the database
    assert fresh.verify(tokens.issue(client, [])["access_token"]).client_id == "his-1"

    forged_key = ECKey.generate_key("P-256", parameters={"kid": old_kid})
    forged = jwt.encode(
        {"alg": "ES256", "kid": old_kid},
        {"iss": "carebridge", "client_id": "x", "role": "admin", "exp": int(time.time()) + 60},
        forged_key,
    )
    with pytest.raises(Unauthenticated):
        fresh.verify(forged)
    engine.dispose()


def test_secret_hash_keeps_its_cost() -> None:
    """Each hash records its scrypt parameters: a cheap test hash and a default one both verify,
    and a hash stored before parameters were recorded (scrypt$salt$digest) is read as N=2^14."""
    default = hash_secret("s3cret")
    assert default.startswith(f"scrypt$ln={DEFAULT_SECRET_LOG2N},r=8,p=1$")
    cheap = hash_secret("s3cret", log2n=10)
    assert cheap.startswith("scrypt$ln=10,r=8,p=1$")
    assert secret_matches("s3cret", cheap) and not secret_matches("s3creT", cheap)
    _, _, salt_hex, digest_hex = default.split("$")
    legacy = f"scrypt${salt_hex}${digest_hex}"
    assert secret_matches("s3cret", legacy) and not secret_matches("s3cret!", legacy)
    assert not secret_matches("s3cret", f"scrypt$ln=99,r=8,p=1${salt_hex}${digest_hex}")
    assert not secret_matches("s3cret", "not a hash")


def test_registry_hashes_at_the_configured_cost(database_url: str) -> None:
    engine = make_engine(database_url, pool_size=2)
    registry = ClientRegistry(engine, secret_log2n=11)
    secret = registry.add("his-cost", "his_integration")
    client = registry.get("his-cost")
    assert secret and client is not None and client.secret_hash is not None
    assert client.secret_hash.startswith("scrypt$ln=11,")
    assert registry.authenticate_secret("his-cost", secret).client_id == "his-cost"
    assert ClientRegistry(engine).authenticate_secret("his-cost", secret).client_id == "his-cost"


def _service(engine: Engine) -> TokenService:
    return TokenService(
        engine,
        cipher_for(engine),
        audience="http://cb.test/fhir",
        token_url="http://cb.test/auth/token",
        lifetime_s=60,
    )

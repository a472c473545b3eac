"""Issue #16 over real HTTP: Host-header audiences, replayed assertions, unbound patient tokens, revocation."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey
from starlette.requests import Request

from common import Forbidden
from gateway.auth.clients import ClientRegistry
from gateway.auth.scopes import parse_scopes
from gateway.auth.tokens import ASSERTION_TYPE, Principal
from gateway.http.principal import FHIR, PRIVACY, _authorize
from tests.http.live import LiveServer, serve
from tests.support import TEST_SECRET_LOG2N


@pytest.fixture
def live(database_url: str) -> Iterator[LiveServer]:
    with serve(database_url) as server:
        yield server


def _assertion(key: ECKey, aud: str, jti: str) -> str:
    now = int(time.time())
    claims = {"iss": "backend", "sub": "backend", "aud": aud, "iat": now, "exp": now + 120, "jti": jti}
    return jwt.encode({"alg": "ES256", "kid": key.kid}, claims, key)


def test_assertion_audience_is_the_configured_token_url_and_single_use(live: LiveServer) -> None:
    key = ECKey.generate_key("P-256", parameters={"kid": "b1"})
    ClientRegistry(live.runtime.engine).add(
        "backend",
        "his_integration",
        jwks=json.dumps({"keys": [key.as_dict(private=False)]}),
        with_secret=False,
    )
    form = {
        "grant_type": "client_credentials",
        "client_id": "backend",
        "client_assertion_type": ASSERTION_TYPE,
    }
    url = f"{live.base_url}/auth/token"
    spoofed = _assertion(key, "http://attacker.example/auth/token", "a-1")
    answer = httpx.post(url, data={**form, "client_assertion": spoofed}, headers={"Host": "attacker.example"})
    assert answer.status_code == 401 and "audience" in answer.json()["error_description"]
    good = _assertion(key, live.runtime.tokens.token_url, "a-2")
    first = httpx.post(url, data={**form, "client_assertion": good})
    assert first.status_code == 200, first.text
    replay = httpx.post(url, data={**form, "client_assertion": good})
    assert replay.status_code == 401 and "already used" in replay.json()["error_description"]
    smart = httpx.get(
        f"{live.base_url}/.well-known/smart-configuration", headers={"Host": "attacker.example"}
    )
    assert smart.json()["token_endpoint"] == live.runtime.tokens.token_url


def test_unbound_patient_token_is_refused(live: LiveServer) -> None:
    ClientRegistry(live.runtime.engine, secret_log2n=TEST_SECRET_LOG2N).add(
        "pt-1", "patient", patient_id="p-1"
    )
    key = live.runtime.tokens.state.current().signing
    now = int(time.time())
    claims = {
        "iss": "carebridge",
        "aud": live.runtime.tokens.audience,
        "client_id": "pt-1",
        "role": "patient",
        "scope": "patient/*.rs",
        "gen": 0,
        "iat": now,
        "exp": now + 60,
    }
    token = jwt.encode({"alg": "ES256", "kid": key.kid}, claims, key)
    answer = httpx.get(f"{live.fhir_url}/Patient", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 401
    # and should such a principal ever exist, every channel refuses it (no unconfined patient)
    unbound = Principal("pt-1", "patient", tuple(parse_scopes("patient/*.rs")), None, now + 60)
    for access in (FHIR, PRIVACY):
        with pytest.raises(Forbidden):
            _authorize(_request(), access, unbound)


def test_disabled_client_is_refused_at_once(live: LiveServer) -> None:
    assert httpx.get(f"{live.fhir_url}/Patient", headers=live.headers).status_code == 200
    client_id = live.runtime.tokens.verify(live.headers["Authorization"].split()[1]).client_id
    ClientRegistry(live.runtime.engine).set_active(client_id, False)
    live.runtime.tokens.state.refresh_s = 0  # what the refresh interval does in a few seconds
    assert httpx.get(f"{live.fhir_url}/Patient", headers=live.headers).status_code == 401


def _request() -> Request:
    return Request(
        {"type": "http", "method": "GET", "path": "/fhir/Patient", "headers": [], "path_params": {}}
    )

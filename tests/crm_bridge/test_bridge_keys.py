"""Startup refuses a configured CRM without a pseudonym key when the keys come from the environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.settings import CrmSettings, Settings
from consent.keys import KeyMaterialError, KeyStore
from crm_bridge.bridge import CrmBridge
from crm_bridge.config import ProjectionConfig
from fhir_store.database import make_engine
from fhir_store.repository import FhirStore
from tests.crm_bridge.conftest import CRM_ID, PROJECTION
from tests.support.store_keys import cipher_for


def _bridge(database_url: str, tmp_path: Path, keys: KeyStore) -> CrmBridge:
    projection = tmp_path / "projection.json"
    projection.write_text(json.dumps(PROJECTION))
    engine = make_engine(database_url, pool_size=2)
    store = FhirStore(engine, cipher=cipher_for(engine))
    return CrmBridge.create(
        engine,
        store,
        CrmSettings(),
        auditor=None,
        transport=lambda endpoint, message, timeout: None,
        build_siu=lambda *args, **kwargs: b"",
        config=ProjectionConfig.load(str(projection)),
        keys=keys,
    )


def test_environment_keys_without_the_crms_key_refuse_to_start(database_url: str, tmp_path: Path) -> None:
    other = KeyStore.load_or_create(str(tmp_path / "other.json"))
    other.pseudonym("some-other-crm", "1")
    env = {"CAREBRIDGE_CRM_KEYS": (tmp_path / "other.json").read_text()}
    with pytest.raises(KeyMaterialError, match=CRM_ID):
        _bridge(database_url, tmp_path, KeyStore.load_or_create(Settings.from_env(env).crm.key_source))

    complete = KeyStore.load_or_create(str(tmp_path / "complete.json"))
    complete.pseudonym(CRM_ID, "1")
    env = {"CAREBRIDGE_CRM_KEYS": (tmp_path / "complete.json").read_text()}
    bridge = _bridge(database_url, tmp_path, KeyStore.load_or_create(Settings.from_env(env).crm.key_source))
    assert bridge.keys.pseudonym(CRM_ID, "1") == complete.pseudonym(CRM_ID, "1")

"""The store cipher for tests that build a ``FhirStore`` themselves (without ``Runtime``).

Same key file as ``Settings().store.key_file`` (``var/store-keys.json``), so a
test that also starts a runtime or a ``carebridge`` subprocess on the same
database opens the same keys (a different file would be refused as a mismatch).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from common.settings import StoreSettings
from fhir_store.content_cipher import StoreCipher
from fhir_store.key_registry import open_cipher

KEY_FILE = str(Path(__file__).resolve().parents[2] / StoreSettings().key_file)
"""Absolute, so ``carebridge serve`` subprocesses started in a temporary directory share it."""


def cipher_for(engine: Engine) -> StoreCipher:
    return open_cipher(engine, KEY_FILE)

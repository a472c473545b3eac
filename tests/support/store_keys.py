"""The store cipher for tests that build a ``FhirStore`` themselves (without ``Runtime``).

Same key file as ``Settings().store_key_file`` (``var/store-keys.json``), so a
test that also starts a runtime or a ``carebridge`` subprocess on the same
database opens the same keys (a different file would be refused as a mismatch).
"""

from __future__ import annotations

from sqlalchemy import Engine

from fhir_store.content_cipher import StoreCipher, default_key_file
from fhir_store.key_registry import open_cipher


def cipher_for(engine: Engine) -> StoreCipher:
    return open_cipher(engine, default_key_file())

"""Keys for pseudonyms (HMAC-SHA256 per CRM) and field encryption (AES-256-GCM), with rotation.

Why (Decree 356/2025/ND-CP Art. 7 and 9: keep identifying data apart, encrypt
sensitive data; ISO/IEC 27001:2022 A.8.11 masking/pseudonymization, A.8.24
cryptography with key management and rotation):

* a CRM sees ``<kid>.<base32 HMAC-SHA256(key_kid, "Patient/<id>")>``: stable
  for as long as the key lives, different per CRM (two CRMs cannot join their
  data on it), not reversible without the key and the link table;
* rotating a CRM's key makes a new current kid; old kids stay to resolve old
  pseudonyms, and the bridge delivers an old → new mapping so the CRM keeps
  its links (see ``crm_bridge.outbox.rotate_pseudonyms``);
* direct identifiers and contact data we keep outside the FHIR store (outbox
  payloads, webhook secrets) are sealed with AES-GCM under the current field
  key; the key id travels with the ciphertext so old rows stay readable after
  a rotation and can be re-encrypted.

Keys live in a JSON file outside the database (created 0600 on first use),
or in the environment variable ``CAREBRIDGE_CRM_KEYS`` (same JSON), so a
database dump alone reveals neither pseudonym links nor contact data::

    {"field": {"current": "f1", "keys": {"f1": "<base64 32 bytes>"}},
     "pseudonym": {"crm-main": {"current": "k1", "keys": {"k1": "<base64 32 bytes>"}}}}
"""

from __future__ import annotations

import base64
import threading
from pathlib import Path
from typing import Any

from common.keyring import AeadCipher, KeyFile, KeyMaterialError, KeyRing, hmac_sha256

ENV_KEYS = "CAREBRIDGE_CRM_KEYS"

__all__ = ["ENV_KEYS", "KeyMaterialError", "KeyRing", "KeyStore", "pseudonym_with"]


def _b32(digest: bytes) -> str:
    return base64.b32encode(digest).decode().rstrip("=").lower()[:32]


def pseudonym_with(key: bytes, kid: str, patient_id: str) -> str:
    digest = hmac_sha256(key, f"Patient/{patient_id}".encode())
    return f"{kid}.{_b32(digest)}"


class KeyStore:
    """Field and per-CRM pseudonym key rings, persisted to a 0600 JSON file (or read from env)."""

    def __init__(self, path: Path | None, field_ring: KeyRing, pseudonym: dict[str, KeyRing]) -> None:
        self.path = path
        self.field = field_ring
        self.rings = pseudonym
        self.cipher = AeadCipher(field_ring)
        self._lock = threading.RLock()

    @classmethod
    def load_or_create(cls, path: str | None, environ: dict[str, str] | None = None) -> KeyStore:
        document = KeyFile.load_or_create(path, ENV_KEYS, _fresh, environ)
        data = document.data
        return cls(document.path, KeyRing.from_json(data["field"]), _rings(data))

    def save(self) -> None:
        if self.path is None:
            return
        data = {"field": self.field.to_json(), "pseudonym": {k: v.to_json() for k, v in self.rings.items()}}
        KeyFile(self.path, data).save()

    def ring_for(self, crm_id: str) -> KeyRing:
        ring = self.rings.get(crm_id)
        if ring is None:
            with self._lock:
                ring = self.rings.get(crm_id)
                if ring is None:
                    ring = KeyRing.fresh("k")
                    self.rings[crm_id] = ring
                    self.save()
        return ring

    def pseudonym(self, crm_id: str, patient_id: str, kid: str | None = None) -> str:
        ring = self.ring_for(crm_id)
        use = kid or ring.current
        return pseudonym_with(ring.keys[use], use, patient_id)

    def projection_digest(self, crm_id: str, projection: bytes) -> str:
        """Keyed hash (hex) of what was last sent to ``crm_id``, for change detection only.

        Why keyed: a plain SHA-256 of a projection (pseudonym, display name,
        phone, birth year) lets anyone holding a dump confirm a guessed name and
        phone.  Under the CRM's current pseudonym key (domain-separated from
        pseudonyms); a rotation changes the pseudonym in the projection anyway.
        """
        ring = self.ring_for(crm_id)
        return hmac_sha256(ring.keys[ring.current], b"carebridge/projection\x00" + projection).hex()

    def rotate_pseudonym_key(self, crm_id: str) -> tuple[str, str]:
        """New current key for ``crm_id``; returns (old kid, new kid)."""
        with self._lock:
            ring = self.ring_for(crm_id)
            old = ring.current
            new = ring.rotate("k")
            self.save()
            return old, new

    def rotate_field_key(self) -> tuple[str, str]:
        with self._lock:
            old = self.field.current
            new = self.field.rotate("f")
            self.save()
            return old, new


def _fresh() -> dict[str, Any]:
    return {"field": KeyRing.fresh("f").to_json(), "pseudonym": {}}


def _rings(data: dict[str, Any]) -> dict[str, KeyRing]:
    return {crm: KeyRing.from_json(ring) for crm, ring in (data.get("pseudonym") or {}).items()}

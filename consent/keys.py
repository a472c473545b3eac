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
  a rotation and are re-encrypted by ``carebridge crm rewrap-fields``
  (``crm_bridge.field_keys``), after which the old key can be retired;
* a running process follows a key file rewritten by another (a rotation from
  the command line) within seconds, like the store's keys.

Keys live in a JSON file outside the database (created 0600 on first use),
or in the environment variable ``CAREBRIDGE_CRM_KEYS`` (same JSON), so a
database dump alone reveals neither pseudonym links nor contact data::

    {"field": {"current": "f1", "keys": {"f1": "<base64 32 bytes>"}},
     "pseudonym": {"crm-main": {"current": "k1", "keys": {"k1": "<base64 32 bytes>"}}}}
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from common import AeadCipher, KeyFile, KeyMaterialError, KeyRing, KeySource, hmac_sha256

ENV_KEYS = "CAREBRIDGE_CRM_KEYS"
RELOAD_EVERY_S = 5.0  # a running process notices a rotated key file within this time

__all__ = [
    "ENV_KEYS",
    "FieldCipher",
    "KeyMaterialError",
    "KeyRing",
    "KeySource",
    "KeyStore",
    "pseudonym_with",
]


def _b32(digest: bytes) -> str:
    return base64.b32encode(digest).decode().rstrip("=").lower()[:32]


def pseudonym_with(key: bytes, kid: str, patient_id: str) -> str:
    digest = hmac_sha256(key, f"Patient/{patient_id}".encode())
    return f"{kid}.{_b32(digest)}"


class FieldCipher:
    """AES-256-GCM under the field ring that follows rotations made by another process.

    Why: ``carebridge crm rotate-field-key`` and ``rewrap-fields`` run as
    separate processes while ``carebridge serve`` keeps sealing and opening.
    Sealing re-reads a rewritten key file at most every
    :data:`RELOAD_EVERY_S` (so new rows move to the new key within seconds),
    and opening a row under a key id this process does not hold re-reads it at
    once (a row rewrapped under a key rotated after this process started).
    """

    def __init__(self, keys: KeyStore) -> None:
        self._keys = keys

    def seal(self, plaintext: bytes, aad: bytes) -> tuple[str, bytes]:
        self._keys.refresh(RELOAD_EVERY_S)
        return self._keys.field_aead.seal(plaintext, aad)

    def open(self, kid: str, blob: bytes, aad: bytes) -> bytes:
        if kid not in self._keys.field.keys:
            self._keys.refresh(0)
        return self._keys.field_aead.open(kid, blob, aad)


class KeyStore:
    """Field and per-CRM pseudonym key rings, persisted to a 0600 JSON file (or read from env)."""

    def __init__(self, document: KeyFile) -> None:
        self.document = document
        self._lock = threading.RLock()
        self._parse()
        self.cipher = FieldCipher(self)

    def _parse(self) -> None:
        data = self.document.data
        field_ring = KeyRing.from_json(data["field"])
        self.rings: dict[str, KeyRing] = _rings(data)
        self.field_aead = AeadCipher(field_ring)
        self.field = field_ring

    @property
    def path(self) -> Path | None:
        return self.document.path

    @classmethod
    def load_or_create(cls, source: KeySource | str | None) -> KeyStore:
        """From ``settings.crm.key_source`` (``CAREBRIDGE_CRM_KEYS`` or the key file), or a bare path."""
        return cls(KeyFile.load_or_create(KeySource.of(source), _fresh))

    def refresh(self, every_s: float) -> bool:
        """Re-read the key file if another process rewrote it (a rotation); True when reloaded."""
        with self._lock:
            if self.document.changed(every_s):
                self._parse()
                return True
            return False

    def save(self) -> None:
        if self.path is None:
            return
        self.document.data = {
            **self.document.data,
            "field": self.field.to_json(),
            "pseudonym": {k: v.to_json() for k, v in self.rings.items()},
        }
        self.document.save()

    def ring_for(self, crm_id: str) -> KeyRing:
        """The CRM's pseudonym key ring; a key file gets a new ring for a new CRM, saved at once.

        Keys from ``CAREBRIDGE_CRM_KEYS`` cannot be saved: a ring made up here would live
        in this process only, so each process and each restart would give the same
        patient another pseudonym.  That is refused instead (the gateway checks every
        configured CRM at startup, see ``crm_bridge.bridge``).
        """
        self.refresh(RELOAD_EVERY_S)
        ring = self.rings.get(crm_id)
        if ring is None:
            with self._lock:
                self.refresh(0)  # never overwrite a key another process just added
                ring = self.rings.get(crm_id)
                if ring is None:
                    if self.path is None:
                        raise KeyMaterialError(
                            f"no pseudonym key for CRM client {crm_id!r} in {ENV_KEYS}: add one to the "
                            "JSON there (docs/operations.md §3), or use a key file"
                        )
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
            self.refresh(0)
            ring = self.ring_for(crm_id)
            old = ring.current
            new = ring.rotate("k")
            self.save()
            return old, new

    def rotate_field_key(self) -> tuple[str, str]:
        """New current field key (old ones kept to read existing rows); returns (old kid, new kid)."""
        with self._lock:
            self.refresh(0)
            old = self.field.current
            new = self.field.rotate("f")
            self.save()
            return old, new

    def retire_field_keys(self, kids: Iterable[str]) -> list[str]:
        """Remove old field keys from the key file; returns the ids removed.

        Why: a key that no row needs any more should not stay where it can
        leak.  The caller must know nothing in the database is sealed under
        them (``crm_bridge.field_keys.rewrap_fields`` checks); the current key
        is never removed.  Backups taken earlier still need the old file.
        """
        with self._lock:
            self.refresh(0)
            gone = sorted(k for k in set(kids) if k in self.field.keys and k != self.field.current)
            if gone:
                ring = KeyRing(
                    self.field.current, {k: v for k, v in self.field.keys.items() if k not in gone}
                )
                self.field_aead = AeadCipher(ring)
                self.field = ring
                self.save()
            return gone


def _fresh() -> dict[str, Any]:
    return {"field": KeyRing.fresh("f").to_json(), "pseudonym": {}}


def _rings(data: dict[str, Any]) -> dict[str, KeyRing]:
    return {crm: KeyRing.from_json(ring) for crm, ring in (data.get("pseudonym") or {}).items()}

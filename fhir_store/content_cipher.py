"""Encryption at rest inside the FHIR store: sealed resource JSON and HL7 bytes, blind indexes.

Why (issue #5; DESIGN.md §3 "CCCD and BHYT are direct identifiers: encrypted
at rest"; ISO/IEC 27001:2022 A.8.24, A.8.11): a database dump, a stolen
backup or a curious DBA must not reveal who the patients are.  So:

* **Resource content** (``resource_current``/``resource_version``) is sealed
  with AES-256-GCM.  The associated data is ``Type/id/version``, so a
  ciphertext copied onto another row (another patient, or an older version
  pasted over the current one) fails to authenticate instead of being served.
* **HL7 journal bytes** (``hl7_journal.raw``, the PID segment with CCCD, BHYT
  and phone) are sealed the same way, bound to sender and control id.
* **Blind indexes**: identifier values and phone/e-mail values are stored in
  the search index and the identifier claim table as a keyed HMAC, so
  ``identifier=system|value`` lookups and the uniqueness constraint still
  work on equality, while the clear values never reach those tables.  The
  ``system`` stays in clear (``identifier=system|`` keeps working).

Envelope of a sealed value (the key id travels with the ciphertext, so rows
stay readable after a rotation and ``carebridge store rewrap`` can find the
rows still under an old key with a prefix comparison in SQL)::

    MAGIC "\\x00CB1" | len(kid) u8 | kid (ascii) | nonce (12) | ciphertext | tag (16)

Rows written before encryption existed are plaintext JSON (they start with
``{``) or raw HL7 (journal) and stay readable; the rewrap pass seals them.

Keys live outside the database, in a JSON key file (``CAREBRIDGE_STORE_KEY_FILE``,
default ``var/store-keys.json``, created 0600 on first use) or in the
environment variable ``CAREBRIDGE_STORE_KEYS`` holding the same JSON::

    {"content": {"current": "c1", "keys": {"c1": "<base64 32 bytes>"}},
     "blind":   {"current": "b1", "keys": {"b1": "<base64 32 bytes>"}}}

Which blind key the index was built with is recorded in the database
(``fhir_store.key_registry``): lookups must use that key, not whatever the
file calls current.
"""

from __future__ import annotations

import base64
from typing import Any

from common import (
    AeadCipher,
    CarebridgeError,
    KeyFile,
    KeyMaterialError,
    KeyRing,
    KeySource,
    fingerprint,
    hmac_sha256,
)

ENV_KEYS = "CAREBRIDGE_STORE_KEYS"
MAGIC = b"\x00CB1"
CONTENT_PREFIX = "c"
BLIND_PREFIX = "b"
RELOAD_EVERY_S = 5.0  # a running process notices a rotated key file within this time
_RESOURCE_AAD = b"carebridge/resource\x00"
_JOURNAL_AAD = b"carebridge/hl7\x00"
_BLIND_DOMAIN = b"carebridge/blind\x00"
_HL7_DIGEST_DOMAIN = b"carebridge/hl7-digest\x00"
_TEXT_AAD = b"carebridge/text\x00"
_TOMBSTONE_DOMAIN = b"carebridge/tombstone\x00"
TEXT_MAGIC = "cb1:"  # sealed text: "cb1:<kid>:<base64url(nonce | ciphertext | tag)>"


class SealedDataError(KeyMaterialError, CarebridgeError):
    """A stored value cannot be opened: wrong key file, unknown key id, or a swapped/corrupted row.

    Rendered as a 500 OperationOutcome; the message names the row (ids only), never its content.
    """

    http_status = 500
    issue_code = "exception"


def _fresh() -> dict[str, Any]:
    return {
        "content": KeyRing.fresh(CONTENT_PREFIX).to_json(),
        "blind": KeyRing.fresh(BLIND_PREFIX).to_json(),
    }


class StoreKeys:
    """The store's key document: the content ring (rotated freely) and the blind-index ring."""

    def __init__(self, document: KeyFile) -> None:
        self.document = document
        self._parse()

    def _parse(self) -> None:
        try:
            self.content = KeyRing.from_json(self.document.data["content"])
            self.blind = KeyRing.from_json(self.document.data["blind"])
        except (KeyError, TypeError, ValueError) as exc:
            raise KeyMaterialError(f"the store key document is malformed: {type(exc).__name__}") from None

    @classmethod
    def load(cls, source: KeySource | str | None) -> StoreKeys | None:
        """The keys from ``CAREBRIDGE_STORE_KEYS`` or the key file; None when neither exists."""
        document = KeyFile.load(KeySource.of(source))
        return None if document is None else cls(document)

    @classmethod
    def create(cls, source: KeySource | str | None) -> StoreKeys:
        """Load, or create the key file (0600); a process racing to create it gets the same keys."""
        return cls(KeyFile.load_or_create(KeySource.of(source), _fresh))

    @property
    def location(self) -> str:
        return ENV_KEYS if self.document.path is None else str(self.document.path)

    def _save(self) -> None:
        self.document.data = {
            **self.document.data,
            "content": self.content.to_json(),
            "blind": self.blind.to_json(),
        }
        self.document.save()

    def rotate_content(self) -> tuple[str, str]:
        """New current content key (old ones kept to read existing rows); returns (old, new)."""
        old = self.content.current
        new = self.content.rotate(CONTENT_PREFIX)
        self._save()
        return old, new

    def add_blind_key(self) -> str:
        """A new blind-index key (used once ``carebridge store reindex`` rebuilds the index with it)."""
        new = self.blind.rotate(BLIND_PREFIX)
        self._save()
        return new

    def fingerprints(self) -> dict[tuple[str, str], str]:
        """``{(purpose, kid): fingerprint}`` for every key held (what the database registry checks)."""
        out = {("content", kid): fingerprint(key) for kid, key in self.content.keys.items()}
        out.update({("blind", kid): fingerprint(key) for kid, key in self.blind.keys.items()})
        return out

    def refresh(self, every_s: float) -> bool:
        """Re-read the key file if another process rewrote it (a rotation); True when reloaded."""
        if self.document.changed(every_s):
            self._parse()
            return True
        return False


def _header(kid: str) -> bytes:
    raw = kid.encode("ascii")
    return MAGIC + bytes([len(raw)]) + raw


def text_kid(stored: str) -> str | None:
    """The key id a sealed text value is under; None for a legacy plaintext value."""
    if not stored.startswith(TEXT_MAGIC):
        return None
    kid, sep, _ = stored[len(TEXT_MAGIC) :].partition(":")
    return kid if sep else None


def envelope_kid(stored: bytes) -> str | None:
    """The key id a stored value is sealed under; None for a legacy plaintext value."""
    if not stored.startswith(MAGIC) or len(stored) < len(MAGIC) + 1:
        return None
    size = stored[len(MAGIC)]
    return stored[len(MAGIC) + 1 : len(MAGIC) + 1 + size].decode("ascii", "replace")


class StoreCipher:
    """Seals and opens store rows and blinds searchable identifiers (passed to ``FhirStore``).

    ``blind_kid`` is the blind-index key the database's index was built with
    (from ``fhir_store.key_registry``); new content is sealed under the key
    file's current content key.
    """

    def __init__(self, keys: StoreKeys, blind_kid: str) -> None:
        if blind_kid not in keys.blind.keys:
            raise KeyMaterialError(f"blind-index key {blind_kid!r} is not in {keys.location}")
        self.keys = keys
        self.blind_kid = blind_kid
        self._install()

    def _install(self) -> None:
        self._aead = AeadCipher(self.keys.content)
        self._blind_key = self.keys.blind.keys[self.blind_kid]
        self._blind_prefix = f"{self.blind_kid}."

    def use_blind_key(self, kid: str) -> None:
        """Blind with ``kid`` from now on (after the index was rebuilt under it)."""
        self.blind_kid = kid
        self._install()

    @property
    def content_kid(self) -> str:
        return self.keys.content.current

    def current_prefix(self) -> bytes:
        """Envelope prefix of values sealed under the current content key (rewrap selects the others)."""
        return _header(self.content_kid)

    def _seal(self, plaintext: bytes, context: bytes) -> bytes:
        if self.keys.refresh(RELOAD_EVERY_S):
            self._install()
        aead = self._aead  # one ring for header and key, even if another thread reloads meanwhile
        header = _header(aead.ring.current)
        _kid, blob = aead.seal(plaintext, header + context)
        return header + blob

    def _open(self, stored: bytes, context: bytes) -> bytes:
        """Open an envelope (hot path of every read: no work beyond parsing and decrypting)."""
        if not stored.startswith(MAGIC):
            raise KeyMaterialError("neither sealed nor legacy plaintext")
        end = len(MAGIC) + 1 + stored[len(MAGIC)]
        kid = stored[len(MAGIC) + 1 : end].decode("ascii", "replace")
        if kid not in self.keys.content.keys and self.keys.refresh(0):
            self._install()  # rotated (and rewrapped) by another process since we loaded the keys
        try:
            return self._aead.open(kid, stored[end:], stored[:end] + context)  # AAD: header + row
        except KeyMaterialError as exc:
            raise KeyMaterialError(f"cannot be decrypted under key {kid!r}: {exc}") from None

    # -- resources --------------------------------------------------------------

    def seal_resource(self, resource_type: str, resource_id: str, version: int, content: bytes) -> bytes:
        return self._seal(content, _RESOURCE_AAD + f"{resource_type}/{resource_id}/{version}".encode())

    def open_resource(self, resource_type: str, resource_id: str, version: int, stored: bytes) -> bytes:
        """The served JSON bytes; legacy plaintext rows (``{...}``) are returned as they are."""
        if stored[:1] == b"{":
            return stored
        try:
            return self._open(stored, _RESOURCE_AAD + f"{resource_type}/{resource_id}/{version}".encode())
        except KeyMaterialError as exc:
            raise SealedDataError(f"{resource_type}/{resource_id} version {version}: {exc}") from None

    # -- HL7 journal ------------------------------------------------------------

    @staticmethod
    def _journal_aad(application: str, facility: str, control_id: str) -> bytes:
        return _JOURNAL_AAD + "\x00".join((application, facility, control_id)).encode()

    def seal_journal(self, application: str, facility: str, control_id: str, raw: bytes) -> bytes:
        return self._seal(raw, self._journal_aad(application, facility, control_id))

    def open_journal(self, application: str, facility: str, control_id: str, stored: bytes) -> bytes:
        """The raw message bytes; rows journaled before encryption are returned as they are."""
        if not stored.startswith(MAGIC):
            return stored
        try:
            return self._open(stored, self._journal_aad(application, facility, control_id))
        except KeyMaterialError as exc:
            raise SealedDataError(f"HL7 journal message {control_id or '(no control id)'}: {exc}") from None

    # -- blind index ------------------------------------------------------------

    def blind(self, value: str) -> str:
        """``<kid>.<base64url HMAC-SHA256>`` of a searchable direct identifier or contact value."""
        digest = hmac_sha256(self._blind_key, _BLIND_DOMAIN + value.encode())
        return self._blind_prefix + base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def tombstone_hashes(self, subject: str) -> list[str]:
        """``<kid>.<HMAC>`` of an erased subject under every blind key held, the active key first.

        Why every key: a tombstone cannot be re-keyed (only its hash is kept), so
        after a blind-key rotation the rows written under the old key must still
        match; old blind keys stay in the key file (``StoreKeys.add_blind_key``).
        """
        kids = [self.blind_kid, *(k for k in self.keys.blind.keys if k != self.blind_kid)]
        return [self._keyed(kid, _TOMBSTONE_DOMAIN + subject.encode()) for kid in kids]

    def journal_digests(self, content: bytes) -> list[str]:
        """``<kid>.<HMAC>`` of an HL7 message's canonical content, the active blind key first.

        Keyed (not a bare SHA-256) because the content is patient data: a copy of
        the database must not confirm a guessed message.  Every blind key held is
        returned so a retry still matches a row journaled before a key rotation.
        """
        kids = [self.blind_kid, *(k for k in self.keys.blind.keys if k != self.blind_kid)]
        return [self._keyed(kid, _HL7_DIGEST_DOMAIN + content) for kid in kids]

    def _keyed(self, kid: str, data: bytes) -> str:
        digest = hmac_sha256(self.keys.blind.keys[kid], data)
        return f"{kid}." + base64.urlsafe_b64encode(digest).decode().rstrip("=")

    # -- sealed text columns (fhir_store.sealed_columns) -------------------------

    def current_text_prefix(self) -> str:
        """Prefix of text sealed under the current content key (rewrap selects the others)."""
        return f"{TEXT_MAGIC}{self.content_kid}:"

    def seal_text(self, context: bytes, text: str) -> str:
        """``text`` sealed under the current content key, as text; ``context`` names its row and column."""
        sealed = self._seal(text.encode(), _TEXT_AAD + context)
        end = len(MAGIC) + 1 + sealed[len(MAGIC)]
        kid = sealed[len(MAGIC) + 1 : end].decode("ascii")
        return f"{TEXT_MAGIC}{kid}:" + base64.urlsafe_b64encode(sealed[end:]).decode()

    def open_text(self, context: bytes, stored: str, what: str) -> str:
        """The clear text; a legacy plaintext value (written before sealing) is returned as it is.

        ``what`` names the row in the error (ids only, never content).
        """
        kid = text_kid(stored)
        if kid is None:
            return stored
        try:
            blob = base64.urlsafe_b64decode(stored[len(TEXT_MAGIC) + len(kid) + 1 :])
            return self._open(_header(kid) + blob, _TEXT_AAD + context).decode()
        except (KeyMaterialError, ValueError) as exc:
            raise SealedDataError(f"{what}: {exc}") from None

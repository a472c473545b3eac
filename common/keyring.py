"""Key rings kept outside the database: AES-256-GCM sealing and HMAC under named, rotatable keys.

Why one implementation (ISO/IEC 27001:2022 A.8.24 cryptography with key
management and rotation): the CRM bridge (``consent.keys``) and the FHIR store
(``fhir_store.content_cipher``) both seal data under keys that must survive
the database (a dump alone must not open it), rotate without re-encrypting
everything at once, and never be generated twice by two processes racing at
first start.  Getting those details right once is the point of this module.

* A :class:`KeyRing` is a set of named 32-byte keys plus the id of the one
  used for new material; old keys stay to read what they sealed.
* :class:`AeadCipher` seals with AES-256-GCM under the current key and returns
  the key id beside the ciphertext, so the caller stores the id with the row.
* :class:`KeyFile` is the JSON document holding the rings: a file created
  0600 on first use (atomically: a second process racing to create it reads
  the winner's keys instead of writing its own), or the same JSON given inline
  by a setting such as ``CAREBRIDGE_STORE_KEYS`` (read-only: rotation is then
  done where that secret is managed).  :class:`KeySource` says which.

Nothing here knows what the keys protect; callers choose the JSON layout.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12


class KeyMaterialError(Exception):
    """A key id is unknown, a key file is missing or unusable, or a ciphertext does not authenticate."""


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """Keyed hash (pseudonyms, blind indexes): stable per key, not reversible without it."""
    return hmac.digest(key, data, hashlib.sha256)


def fingerprint(key: bytes) -> str:
    """A check value naming a key without revealing it (stored in databases, printed to operators)."""
    return hmac_sha256(key, b"carebridge key fingerprint").hex()[:16]


@dataclass
class KeyRing:
    """Named 32-byte keys and the id of the one used for new material."""

    current: str
    keys: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def fresh(cls, prefix: str) -> KeyRing:
        kid = f"{prefix}1"
        return cls(kid, {kid: secrets.token_bytes(KEY_BYTES)})

    def rotate(self, prefix: str) -> str:
        """Add a new key (``<prefix><n+1>``), make it current, return its id; old keys stay."""
        n = 1 + max((int(k[len(prefix) :]) for k in self.keys if k[len(prefix) :].isdigit()), default=0)
        kid = f"{prefix}{n}"
        self.keys[kid] = secrets.token_bytes(KEY_BYTES)
        self.current = kid
        return kid

    def to_json(self) -> dict[str, Any]:
        return {
            "current": self.current,
            "keys": {k: base64.b64encode(v).decode() for k, v in self.keys.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> KeyRing:
        keys = {str(k): base64.b64decode(v) for k, v in data["keys"].items()}
        current = str(data["current"])
        if current not in keys or any(len(v) != KEY_BYTES for v in keys.values()):
            raise KeyMaterialError("a key ring needs 32-byte keys and a current key id among them")
        return cls(current, keys)


class AeadCipher:
    """AES-256-GCM sealing: ``kid`` is returned beside the blob; ``aad`` binds it to its row.

    The blob is ``nonce (12 bytes) || ciphertext || tag``.  ``AESGCM`` objects
    are cached per key id: building one per call costs as much as sealing a
    small record.
    """

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring
        self._aead: dict[tuple[str, bytes], AESGCM] = {}

    def _for(self, kid: str) -> AESGCM:
        key = self.ring.keys.get(kid)
        if key is None:
            raise KeyMaterialError(f"key {kid!r} is not available")
        aead = self._aead.get((kid, key))
        if aead is None:
            aead = self._aead[(kid, key)] = AESGCM(key)
        return aead

    def seal(self, plaintext: bytes, aad: bytes) -> tuple[str, bytes]:
        kid = self.ring.current
        nonce = secrets.token_bytes(NONCE_BYTES)
        return kid, nonce + self._for(kid).encrypt(nonce, plaintext, aad)

    def open(self, kid: str, blob: bytes, aad: bytes) -> bytes:
        aead = self._for(kid)
        try:
            return aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
        except InvalidTag:
            raise KeyMaterialError("ciphertext does not authenticate (wrong key or row)") from None


@dataclass(frozen=True)
class KeySource:
    """Where a key document comes from: ``inline`` JSON if given (it wins), else the file ``path``.

    ``name`` is the setting that held the inline JSON, quoted in error messages so
    an operator knows where to look (``common.settings`` builds these).
    """

    path: str | None
    inline: str = ""
    name: str = "inline keys"

    @classmethod
    def of(cls, source: KeySource | str | os.PathLike[str] | None) -> KeySource:
        """A bare path (or None) means a key file and no inline JSON."""
        if isinstance(source, KeySource):
            return source
        return cls(None if source is None else os.fspath(source))


class KeyFile:
    """A JSON document of key rings, from a 0600 file (created on first use) or inline JSON.

    ``changed()`` tells a long-running process that another process (a
    rotation command) rewrote the file, so it can reload instead of sealing
    under a key that is no longer current.
    """

    def __init__(self, path: Path | None, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data
        self._stamp = self._stat()
        self._checked = time.monotonic()

    @classmethod
    def load(cls, source: KeySource) -> KeyFile | None:
        """The keys given inline if any, else from the file; None when neither exists."""
        if source.inline:
            try:
                return cls(None, json.loads(source.inline))
            except ValueError:
                raise KeyMaterialError(f"{source.name} does not hold valid JSON") from None
        file = Path(source.path) if source.path else None
        if file is None or not file.exists():
            return None
        try:
            return cls(file, json.loads(file.read_text()))
        except ValueError:
            raise KeyMaterialError(f"key file {file} does not hold valid JSON") from None

    @classmethod
    def load_or_create(cls, source: KeySource, fresh: Callable[[], dict[str, Any]]) -> KeyFile:
        """Load, or create the file (0600) with ``fresh()``; a concurrent creator's keys win."""
        found = cls.load(source)
        if found is not None:
            return found
        if not source.path:
            return cls(None, fresh())  # in-memory only (tests, throwaway tools)
        file = Path(source.path)
        file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # var/: owner only
        tmp = file.with_name(f".{file.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        _write_private(tmp, fresh())
        try:
            os.link(tmp, file)  # atomic "create if absent": never overwrites another process's keys
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        loaded = cls.load(KeySource(str(file)))
        assert loaded is not None
        return loaded

    def save(self) -> None:
        """Atomically replace the file with :attr:`data` (mode 0600); refused for environment keys."""
        if self.path is None:
            raise KeyMaterialError(
                "keys come from an environment variable: add the new key there (see docs/operations.md)"
            )
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        _write_private(tmp, self.data)
        os.replace(tmp, self.path)
        self._stamp = self._stat()

    def _stat(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def changed(self, every_s: float = 0.0) -> bool:
        """True (and :attr:`data` reloaded) when the file was rewritten; stat at most every ``every_s``."""
        if self.path is None:
            return False
        now = time.monotonic()
        if every_s and now - self._checked < every_s:
            return False
        self._checked = now
        stamp = self._stat()
        if stamp is None or stamp == self._stamp:
            return False
        self.data = json.loads(self.path.read_text())
        self._stamp = stamp
        return True


def _write_private(path: Path, data: dict[str, Any]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())

"""Audit signing key and Ed25519-signed checkpoints of the hash chain.

Why: the SHA-256 chain alone shows that rows were changed only to someone
who does not recompute it; a database superuser can rewrite the whole chain.
ISO/IEC 27001:2022 A.5.33 (protection of records) and A.8.24 (cryptography with
key management) therefore add a secret kept *outside* the database:

* every N events (and on demand, ``carebridge audit checkpoint``) the chain head
  ``(seq, hash)`` is signed with an Ed25519 private key; anyone holding the
  exported public key (``carebridge audit public-key``) can check that the
  chain up to that point is the one the service wrote;
* a per-event HMAC key is derived from the same private key (HKDF), so a row
  forged after the last checkpoint is detected too, by whoever holds the key
  file (the service host, the verifier).

The key file is PEM (PKCS#8), created on first use with mode 0600.  Losing it
means old checkpoints stay verifiable with the exported public key, but MACs
cannot be checked any more: back it up with the database (see docs).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Connection, insert, select

from audit.schema import audit_checkpoint, audit_event
from fhir_store import now_us

_SIGNED_PREFIX = b"carebridge-audit-checkpoint/v1\n"
_MAC_INFO = b"carebridge audit event mac v1"


def key_id_of(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:32]


def signed_message(seq: int, chain_hash: bytes, created_us: int) -> bytes:
    """What a checkpoint signs: position, chain head and time, unambiguously framed."""
    return _SIGNED_PREFIX + struct.pack(">qq", seq, created_us) + chain_hash


@dataclass(frozen=True)
class VerifyKey:
    """The public half: enough to check checkpoints (not MACs)."""

    public_key: Ed25519PublicKey

    @property
    def key_id(self) -> str:
        return key_id_of(self.public_key)

    def check(self, seq: int, chain_hash: bytes, created_us: int, signature: bytes) -> bool:
        try:
            self.public_key.verify(signature, signed_message(seq, chain_hash, created_us))
        except Exception:
            return False
        return True

    def public_pem(self) -> str:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    @classmethod
    def from_pem(cls, pem: bytes) -> VerifyKey:
        key = serialization.load_pem_public_key(pem)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("not an Ed25519 public key")
        return cls(key)


class AuditKeys:
    """The private signing key and the derived MAC key."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key
        self.verify_key = VerifyKey(private_key.public_key())
        raw = private_key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        self._mac_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_MAC_INFO).derive(raw)

    @property
    def key_id(self) -> str:
        return self.verify_key.key_id

    def mac(self, chain_hash: bytes) -> bytes:
        return hmac.digest(self._mac_key, chain_hash, "sha256")

    def sign(self, seq: int, chain_hash: bytes, created_us: int) -> bytes:
        return self._private.sign(signed_message(seq, chain_hash, created_us))

    @classmethod
    def generate(cls) -> AuditKeys:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AuditKeys:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 private key")
        return cls(key)

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> AuditKeys:
        """Load the key file, or create it (0600, exclusive create: two processes never race)."""
        target = Path(path)
        if target.exists():
            return cls.load(target)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # var/: owner only
        keys = cls.generate()
        pem = keys._private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return cls.load(target)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        return keys


def write_checkpoint(
    conn: Connection, keys: AuditKeys, seq: int, chain_hash: bytes, created_us: int | None = None
) -> None:
    """Sign ``(seq, chain_hash)``; called by the chain writer under the chain lock."""
    created = now_us() if created_us is None else created_us
    conn.execute(
        insert(audit_checkpoint).values(
            seq=seq,
            created_us=created,
            hash=chain_hash,
            key_id=keys.key_id,
            signature=keys.sign(seq, chain_hash, created),
        )
    )


def checkpoint_now(conn: Connection, keys: AuditKeys) -> int | None:
    """On-demand checkpoint of the current head; returns its seq (None: empty chain).

    Must run in a write transaction that holds the chain lock (see
    :func:`audit.chain.lock_chain`), so the head cannot move meanwhile.
    """
    row = conn.execute(
        select(audit_event.c.seq, audit_event.c.hash).order_by(audit_event.c.seq.desc()).limit(1)
    ).first()
    if row is None:
        return None
    seq = int(row[0])
    exists = conn.execute(select(audit_checkpoint.c.seq).where(audit_checkpoint.c.seq == seq)).first()
    if exists is None:
        write_checkpoint(conn, keys, seq, bytes(row[1]))
    return seq

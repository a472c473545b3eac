"""The backup key and the encrypted archive format (:mod:`gateway.backup` uses both).

Why a format of our own rather than a tool's: a backup holds every patient's
health data (sensitive data under Law 91/2025/QH15 Art. 9), so it never exists
unencrypted outside a private temporary directory, and a restore must be able
to tell a wrong key from tampering before it touches a database.  The archive
is AES-256-GCM in fixed-size chunks (the "STREAM" construction of Hoang,
Reyhanitabar, Rogaway and Vizár, as used by age and Tink): every chunk's
nonce is ``prefix || counter || last-flag`` and the header is authenticated
as associated data, so edited, reordered, truncated or extended archives
are all rejected, and memory use stays flat for large databases.

Archive layout (all integers big-endian)::

    header  = magic "CBBACKUP" | version u8 (=1) | backend u8 (1 sqlite, 2 postgresql)
              | chunk_size u32 | nonce_prefix 7 bytes | key_id 8 bytes
    chunk*  = length u32 | AES-256-GCM(key, nonce_prefix | counter u32 | last u8, plaintext, aad=header)

``key_id`` is a fingerprint of the key (a keyed-context SHA-256, not the key) so a
wrong key is reported as "wrong key" rather than as tampering.

The key file holds 32 random bytes (raw, or 64 hex characters so it can be pasted
from a password vault); :func:`load_or_create_key` creates it with mode 0600.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import struct
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"CBBACKUP"
VERSION = 1
KEY_BYTES = 32
CHUNK_SIZE = 1 << 20  # 1 MiB of plaintext per authenticated chunk
MAX_CHUNK_SIZE = 64 << 20  # refuse absurd headers instead of allocating them
_HEADER = struct.Struct(">8sBBI7s8s")
_LENGTH = struct.Struct(">I")
_TAG_BYTES = 16
#: Engines an archive can hold, as coded in its header.
BACKEND_CODES = {"sqlite": 1, "postgresql": 2}
_BACKEND_NAMES = {code: name for name, code in BACKEND_CODES.items()}


class BackupError(Exception):
    """A backup or restore could not be done; the message says why, for an operator."""


class WrongKey(BackupError):
    """The archive was written under a different backup key."""


class TamperedArchive(BackupError):
    """The archive is not a carebridge backup, or was edited, truncated or extended."""


# -- keys -------------------------------------------------------------------------------------


def key_id(key: bytes) -> str:
    """A fingerprint that identifies the key without revealing it (printed, stored in headers)."""
    return hashlib.sha256(b"carebridge backup key id\0" + key).hexdigest()[:16]


def load_key(path: str | os.PathLike[str]) -> bytes:
    """Read a key file: 32 raw bytes, or 64 hex characters (surrounding whitespace ignored)."""
    file = Path(path)
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise BackupError(
            f"backup key file {file} does not exist; a new key cannot open an existing archive "
            "(restore the key file from where you keep its copy)"
        ) from None
    if len(data) == KEY_BYTES:
        return data
    text = data.strip()
    if len(text) == 2 * KEY_BYTES:
        with contextlib.suppress(ValueError):
            return bytes.fromhex(text.decode("ascii"))
    raise BackupError(f"backup key file {file} must hold 32 bytes (raw) or 64 hex characters")


def load_or_create_key(path: str | os.PathLike[str]) -> tuple[bytes, bool]:
    """The key from ``path``, creating 32 random bytes with mode 0600 if missing; (key, created)."""
    file = Path(path)
    if file.exists():
        return load_key(file), False
    file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # var/: owner only
    key = secrets.token_bytes(KEY_BYTES)
    # O_EXCL: two processes racing to create the key must not end up with different keys.
    try:
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_key(file), False
    with os.fdopen(fd, "wb") as out:
        out.write(key)
    return key, True


# -- the archive format -----------------------------------------------------------------------


def _nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    return prefix + struct.pack(">IB", counter, 1 if last else 0)


def encrypt_stream(
    source: BinaryIO, target: BinaryIO, key: bytes, backend: str, *, chunk_size: int = CHUNK_SIZE
) -> int:
    """Encrypt ``source`` into ``target`` (header + chunks); returns the plaintext size."""
    aead = AESGCM(key)
    header = _HEADER.pack(
        MAGIC, VERSION, BACKEND_CODES[backend], chunk_size, secrets.token_bytes(7), bytes.fromhex(key_id(key))
    )
    prefix = header[14:21]
    target.write(header)
    total, counter = 0, 0
    chunk = source.read(chunk_size)
    while True:
        following = source.read(chunk_size)  # read ahead: the last chunk is flagged in its nonce
        last = not following
        sealed = aead.encrypt(_nonce(prefix, counter, last), chunk, header)
        target.write(_LENGTH.pack(len(sealed)) + sealed)
        total += len(chunk)
        if last:
            return total
        if counter == 0xFFFFFFFF:
            raise BackupError("database too large for one archive (2^32 chunks)")
        counter += 1
        chunk = following


def read_header(source: BinaryIO) -> tuple[bytes, str, int, str]:
    """(raw header, backend, chunk size, key id) of an archive; raises TamperedArchive."""
    header = source.read(_HEADER.size)
    if len(header) != _HEADER.size or not header.startswith(MAGIC):
        raise TamperedArchive("not a carebridge backup archive (bad magic)")
    _magic, version, backend, chunk_size, _prefix, kid = _HEADER.unpack(header)
    if version != VERSION:
        raise TamperedArchive(f"unsupported archive version {version} (this carebridge reads {VERSION})")
    if backend not in _BACKEND_NAMES or not 0 < chunk_size <= MAX_CHUNK_SIZE:
        raise TamperedArchive("archive header is corrupt")
    return header, _BACKEND_NAMES[backend], chunk_size, kid.hex()


def decrypt_stream(source: BinaryIO, target: BinaryIO, key: bytes) -> str:
    """Authenticate and decrypt an archive into ``target``; returns its backend name.

    Raises :class:`WrongKey` or :class:`TamperedArchive`; ``target`` then holds
    partial plaintext which the caller must discard.
    """
    header, backend, chunk_size, kid = read_header(source)
    if kid != key_id(key):
        raise WrongKey(f"wrong backup key: the archive was written with key {kid}, this key is {key_id(key)}")
    aead, prefix, counter = AESGCM(key), header[14:21], 0
    while True:
        raw_length = source.read(_LENGTH.size)
        if len(raw_length) != _LENGTH.size:
            raise TamperedArchive("archive is truncated (the final chunk is missing)")
        (length,) = _LENGTH.unpack(raw_length)
        if not _TAG_BYTES <= length <= chunk_size + _TAG_BYTES:
            raise TamperedArchive(f"archive is corrupt or tampered (chunk {counter} has a bad length)")
        sealed = source.read(length)
        if len(sealed) != length:
            raise TamperedArchive("archive is truncated")
        plain: bytes | None = None
        last = False
        for flag in (False, True):
            with contextlib.suppress(InvalidTag):
                plain = aead.decrypt(_nonce(prefix, counter, flag), sealed, header)
                last = flag
                break
        if plain is None:
            raise TamperedArchive(f"archive is corrupt or tampered (chunk {counter} fails authentication)")
        target.write(plain)
        if last:
            if source.read(1):
                raise TamperedArchive("archive has data after its final chunk (tampered)")
            return backend
        counter += 1

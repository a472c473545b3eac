"""Text columns outside the resource tables that hold personal data, sealed under the content key.

Why (Law 91/2025/QH15 Art. 26 health data is sensitive; ISO/IEC 27001:2022
A.8.24): the side tables of other packages (privacy requests, receipts, HIS
booking answers) carry free text typed by patients, staff, the CRM or the HIS —
reasons, identity-verification notes, response documents with a full data
export — which a dump must not show.  They are sealed like resource content
(``StoreCipher.seal_text``: AES-256-GCM under the current content key, the key
id in the value) with the table, column and row key as associated data, so a
value copied onto another row or column does not open.

The packages that own those tables declare the handles next to the table and
register them explicitly (``fhir_store.registry.Registry.add_sealed``, called
from their ``registration.register``; nothing registers at import), so
``carebridge store status|rewrap`` count and move them with the resource
tables without ``fhir_store`` importing them, and a content key is never
retired while one of these values still needs it.

Values written before sealing existed are plaintext and stay readable
(:meth:`SealedText.open` returns them as they are); ``rewrap`` seals them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Engine, Table, and_, func, select

from fhir_store.batch_rewrite import rewrite_rows
from fhir_store.content_cipher import TEXT_MAGIC, StoreCipher


@dataclass(frozen=True)
class SealedText:
    """One sealed text column: ``key`` are the columns naming its row (primary key)."""

    table: Table
    column: str
    key: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.table.name}.{self.column}"

    def _context(self, key_values: Sequence[Any]) -> bytes:
        return "\x00".join((self.table.name, self.column, *(str(v) for v in key_values))).encode()

    def seal(self, cipher: StoreCipher, key_values: Sequence[Any], text: str | None) -> str | None:
        return None if text is None else cipher.seal_text(self._context(key_values), text)

    def open(self, cipher: StoreCipher, key_values: Sequence[Any], stored: str | None) -> str | None:
        if stored is None:
            return None
        return cipher.open_text(self._context(key_values), stored, f"{self.name} of {tuple(key_values)}")

    @staticmethod
    def is_clear(stored: str) -> bool:
        """Whether ``stored`` was written before sealing (plaintext that ``rewrap`` would seal)."""
        return not stored.startswith(TEXT_MAGIC)

    @property
    def stored(self) -> Column[Any]:
        return self.table.c[self.column]


REGISTRY: dict[str, SealedText] = {}


def register(spec: SealedText) -> SealedText:
    """Declare ``spec`` sealed (idempotent); returns the handle registered under its name."""
    return REGISTRY.setdefault(spec.name, spec)


def counts(engine: Engine, cipher: StoreCipher) -> dict[str, dict[str, int]]:
    """``{table.column: {kid or "plaintext": rows}}`` of the registered columns holding values."""
    out: dict[str, dict[str, int]] = {}
    with engine.connect() as conn:
        for name, spec in sorted(REGISTRY.items()):
            col = spec.stored
            found: dict[str, int] = {}
            for kid in cipher.keys.content.keys:
                prefix = f"{TEXT_MAGIC}{kid}:"
                n = conn.execute(
                    select(func.count()).where(func.substr(col, 1, len(prefix)) == prefix)
                ).scalar_one()
                if n:
                    found[kid] = int(n)
            plain = conn.execute(
                select(func.count()).where(
                    col.is_not(None), func.substr(col, 1, len(TEXT_MAGIC)) != TEXT_MAGIC
                )
            ).scalar_one()
            if plain:
                found["plaintext"] = int(plain)
            if found:
                out[name] = found
    return out


def rewrap_column(
    engine: Engine,
    cipher: StoreCipher,
    spec: SealedText,
    *,
    batch: int = 500,
    progress: Callable[[str, int], None] | None = None,
) -> tuple[int, int]:
    """Re-seal every value of ``spec`` not under the current key; (rewritten, changed meanwhile).

    Same rules as ``fhir_store.rewrap`` (``fhir_store.batch_rewrite``): short
    batches, and an update applies only if the value is still the one read.
    """
    col = spec.stored
    keys = [spec.table.c[k] for k in spec.key]
    prefix = cipher.current_text_prefix()

    def reseal(row: Mapping[Any, Any]) -> dict[str, str | None]:
        key_values = tuple(row[k] for k in keys)
        return {spec.column: spec.seal(cipher, key_values, spec.open(cipher, key_values, str(row[col])))}

    return rewrite_rows(
        engine,
        spec.table,
        order=keys,
        guard=[col],
        where=and_(col.is_not(None), func.substr(col, 1, len(prefix)) != prefix),
        rewrite=reseal,
        batch=batch,
        progress=progress,
        name=spec.name,
    )

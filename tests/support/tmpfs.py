"""A small tmpfs for tests that need a real full disk (root only: ``mount -t tmpfs``)."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path


class SmallDisk:
    """A mounted tmpfs of ``size``; :meth:`fill` writes a file until ENOSPC, :meth:`free` removes it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.filler = root / "filler"

    def fill(self) -> None:
        with contextlib.suppress(OSError), self.filler.open("ab") as out:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        with contextlib.suppress(OSError), self.filler.open("ab") as out:
            while True:
                out.write(b"\0" * 512)
                out.flush()

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


@contextlib.contextmanager
def small_disk(directory: Path, size: str = "16m") -> Iterator[SmallDisk]:
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)], check=True)
    try:
        yield SmallDisk(directory)
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def truncate_wal(database: Path) -> None:
    """Fold the WAL into the database and truncate it, so the next write must grow the file."""
    with contextlib.closing(sqlite3.connect(database)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

"""CPU seconds of the processes a benchmark drives (Linux ``/proc``), to say where a message's cost goes.

A throughput figure alone cannot tell "the code is slow" from "the machine is
full": on a 2-core host the senders, carebridge and PostgreSQL share the same
cores.  Benchmarks report CPU milliseconds per message for each of them next to
msg/s, so the ceiling a run implies (cores / total CPU per message) is visible.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    # the command name (field 2) may hold spaces and parentheses: split after its closing one
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all threads."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / _TICK


def process_tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process, its live children and the children it reaped.

    carebridge with its HTTP worker processes, or a PostgreSQL postmaster with its
    backends: a pooled backend lives as long as the pool, and a reaped child's
    time is added to its parent's ``cutime``/``cstime``, so the sum grows
    monotonically and a difference over a run is that run's CPU.
    """
    fields = _stat(pid)
    total = sum(int(fields[i]) for i in (11, 12, 13, 14))
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            child = _stat(int(entry.name))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # exited meanwhile
        if int(child[1]) == pid:  # field 4: ppid
            total += int(child[11]) + int(child[12])
    return total / _TICK


def postgres_cpu_s(data_dir: Path) -> float:
    """CPU seconds of the PostgreSQL server whose data directory is ``data_dir``."""
    return process_tree_cpu_s(int((data_dir / "postmaster.pid").read_text().split()[0]))

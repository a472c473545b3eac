"""Wall time and CPU time of a command's whole process tree, PostgreSQL servers included.

Why: on a shared 2-core machine the wall time of the test suite follows the load of the other
tenants; the CPU seconds the suite itself burns do not (much).  ``pg_ctl`` detaches the servers
it starts, so their CPU is invisible to ``time``; this wrapper makes itself a child subreaper
(Linux ``prctl(PR_SET_CHILD_SUBREAPER)``), inherits them, reaps them once they exit and reports
``RUSAGE_CHILDREN``, which then counts every process of the tree.

    python bench/suite_cpu.py .venv/bin/pytest -n 2 -q
"""

from __future__ import annotations

import ctypes
import os
import resource
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
REAP_TIMEOUT_S = 120  # the servers stop in the session teardown; give stragglers this long


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("prctl(PR_SET_CHILD_SUBREAPER) failed: detached servers will not be counted", file=sys.stderr)
    load = os.getloadavg()
    started = time.monotonic()
    code = subprocess.call(argv)
    wall = time.monotonic() - started
    deadline = time.monotonic() + REAP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        f"exit {code}: wall {wall:.1f} s, CPU {usage.ru_utime + usage.ru_stime:.1f} s "
        f"(user {usage.ru_utime:.1f}, system {usage.ru_stime:.1f}); "
        f"load average before {load[0]:.1f}, after {os.getloadavg()[0]:.1f}",
        file=sys.stderr,
    )
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

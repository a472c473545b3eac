"""One carebridge HTTP process with the audit trail on or off, for ``bench.fhir_load --audit``.

Why a launcher of its own: issue #4 asks what the audit trail costs against the
FHIR store's REST numbers, i.e. the same server with and without it.  carebridge
itself has no switch to turn auditing off (every access and change must leave a
record), so this benchmark-only launcher builds the ordinary runtime and, with
``--audit off``, takes the audit hook out of the store (changes and accesses) and
the consent decision point (decisions).  Everything else -- auth, scope checks,
encryption, the CRM outbox, validation -- is the same in both modes.  One process,
no MLLP listener; the same launcher serves the "on" runs, so both sides start alike.

    python -m bench.serve_for_bench --database-url URL --port 8080 --audit off
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from gateway.http.app import create_app
    from gateway.logging_setup import configure_logging
    from gateway.runtime import Runtime
    from gateway.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--audit", choices=["on", "off"], default="on")
    args = parser.parse_args(argv)
    settings = Settings.from_env(database_url=args.database_url, http_port=args.port)
    configure_logging(settings.log_level)
    runtime = Runtime.create(settings, migrate=False)
    if args.audit == "off":
        runtime.store.pipeline = runtime.store.pipeline.without("audit")
        runtime.crm.pdp.auditor = None
    app = create_app(runtime)
    try:
        uvicorn.run(
            app, host="127.0.0.1", port=args.port, log_config=None, access_log=False, proxy_headers=False
        )
    finally:
        runtime.close()


if __name__ == "__main__":
    main()

"""Write the OpenAPI document of the app to ``openapi/openapi.json`` (or stdout).

``python -m gateway.http.export_openapi`` regenerates the committed file;
``--check`` exits 1 when the committed file differs (the drift test runs this
in a fresh interpreter so imports elsewhere in a test session cannot change
the registered resource types).  No real database is touched: the app is built
on a scratch SQLite database and store key file in a temporary directory
(migrated, because opening the store checks its keys), thrown away after.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import StoreSettings
from gateway.settings import Settings

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"


def render() -> str:
    from gateway.http.app import create_app
    from gateway.runtime import Runtime

    with tempfile.TemporaryDirectory() as scratch:
        settings = Settings(
            database_url=f"sqlite:///{scratch}/openapi.db",
            store=StoreSettings(key_file=f"{scratch}/store-keys.json"),
        )
        runtime = Runtime.create(settings)
        try:
            schema: dict[str, Any] = create_app(runtime).openapi()
        finally:
            runtime.close()
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--output", type=Path, default=DEFAULT_PATH, help="file to write ('-' for stdout)")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs from the app")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date: run python -m gateway.http.export_openapi", file=sys.stderr)
            return 1
        return 0
    if str(args.output) == "-":
        sys.stdout.write(text)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

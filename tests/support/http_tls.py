"""One default TLS client context for every httpx client the suite builds.

Why: httpx makes a new ``ssl.SSLContext`` for each ``httpx.Client`` and each
module-level ``httpx.get``/``httpx.post``, and loading certifi's CA bundle into
it costs more CPU than the loopback request that follows.  The suite builds
such clients hundreds of times, all for plain ``http://127.0.0.1`` URLs.  A
verifying context holds no per-connection state, so one shared copy verifies
exactly as a fresh one would; clients given their own ``verify=`` context or a
client certificate (``cert=``) still get their own.
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx
from httpx._transports import default as _transport

_create = httpx.create_ssl_context
_shared: ssl.SSLContext | None = None


def _create_or_share(verify: Any = True, cert: Any = None, trust_env: bool = True) -> ssl.SSLContext:
    global _shared
    if verify is True and cert is None and trust_env:
        if _shared is None:
            _shared = _create()
        return _shared
    return _create(verify=verify, cert=cert, trust_env=trust_env)


def share_default_tls_context() -> None:
    """Install the shared default (idempotent; called once per process by tests/conftest.py)."""
    _transport.create_ssl_context = _create_or_share  # type: ignore[attr-defined]  # what its transports call

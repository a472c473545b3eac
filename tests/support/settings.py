"""Settings for tests that send HL7 v2 without registering their senders first.

Since issue #16 an MLLP message is accepted only from a sender registered with
``carebridge senders add`` (gateway.sender_registry).  The tests of mapping,
journaling, ordering and delivery are not about who may send, so they run in
open mode -- ``CAREBRIDGE_MLLP_OPEN=true``, the demo setting -- and say so by
using these builders.  The sender check itself is tested with open mode off
(tests/mllp/test_senders.py, tests/gateway/test_sender_registry.py).
"""

from __future__ import annotations

from typing import Any

from common import MllpSettings
from gateway.settings import Settings

#: flat-name override for ``Settings.from_env``: accept any HL7 sender
OPEN_MLLP: dict[str, Any] = {"mllp_open": True}

#: the same for a ``carebridge serve`` subprocess
OPEN_MLLP_ENV: dict[str, str] = {"CAREBRIDGE_MLLP_OPEN": "true"}


def open_settings(**fields: Any) -> Settings:
    """``Settings(**fields)`` with open MLLP senders (the test sends HL7 from unregistered senders)."""
    return Settings(mllp=MllpSettings(open=True), **fields)

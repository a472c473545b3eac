"""``carebridge hl7 send|replay`` (being written: see gateway/mllp)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def register(commands: Any, add_database_url: Callable[[argparse.ArgumentParser], None]) -> None:
    hl7 = commands.add_parser("hl7", help="send or replay HL7 v2 messages")
    hl7.add_subparsers(dest="hl7_command", required=True)

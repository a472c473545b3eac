"""Runtime settings for the gateway: the one tree of :mod:`common.settings`, built once per command.

The names are a contract (DESIGN.md §2): ``CAREBRIDGE_DATABASE_URL`` and the
``CAREBRIDGE_`` prefix for everything else; command-line flags override the
environment.  Every ``carebridge`` command builds its settings with
:func:`settings_from` at its start and passes them (or one group of them) down.
"""

from __future__ import annotations

import argparse
from typing import Any

from common import Settings

__all__ = ["Settings", "settings_from"]


def settings_from(args: argparse.Namespace, **overrides: Any) -> Settings:
    """The environment's settings, then ``--database-url`` and ``overrides`` (flat names; None = unset)."""
    return Settings.from_env(None, database_url=getattr(args, "database_url", None), **overrides)

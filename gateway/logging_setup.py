"""Structured JSON logging (structlog) that never carries patient data.

Log lines carry ids (request id, message control id, resource ids), counts and
codes.  As a second line of defence a processor drops any event key that names
personal data and masks values that look like phone numbers, CCCD or BHYT
numbers, whatever key they hide under (ISO/IEC 27001 A.8.12, Decree 356 Art. 7).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_PHI_KEYS = frozenset(
    {
        "name",
        "family",
        "given",
        "phone",
        "telecom",
        "email",
        "address",
        "birthdate",
        "birth_date",
        "cccd",
        "bhyt",
        "identifier",
        "patient_name",
        "text",
        "raw",
        "body",
        "content",
        "resource",
    }
)
# +84/0-prefixed phones, 12-digit CCCD, 15-char BHYT (2 letters + 13 digits).
_PHI_PATTERNS = re.compile(r"(\+?84\d{8,10}|\b0\d{9,10}\b|\b\d{12}\b|\b[A-Z]{2}\d{13}\b)")


def drop_patient_data(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key.lower() in _PHI_KEYS:
            event_dict[key] = "[redacted]"
        elif isinstance(event_dict[key], str):
            event_dict[key] = _PHI_PATTERNS.sub("[redacted]", event_dict[key])
    return event_dict


def configure_logging(level: str = "INFO") -> None:
    numeric = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=numeric, force=True)
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            drop_patient_data,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)

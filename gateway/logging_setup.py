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
    """One JSON format for every line the process writes.

    structlog events render directly; records of the standard ``logging``
    module (uvicorn, alembic, asyncio, SQLAlchemy, our own stdlib loggers) go
    through a :class:`structlog.stdlib.ProcessorFormatter` with the same
    processors, so they are JSON too and pass :func:`drop_patient_data` --
    a log shipper (and the no-PHI test) can rely on every line being an
    object.  Exceptions are rendered *before* the PHI processor so that a
    traceback quoting a bound parameter is masked as well.
    """
    numeric = getattr(logging, level.upper(), logging.INFO)
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.add_log_level,
                stamp,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                drop_patient_data,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    logging.basicConfig(handlers=[handler], level=numeric, force=True)
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            stamp,
            structlog.processors.format_exc_info,
            drop_patient_data,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)

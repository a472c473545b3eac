"""Complexity limits of one search and the statement timeouts of the request path (issue #17).

Why: a search is compiled to one SQL statement whose cost grows with the number of
parameters and values, and a handful of costly statements can hold every pooled
connection.  Each limit is checked on the parsed parameters before any SQL is built
and refused with 400 ``too-costly`` naming its setting (``CAREBRIDGE_SEARCH_*``);
FHIR leaves such limits to the server (https://hl7.org/fhir/R4/search.html#errors:
"the server SHOULD return an error" for a search it cannot process).  What still runs
long on PostgreSQL is cancelled by ``statement_timeout``
(https://www.postgresql.org/docs/current/runtime-config-client.html) and answered
503 ``timeout`` (:func:`translate_timeout`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy.exc import DBAPIError

from common import DatabaseTimeout, SearchSettings, TooCostly

#: SQLSTATE of a statement cancelled by statement_timeout (or a cancel request).
QUERY_CANCELED = "57014"
_INCLUDES = ("_include", "_revinclude")


def check_search_limits(params: Sequence[tuple[str, str]], limits: SearchSettings) -> None:
    """Refuse ``params`` beyond ``limits`` with a 400 naming the limit (before any SQL)."""
    if len(params) > limits.max_parameters:
        raise TooCostly(
            f"a search may carry at most {limits.max_parameters} parameters, this one has {len(params)} "
            "(limit search_max_parameters)",
            location="search_max_parameters",
        )
    chars = sum(len(name) + len(value) for name, value in params)
    if chars > limits.max_query_chars:
        raise TooCostly(
            f"a search may be at most {limits.max_query_chars} characters long, this one has {chars} "
            "(limit search_max_query_chars)",
            location="search_max_query_chars",
        )
    includes = sum(1 for name, _ in params if name.partition(":")[0] in _INCLUDES)
    if includes > limits.max_includes:
        raise TooCostly(
            f"a search may carry at most {limits.max_includes} _include/_revinclude parameters, "
            f"this one has {includes} (limit search_max_includes)",
            location="search_max_includes",
        )
    for name, value in params:
        values = value.count(",") + 1
        if values > limits.max_values:
            raise TooCostly(
                f"'{name.partition(':')[0]}' may carry at most {limits.max_values} comma-separated values, "
                f"this one has {values} (limit search_max_values)",
                location="search_max_values",
            )


def is_statement_timeout(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) == QUERY_CANCELED


def timeout_error(timeout_ms: int, setting: str) -> DatabaseTimeout:
    hint = "narrow the search or retry later" if setting.startswith("search") else "retry later"
    return DatabaseTimeout(
        f"the database did not answer within {timeout_ms} ms (limit {setting}); {hint}", location=setting
    )


@contextmanager
def translate_timeout(timeout_ms: int, setting: str = "search_statement_timeout_ms") -> Iterator[None]:
    """Turn a statement cancelled by ``statement_timeout`` into :class:`DatabaseTimeout` (503)."""
    try:
        yield
    except DBAPIError as exc:
        if not is_statement_timeout(exc):
            raise
        raise timeout_error(timeout_ms, setting) from None

"""Rewriting references inside resources being written (transaction ``urn:uuid`` and merges).

FHIR transaction processing (https://hl7.org/fhir/R4/http.html#trules) replaces
every reference to an entry's ``fullUrl`` with the id it resolved to; a merge
repoints references from the retired Patient to the survivor.  Also what makes
a new version: content without the server-set meta fields.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

# A "reference" key with a string value, in orjson's compact output.  Inside a JSON string
# every quote is escaped, so an unescaped `{"reference":"` or `,"reference":"` is always a key.
_REFERENCE = re.compile(rb'([{,]"reference":)("(?:[^"\\]|\\.)*")')


def rewrite_references(node: Any, url_map: dict[str, str], unresolved: list[str] | None = None) -> Any:
    """A deep copy of ``node`` with references found in ``url_map`` replaced.

    One pass does all three jobs a write needs: the copy (the caller's resource
    stays untouched), the rewrite, and -- when ``unresolved`` is given -- noting
    ``urn:uuid:`` references that no entry of the Bundle defines.  It works on
    the serialized form (orjson, C speed) instead of walking the tree in Python:
    this runs for every resource of every write.  ``node`` is JSON data (parsed
    request bodies, mapper output, stored content).
    """
    raw = orjson.dumps(node)
    if b'"reference":"' not in raw:
        return orjson.loads(raw)

    def rewrite(match: re.Match[bytes]) -> bytes:
        value = orjson.loads(match.group(2))
        if value in url_map:
            return match.group(1) + orjson.dumps(url_map[value])
        if unresolved is not None and value.startswith("urn:uuid:"):
            unresolved.append(value)
        return match.group(0)

    return orjson.loads(_REFERENCE.sub(rewrite, raw))


def without_meta(resource: dict[str, Any]) -> bytes:
    """Content that makes a new version: everything but the id and the server-set meta fields.

    Security labels, tags and profiles in ``meta`` are content (a restriction label must
    produce a new version); ``versionId``/``lastUpdated`` are not.
    """
    meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    body = {k: v for k, v in resource.items() if k not in ("meta", "id")}
    if meta:
        body["meta"] = meta
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)

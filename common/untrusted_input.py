"""Rules every untrusted text or JSON document passes before anything parses it deeply or stores it.

- **No NUL.** U+0000 is legal in a JSON string (RFC 8259 §7, ``\\u0000``) and in
  a percent-encoded URL (``%00``), but PostgreSQL ``text`` cannot hold it
  (https://www.postgresql.org/docs/current/datatype-character.html) while
  SQLite stores it: the same input would be a 500 on one backend and stored on
  the other.  No FHIR string may contain it either (FHIR R4 datatypes.html#string:
  no control characters other than tab, CR and LF), nor may an HL7 v2 field.
  So it is refused everywhere, as a 400 naming the element.
- **Bounded nesting.** A JSON document nested hundreds of levels deep (extensions
  of extensions) exhausts the Python stack in the validator and the index walk
  (``RecursionError``).  The depth is measured on the bytes, without recursion
  and without parsing: string literals are removed, then every other byte but
  brackets, then innermost ``{}``/``[]`` pairs one level per pass, at most
  ``max_depth + 1`` passes over a string that is a fraction of the body.

Both checks are cheap on the common path (a byte search; a skeleton shorter
than twice the limit cannot be too deep) and only parse the body to *name* the
offending element once a violation is certain.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from common.errors import InvalidInput

NUL = "\x00"
_ESCAPED_NUL = b"\\u0000"
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_EMPTY_PAIR = re.compile(rb"\{\}|\[\]")


def refuse_nul(text: str, location: str) -> None:
    """A 400 at ``location`` when ``text`` holds a NUL."""
    if NUL in text:
        raise InvalidInput("NUL (U+0000) is not allowed in any value", location=location)


def json_depth_exceeds(body: bytes, max_depth: int) -> bool:
    """True when the JSON text nests arrays/objects deeper than ``max_depth`` (module docstring)."""
    skeleton = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    if len(skeleton) <= 2 * max_depth:
        return False
    for _ in range(max_depth):
        skeleton, removed = _EMPTY_PAIR.subn(b"", skeleton)
        if not skeleton or not removed:  # done, or unbalanced: the parser will say so
            return False
    return bool(skeleton)


def _walk(document: Any, root: str) -> Any:
    """Yield ``(path, depth, value)`` for every node, iteratively (no recursion to exhaust)."""
    stack: list[tuple[str, int, Any]] = [(root, 1, document)]
    while stack:
        path, depth, node = stack.pop()
        yield path, depth, node
        if isinstance(node, dict):
            for key, value in reversed(node.items()):
                stack.append((f"{path}.{key}" if path else str(key), depth + 1, value))
        elif isinstance(node, list):
            for index in range(len(node) - 1, -1, -1):
                stack.append((f"{path}[{index}]", depth + 1, node[index]))


def _root(document: Any) -> str:
    kind = document.get("resourceType") if isinstance(document, dict) else None
    return kind if isinstance(kind, str) and kind.isalnum() else ""


def check_json_body(body: bytes, max_depth: int) -> None:
    """Refuse a NUL anywhere in a JSON body, or nesting deeper than ``max_depth``, naming the element.

    A body that is not valid JSON passes: its parser answers with its own 400.
    """
    too_deep = json_depth_exceeds(body, max_depth)
    if not too_deep and _ESCAPED_NUL not in body:
        return
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        if too_deep:  # deeper than the parser's own limit
            raise InvalidInput(f"JSON nested deeper than {max_depth} levels", location="body") from None
        return
    root = _root(document)
    for path, depth, node in _walk(document, root):
        if depth > max_depth and isinstance(node, dict | list):
            raise InvalidInput(f"JSON nested deeper than {max_depth} levels", location=path or "body")
        if isinstance(node, str) and NUL in node:
            refuse_nul(node, path or "body")
        if isinstance(node, dict):
            for key in node:
                refuse_nul(key, f"{path}.{key!r}" if path else repr(key))

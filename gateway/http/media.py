"""Content negotiation for the FHIR JSON media type.

FHIR R4 defines ``application/fhir+json`` (https://hl7.org/fhir/R4/http.html#mime-type);
plain ``application/json`` is accepted as well because generic HTTP clients send
it.  ``_format`` overrides ``Accept`` (https://hl7.org/fhir/R4/http.html#parameters).
Only JSON is implemented: asking for anything else is a 406, sending anything
else on a write is a 415.
"""

from __future__ import annotations

from starlette.datastructures import Headers, QueryParams

from common import CarebridgeError, UnsupportedMediaType

FHIR_JSON = "application/fhir+json"
FHIR_JSON_UTF8 = "application/fhir+json; charset=utf-8"
FORM = "application/x-www-form-urlencoded"

# Types a JSON body may be declared as (the DSTU2 form ``application/json+fhir`` too).
_JSON_TYPES = frozenset({FHIR_JSON, "application/json", "application/json+fhir"})
_FORMAT_ALIASES = frozenset({"json", *_JSON_TYPES})
_ACCEPTABLE = frozenset({*_JSON_TYPES, "*/*", "application/*"})
_ZERO_Q = frozenset({"q=0", "q=0.0", "q=0.00", "q=0.000"})


class NotAcceptable(CarebridgeError):
    """The client accepts no representation we produce (RFC 9110 §15.5.7)."""

    http_status = 406
    issue_code = "not-supported"


def _media_type(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def negotiate(headers: Headers, query: QueryParams) -> None:
    """Raise :class:`NotAcceptable` unless the response may be FHIR JSON."""
    fmt = query.get("_format")
    if fmt is not None:
        if _media_type(fmt) not in _FORMAT_ALIASES:
            raise NotAcceptable(f"_format '{fmt}' is not supported; use json", location="_format")
        return
    accept = headers.get("accept")
    if not accept:
        return
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        if media.lower() in _ACCEPTABLE and not any(p.replace(" ", "") in _ZERO_Q for p in params):
            return
    raise NotAcceptable("only application/fhir+json is produced", location="Accept")


def require_json(headers: Headers) -> None:
    """Writes must carry FHIR JSON; a missing Content-Type is read as JSON (lenient)."""
    content_type = headers.get("content-type")
    if content_type is not None and _media_type(content_type) not in _JSON_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type '{_media_type(content_type)}' is not supported; send application/fhir+json",
            location="Content-Type",
        )


def require_form(headers: Headers) -> None:
    """``POST [type]/_search`` carries its parameters as a form (https://hl7.org/fhir/R4/http.html#search)."""
    content_type = headers.get("content-type")
    if content_type is not None and _media_type(content_type) != FORM:
        raise UnsupportedMediaType(f"POST _search needs {FORM}", location="Content-Type")

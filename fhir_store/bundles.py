"""Translating FHIR batch/transaction Bundle entries into store operations.

Shared by the REST ``POST /fhir`` endpoint and the HL7 ingest path (mappers
emit a transaction Bundle), so both channels go through exactly the same
conditional-create / conditional-update / ``urn:uuid`` semantics
(https://hl7.org/fhir/R4/http.html#transaction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from common import InvalidInput, MethodNotAllowed
from fhir_store.model import (
    ConditionalDelete,
    ConditionalUpdate,
    Create,
    Delete,
    MergePatients,
    Operation,
    UnlinkPatients,
    Update,
)


@dataclass(frozen=True)
class ReadEntry:
    """A GET entry of a batch/transaction: served after the writes."""

    url: str


def _identifier_param(parameters: dict[str, Any], name: str) -> tuple[str, str]:
    for param in parameters.get("parameter") or []:
        if param.get("name") == name:
            ident = param.get("valueIdentifier") or {}
            if ident.get("value"):
                return str(ident.get("system", "")), str(ident["value"])
    raise InvalidInput(f"Patient/$merge needs parameter '{name}' with a valueIdentifier", location=name)


def entry_operation(entry: dict[str, Any], index: int) -> Operation | ReadEntry:
    """One Bundle entry → one operation; errors name ``Bundle.entry[i]...``."""
    where = f"Bundle.entry[{index}]"
    request = entry.get("request")
    if not isinstance(request, dict) or not request.get("method") or not request.get("url"):
        raise InvalidInput("entry needs request.method and request.url", location=f"{where}.request")
    method = str(request["method"]).upper()
    url = str(request["url"]).lstrip("/")
    path, _, query = url.partition("?")
    segments = [s for s in urlsplit(path).path.split("/") if s]
    resource = entry.get("resource")
    full_url = entry.get("fullUrl")
    if method == "GET":
        return ReadEntry(url)
    if not segments:
        raise InvalidInput(f"cannot {method} '{url}'", location=f"{where}.request.url")
    resource_type = segments[0]
    if method == "POST" and segments == ["Patient", "$merge"]:
        if not isinstance(resource, dict) or resource.get("resourceType") != "Parameters":
            raise InvalidInput("Patient/$merge needs a Parameters resource", location=f"{where}.resource")
        return MergePatients(
            _identifier_param(resource, "source-patient-identifier"),
            _identifier_param(resource, "target-patient-identifier"),
        )
    if method == "POST" and segments == ["Patient", "$unlink"]:
        if not isinstance(resource, dict) or resource.get("resourceType") != "Parameters":
            raise InvalidInput("Patient/$unlink needs a Parameters resource", location=f"{where}.resource")
        return UnlinkPatients(
            _identifier_param(resource, "patient-identifier"),
            _identifier_param(resource, "other-patient-identifier"),
        )
    if method in ("POST", "PUT") and not isinstance(resource, dict):
        raise InvalidInput(f"{method} entry needs a resource", location=f"{where}.resource")
    assert resource is None or isinstance(resource, dict)
    if method == "POST":
        if resource is None or resource.get("resourceType") != resource_type:
            raise InvalidInput(
                "resource type does not match request.url", location=f"{where}.resource.resourceType"
            )
        return Create(resource, if_none_exist=request.get("ifNoneExist"), full_url=full_url)
    if method == "PUT" and resource is not None:
        if len(segments) == 2:
            return Update(
                resource_type, segments[1], resource, if_match=request.get("ifMatch"), full_url=full_url
            )
        if query:
            return ConditionalUpdate(resource_type, query, resource, full_url=full_url)
        raise InvalidInput("PUT needs an id or search criteria", location=f"{where}.request.url")
    if method == "DELETE":
        if len(segments) == 2:
            return Delete(resource_type, segments[1])
        if query:
            return ConditionalDelete(resource_type, query)
        raise InvalidInput("DELETE needs an id or search criteria", location=f"{where}.request.url")
    raise MethodNotAllowed(
        f"method {method} is not supported in a Bundle", location=f"{where}.request.method"
    )


def bundle_operations(bundle: dict[str, Any]) -> tuple[str, list[Operation | ReadEntry]]:
    """Return the bundle type (``batch``/``transaction``) and one item per entry."""
    if bundle.get("resourceType") != "Bundle":
        raise InvalidInput("expected a Bundle", location="resourceType")
    bundle_type = bundle.get("type")
    if bundle_type not in ("batch", "transaction"):
        raise InvalidInput("Bundle.type must be batch or transaction", location="Bundle.type")
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise InvalidInput("Bundle.entry must be a list", location="Bundle.entry")
    return str(bundle_type), [entry_operation(e, i) for i, e in enumerate(entries)]

"""Search-parameter registry and index extraction.

Each supported search parameter (https://hl7.org/fhir/R4/searchparameter-registry.html)
is declared once here with its kind and the element paths it reads; the same
declaration drives both index extraction on write and query compilation on
search, and the CapabilityStatement lists exactly these.  Paths are simple
dotted element paths (a tiny subset of FHIRPath) with an optional filter on
``ContactPoint.system``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from fhir_store.blind_rows import PERSONAL_DATES, date_rows, string_rows
from fhir_store.instants import parse_fhir_instant_range

ParamKind = Literal["token", "string", "date", "reference"]


@dataclass(frozen=True)
class SearchParam:
    name: str
    kind: ParamKind
    paths: tuple[str, ...]
    # Only for reference params: resource types the reference may point to.
    targets: tuple[str, ...] = ()
    # Only for telecom tokens: restrict to ContactPoint.system values.
    telecom_systems: tuple[str, ...] = ()
    contact_point: bool = False
    documentation: str = ""
    # ``paths`` split on "." once, for index extraction on every write
    split_paths: tuple[tuple[str, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "split_paths", tuple(tuple(path.split(".")) for path in self.paths))

    @property
    def blinded(self) -> bool:
        """Values indexed as keyed hashes (business identifiers, phone, e-mail): exact match only.

        Decided by kind, not declared per parameter, so a package registering a
        new resource type cannot forget it (the claim table blinds every
        identifier, and ``identifier=`` lookups must blind the same way).
        """
        return self.contact_point or self.name == "identifier"

    @property
    def personal_date(self) -> bool:
        """A date that is personal data (a birth date): indexed as keyed hashes, year in clear.

        Decided by the element read, like :attr:`blinded`, so a new resource type
        indexing ``birthDate`` is covered without declaring it (``fhir_store.blind_text``).
        """
        return self.kind == "date" and any(parts[-1] in PERSONAL_DATES for parts in self.split_paths)


@dataclass(frozen=True)
class ResourceSearchSpec:
    resource_type: str
    params: dict[str, SearchParam] = field(default_factory=dict)
    sortable: dict[str, str] = field(default_factory=dict)  # _sort name -> date param name
    includes: dict[str, str] = field(default_factory=dict)  # "Type:param" -> target type


TAG = SearchParam(
    "_tag",
    "token",
    ("meta.tag",),
    documentation="Tags in Resource.meta.tag, e.g. "
    "https://fhir.carebridge.vn/CodeSystem/patient-status|possible-duplicate",
)
"""The common ``_tag`` parameter (https://hl7.org/fhir/R4/search.html#tag)."""


def _spec(
    resource_type: str, *params: SearchParam, sortable: dict[str, str] | None = None
) -> ResourceSearchSpec:
    return ResourceSearchSpec(resource_type, {p.name: p for p in (*params, TAG)}, sortable or {})


_NAME_PATHS = ("name.family", "name.given", "name.text", "name.prefix", "name.suffix")
_ADDRESS_PATHS = (
    "address.line",
    "address.city",
    "address.district",
    "address.state",
    "address.postalCode",
    "address.country",
    "address.text",
)

SEARCH_SPECS: dict[str, ResourceSearchSpec] = {
    "Patient": _spec(
        "Patient",
        SearchParam("identifier", "token", ("identifier",)),
        SearchParam("name", "string", _NAME_PATHS),
        SearchParam("family", "string", ("name.family",)),
        SearchParam("given", "string", ("name.given",)),
        SearchParam("birthdate", "date", ("birthDate",)),
        SearchParam("gender", "token", ("gender",)),
        SearchParam("phone", "token", ("telecom",), telecom_systems=("phone", "sms"), contact_point=True),
        SearchParam("email", "token", ("telecom",), telecom_systems=("email",), contact_point=True),
        SearchParam("telecom", "token", ("telecom",), contact_point=True),
        SearchParam("address", "string", _ADDRESS_PATHS),
        SearchParam("active", "token", ("active",)),
        SearchParam("link", "reference", ("link.other",), targets=("Patient",)),
        sortable={"birthdate": "birthdate"},
    ),
    "Encounter": _spec(
        "Encounter",
        SearchParam("identifier", "token", ("identifier",)),
        SearchParam("patient", "reference", ("subject",), targets=("Patient",)),
        SearchParam("subject", "reference", ("subject",), targets=("Patient",)),
        SearchParam("status", "token", ("status",)),
        SearchParam("date", "date", ("period",)),
        SearchParam("class", "token", ("class",)),
        sortable={"date": "date"},
    ),
    "Appointment": _spec(
        "Appointment",
        SearchParam("identifier", "token", ("identifier",)),
        SearchParam("patient", "reference", ("participant.actor",), targets=("Patient",)),
        SearchParam("actor", "reference", ("participant.actor",), targets=("Patient",)),
        SearchParam("date", "date", ("start",)),
        SearchParam("status", "token", ("status",)),
        sortable={"date": "date"},
    ),
}

# _include / _revinclude pairs supported: (source type, param) -> target type.
INCLUDES: dict[tuple[str, str], str] = {
    ("Encounter", "subject"): "Patient",
    ("Encounter", "patient"): "Patient",
    ("Appointment", "actor"): "Patient",
    ("Appointment", "patient"): "Patient",
}


def register(spec: ResourceSearchSpec) -> None:
    """Add a resource type's parameters; through ``fhir_store.registry.Registry.add_resource_type``."""
    SEARCH_SPECS[spec.resource_type] = spec


class _StripMarks(dict[int, int | None]):
    """``str.translate`` table: drops combining marks, folds Đ/đ (no NFD decomposition) to D/d.

    Filled on first sight of each code point, so translating runs in C after warm-up;
    the verdict is ``unicodedata.combining``'s, for every plane.  Only the Basic
    Multilingual Plane is remembered (at most 65,536 entries): a client sending
    every astral code point must not grow the table without bound.
    """

    def __missing__(self, code_point: int) -> int | None:
        mark = unicodedata.combining(chr(code_point)) != 0
        value = None if mark else _FOLDED.get(code_point, code_point)
        if code_point <= 0xFFFF:
            self[code_point] = value
        return value


_FOLDED = {ord("Đ"): ord("D"), ord("đ"): ord("d")}
_STRIP_MARKS = _StripMarks()


def normalize_text(value: str) -> str:
    """Case- and accent-insensitive form: "Nguyễn Đức" -> "nguyen duc"."""
    if value.isascii():
        return value.lower().strip()
    return unicodedata.normalize("NFD", value).translate(_STRIP_MARKS).lower().strip()


def collect_values(resource: dict[str, Any], parts: tuple[str, ...]) -> list[Any]:
    """The values at a split element path (lists flattened), as indexed."""
    out: list[Any] = []
    _collect(resource, parts, 0, out)
    return out


def _collect(node: Any, parts: tuple[str, ...], index: int, out: list[Any]) -> None:
    """Depth-first values at ``parts[index:]`` below ``node``; lists are flattened at every step."""
    if index == len(parts):
        if isinstance(node, list):
            out.extend(node)
        elif node is not None:
            out.append(node)
    elif isinstance(node, list):
        for item in node:
            _collect(item, parts, index, out)
    elif isinstance(node, dict):
        _collect(node.get(parts[index]), parts, index + 1, out)


@dataclass(frozen=True)
class IndexRows:
    tokens: list[tuple[str, str, str]]  # param, system, code
    strings: list[tuple[str, str, str]]  # param, keyed prefix or gram, keyed exact value
    dates: list[tuple[str, int, int]]  # param, low_us, high_us (year span for personal dates)
    references: list[tuple[str, str, str]]  # param, target_type, target_id


def _tokens_of(param: SearchParam, value: Any) -> Iterator[tuple[str, str]]:
    """(system, code) pairs of a code, Coding, CodeableConcept, Identifier or ContactPoint."""
    if isinstance(value, bool):
        yield "", "true" if value else "false"
    elif isinstance(value, str):
        yield "", value
    elif not isinstance(value, dict):
        return
    elif param.contact_point:
        if param.telecom_systems and value.get("system") not in param.telecom_systems:
            return
        if value.get("value"):
            yield "", value["value"]
    elif "coding" in value:
        for coding in value.get("coding") or []:
            if coding.get("code"):
                yield coding.get("system", ""), coding["code"]
    elif value.get("code"):
        yield value.get("system", ""), value["code"]
    elif value.get("value"):
        yield value.get("system", ""), value["value"]


def _reference_of(value: Any) -> tuple[str, str] | None:
    if not isinstance(value, dict):
        return None
    ref = value.get("reference")
    if not isinstance(ref, str) or "/" not in ref:
        return None
    parts = ref.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    return parts[-2], parts[-1]


def extract_index_rows(resource: dict[str, Any], blind: Callable[[str], str]) -> IndexRows:
    """Compute the search-index rows of one resource version.

    ``blind`` (``StoreCipher.blind``) turns the codes of blinded parameters
    into keyed hashes: identifier and contact values never reach the index in
    clear; systems stay in clear.  Strings (names, addresses) and personal
    dates (birth dates) are indexed as keyed hashes too (``fhir_store.blind_text``).
    """
    rows = IndexRows([], [], [], [])
    spec = SEARCH_SPECS.get(resource.get("resourceType", ""))
    if spec is None:
        return rows
    reached: dict[tuple[str, ...], list[Any]] = {}  # "name.family" feeds name and family: walk it once
    normalized: dict[str, list[tuple[str, str]]] = {}  # value -> its keyed rows (name.family feeds 3 params)
    for param in spec.params.values():
        kind = param.kind
        for parts in param.split_paths:
            values = reached.get(parts)
            if values is None:
                values = reached[parts] = []
                _collect(resource, parts, 0, values)
            for value in values:
                if kind == "token":
                    for system, code in _tokens_of(param, value):
                        code = blind(code) if param.blinded else code[:255]
                        rows.tokens.append((param.name, system[:255], code))
                elif kind == "string":
                    if isinstance(value, str) and value.strip():
                        hashed = normalized.get(value)
                        if hashed is None:
                            hashed = normalized[value] = string_rows(
                                value, normalize_text(value)[:255], blind
                            )
                        rows.strings.extend((param.name, token, exact) for token, exact in hashed)
                elif kind == "date":
                    span = _date_span(value)
                    if span is not None and param.personal_date:
                        dates, tokens = date_rows(param.name, span[0], span[1], blind)
                        rows.dates.extend(dates)
                        rows.tokens.extend(tokens)
                    elif span is not None:
                        rows.dates.append((param.name, span[0], span[1]))
                elif kind == "reference":
                    target = _reference_of(value)
                    if target is not None and (not param.targets or target[0] in param.targets):
                        rows.references.append((param.name, target[0], target[1]))
    return rows


def _date_span(value: Any) -> tuple[int, int] | None:
    if isinstance(value, str):
        return parse_fhir_instant_range(value)
    if isinstance(value, dict):  # Period
        start, end = value.get("start"), value.get("end")
        low = parse_fhir_instant_range(start)[0] if isinstance(start, str) else None
        high = parse_fhir_instant_range(end)[1] if isinstance(end, str) else None
        if low is None and high is None:
            return None
        return (low if low is not None else -(2**62), high if high is not None else 2**62)
    return None

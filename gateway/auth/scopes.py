"""SMART App Launch v2 scopes and carebridge roles: the deny-by-default permission model.

A request is allowed only when BOTH the token's granted scopes and the
client's role ceiling allow the interaction (least privilege, ISO/IEC 27001
A.5.15, A.8.2).  Scope grammar (https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html):
``<context>/<ResourceType|*>.<c r u d s>`` with context ``system``, ``user``
or ``patient``; SMART v1 ``.read``/``.write``/``.*`` are accepted and
translated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from common import Forbidden, InvalidInput

Interaction = Literal["c", "r", "u", "d", "s"]
CLINICAL_TYPES = ("Patient", "Encounter", "Appointment")

_V1 = {"read": "rs", "write": "cud", "*": "cruds"}


@dataclass(frozen=True)
class Scope:
    context: str  # system | user | patient
    resource_type: str  # a type or "*"
    permissions: frozenset[str]

    def allows(self, resource_type: str, interaction: str) -> bool:
        return self.resource_type in ("*", resource_type) and interaction in self.permissions

    def __str__(self) -> str:
        order = "cruds"
        return f"{self.context}/{self.resource_type}.{''.join(p for p in order if p in self.permissions)}"


def parse_scope(text: str) -> Scope | None:
    """Parse one SMART resource scope; ``None`` for non-resource scopes (openid, launch...)."""
    context, slash, rest = text.partition("/")
    if not slash or context not in ("system", "user", "patient"):
        return None
    resource_type, dot, perms = rest.partition(".")
    if not dot or not resource_type:
        raise InvalidInput(f"malformed scope '{text}'", location="scope")
    perms = perms.split("?", 1)[0]
    perms = _V1.get(perms, perms)
    if not perms or any(p not in "cruds" for p in perms):
        raise InvalidInput(f"malformed scope permissions in '{text}'", location="scope")
    return Scope(context, resource_type, frozenset(perms))


def parse_scopes(text: str) -> list[Scope]:
    return [s for s in (parse_scope(item) for item in text.split()) if s is not None]


# Role ceilings: the most a client of that role can ever be granted.
ROLE_CEILINGS: dict[str, tuple[str, ...]] = {
    "his_integration": (*(f"system/{t}.cruds" for t in CLINICAL_TYPES), "system/Consent.cruds"),
    "clinician": tuple(f"{ctx}/{t}.rs" for ctx in ("user", "system") for t in CLINICAL_TYPES),
    "compliance_officer": ("system/AuditEvent.rs", "user/AuditEvent.rs"),
    "crm": (),  # the CRM reaches only /crm/v1, never the FHIR API
    "admin": (),  # clients and settings via the CLI; no clinical data, never the audit trail's writes
    "patient": tuple(f"patient/{t}.rs" for t in CLINICAL_TYPES),
    # re-identification of CRM pseudonyms (issue #5), with a reason, audited; may read Consents;
    # manages patients' rights requests (issue #6) and reads their FHIR Tasks
    "privacy_officer": ("system/Consent.rs", "system/Task.rs", "user/Task.rs"),
}
ROLES = tuple(ROLE_CEILINGS)
# Channels outside FHIR that a role may use.
ROLE_CHANNELS: dict[str, frozenset[str]] = {
    "his_integration": frozenset({"fhir", "hl7"}),
    "clinician": frozenset({"fhir"}),
    "compliance_officer": frozenset({"fhir", "audit"}),
    "crm": frozenset({"crm"}),
    "admin": frozenset({"admin"}),
    "patient": frozenset({"fhir", "privacy"}),
    "privacy_officer": frozenset({"fhir", "reidentify", "privacy"}),
}


def ceiling(role: str) -> list[Scope]:
    return parse_scopes(" ".join(ROLE_CEILINGS.get(role, ())))


def grant(limit: list[Scope], requested: str | None) -> list[Scope]:
    """The requested scopes narrowed to ``limit`` (all of ``limit`` when nothing is requested)."""
    if not requested:
        return list(limit)
    granted: list[Scope] = []
    for scope in parse_scopes(requested):
        for cap in limit:
            if cap.context == scope.context and scope.resource_type in ("*", cap.resource_type):
                permissions = scope.permissions & cap.permissions
                if permissions:
                    granted.append(Scope(cap.context, cap.resource_type, permissions))
    return granted


def grantable(role: str, requested: str | None) -> list[Scope]:
    """Scopes a client of ``role`` may be registered with."""
    return grant(ceiling(role), requested)


def require(
    scopes: list[Scope], role: str, resource_type: str, interaction: Interaction
) -> Literal["system", "user", "patient"]:
    """Raise :class:`Forbidden` naming the missing scope; return the context that allowed it."""
    if "fhir" not in ROLE_CHANNELS.get(role, frozenset()):
        raise Forbidden(f"role '{role}' has no access to the FHIR API", location="scope")
    for scope in scopes:
        if scope.allows(resource_type, interaction) and any(
            c.context == scope.context and c.allows(resource_type, interaction) for c in ceiling(role)
        ):
            return scope.context  # type: ignore[return-value]
    wanted = f"system/{resource_type}.{interaction} (or user/ / patient/)"
    raise Forbidden(f"missing scope {wanted}", location="scope")


def require_channel(role: str, channel: str) -> None:
    if channel not in ROLE_CHANNELS.get(role, frozenset()):
        raise Forbidden(f"role '{role}' may not use the {channel} API", location="role")

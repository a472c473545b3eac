"""Annotated parameters the FHIR routers share: the acting client, the type and id path segments.

Declared once so every router documents and resolves them identically (the
OpenAPI document lists ``type`` with the registered resource types, see
:func:`gateway.http.app._openapi`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path

from fhir_store import RequestContext
from gateway.http.principal import fhir_context

RestContext = Annotated[RequestContext, Depends(fhir_context)]
TypeParam = Annotated[str, Path(alias="type", description="FHIR resource type")]
IdParam = Annotated[str, Path(alias="id", description="Logical id")]

"""``/docs``: Swagger UI served by carebridge itself, never from a CDN.

Why: hospital networks are often offline or filter the internet, where a page
loading its script from a CDN renders blank; and a page pulling third-party
script into an origin that holds bearer tokens hands that third party the
tokens (ISO/IEC 27001:2022 A.8.20, A.8.26 application security requirements).
The files come from the ``swagger-ui-bundle-v2`` package (the spec-first
project's build of Swagger UI 5, which renders OpenAPI 3.1) and are served under
``/docs/static``; the page references local URLs only and switches off the
online validator badge (``validatorUrl: null``).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

DOCS_PATH = "/docs"
STATIC_PATH = "/docs/static"


def install(app: FastAPI, title: str) -> None:
    """Add ``GET /docs`` and the Swagger UI files under ``/docs/static`` (not in the OpenAPI document)."""
    app.mount(STATIC_PATH, StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui")

    async def docs(request: Request) -> HTMLResponse:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{title} - API",
            swagger_js_url=f"{root}{STATIC_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{STATIC_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{STATIC_PATH}/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None},
        )

    app.add_api_route(DOCS_PATH, docs, methods=["GET"], include_in_schema=False)

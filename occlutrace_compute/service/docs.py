"""The API's documentation pages, `/docs` (Swagger UI) and `/redoc` (ReDoc), served from assets
shipped inside this package, so they work with no network (labs, hospitals, air-gapped clusters);
and the explicit operationIds that generated clients are named after.

The assets in `static/` are unmodified copies from npm, each folder with its licence:
`swagger-ui/` from `swagger-ui-dist` 5.36.0 (Apache-2.0, see its NOTICE) and `redoc/` from
`redoc` 2.5.4 (MIT). To update one, copy the same files from the newer npm package
(`npm pack swagger-ui-dist@X`) and change the versions here.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"
ASSETS_PATH = "/docs-assets"
SWAGGER_UI_VERSION = "5.36.0"
REDOC_VERSION = "2.5.4"


def operation_id(route: APIRoute) -> str:
    """`upload_file` -> `uploadFile`: the route's handler name in camelCase, stable and short,
    so that generated clients get `client.uploadFile(...)`, not `upload_file_v1_cases__case__files_post`."""
    head, *rest = route.name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def add_docs_routes(app: FastAPI) -> None:
    """`/docs`, `/redoc` and their assets under `/docs-assets/`; none is part of the API schema
    and none needs a token (they show the schema, which `/openapi.json` serves to anyone)."""
    if not app.openapi_url:
        return
    app.mount(ASSETS_PATH, StaticFiles(directory=STATIC_DIR), name="docs-assets")

    def base(request: Request) -> str:
        return request.scope.get("root_path", "").rstrip("/")  # behind a path-prefix ingress

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = base(request)
        return get_swagger_ui_html(
            openapi_url=root + (app.openapi_url or ""),
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/swagger-ui/favicon-32x32.png",
            oauth2_redirect_url=None,
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = base(request)
        return get_redoc_html(
            openapi_url=root + (app.openapi_url or ""),
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_PATH}/redoc/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_PATH}/swagger-ui/favicon-32x32.png",
            with_google_fonts=False,
        )

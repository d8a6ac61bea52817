"""HTTP-level errors in the envelope (never FastAPI's {"detail": ...}), the docs, /healthz."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.support import error_of

HOOK = "https://example.com/hook"
ONE_MIB = 1024 * 1024


async def create(client: httpx.AsyncClient) -> str:
    resp = await client.post("/api/webhooks", json={"url": HOOK, "events": ["post.created"]})
    assert resp.status_code == 201, resp.text
    return resp.json()["data"]["id"]  # type: ignore[no-any-return]


async def list_ids(client: httpx.AsyncClient) -> list[str]:
    resp = await client.get("/api/webhooks")
    assert resp.status_code == 200, resp.text
    return [w["id"] for w in resp.json()["data"]]


# --- 404 / 405 -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/nope",
        "/api",
        "/api/nope",
        "/api/webhooks/x/y",
        "/api/webhooks/x/secret/more",
        "/api/event-types/post",
    ],
)
async def test_unknown_route_is_404_envelope(service: Any, path: str) -> None:
    async with service.client(await service.new_key("alice")) as client:
        error = error_of(await client.get(path), 404)
    assert error["code"] == "not_found"


async def test_unknown_route_without_key_is_404_envelope(service: Any) -> None:
    async with service.client() as anon:
        error = error_of(await anon.post("/nope", json={}), 404)
    assert error["code"] == "not_found"


async def test_method_not_allowed_is_405_envelope(service: Any) -> None:
    async with service.client(await service.new_key("alice")) as client:
        webhook_id = await create(client)
        cases = [
            ("DELETE", "/api/webhooks", {"GET", "POST"}),
            ("PUT", "/api/webhooks", {"GET", "POST"}),
            ("POST", f"/api/webhooks/{webhook_id}", {"GET", "PUT", "PATCH", "DELETE"}),
            ("DELETE", f"/api/webhooks/{webhook_id}/secret", {"GET"}),
            ("GET", "/api/events", {"POST"}),
            ("POST", "/api/event-types", {"GET"}),
            ("POST", "/healthz", {"GET"}),
        ]
        for method, path, supported in cases:
            resp = await client.request(method, path)
            error = error_of(resp, 405)
            assert error["code"] == "method_not_allowed", (method, path)
            # Allow names every method served at the path, from all the routes there
            # (Starlette's own names the first matching route's only).
            allow = {m.strip() for m in resp.headers.get("allow", "").split(",") if m.strip()}
            assert allow == supported, (method, path, resp.headers)
        assert await list_ids(client) == [webhook_id]


async def test_trailing_slash_is_a_404_naming_the_route(service: Any) -> None:
    async with service.client(await service.new_key("alice")) as client:
        webhook_id = await create(client)
        for method, path in (
            ("GET", "/api/webhooks/"),
            ("POST", "/api/webhooks/"),
            ("DELETE", f"/api/webhooks/{webhook_id}/"),
        ):
            resp = await client.request(method, path, json={"url": HOOK})
            error = error_of(resp, 404)
            assert "location" not in resp.headers  # no redirect
            assert error["code"] == "not_found"
            assert f"did you mean {path.rstrip('/')} " in error["message"], error
        # No suggestion for a path that is wrong with or without the slash, nor for one
        # that does not serve the method either.
        for method, path in (("GET", "/api/nope/"), ("POST", "/healthz/")):
            error = error_of(await client.request(method, path), 404)
            assert "did you mean" not in error["message"], (method, path)
        assert await list_ids(client) == [webhook_id]  # nothing was created or deleted


# --- bodies: 413 / 415 / 400 --------------------------------------------------------------


def oversized_body() -> bytes:
    body = json.dumps({"url": HOOK, "events": ["post.created"], "description": "x" * ONE_MIB})
    assert len(body) > ONE_MIB
    return body.encode()


async def test_body_over_one_mib_is_413(service: Any) -> None:
    async with service.client(await service.new_key("alice")) as client:
        resp = await client.post(
            "/api/webhooks", content=oversized_body(), headers={"Content-Type": "application/json"}
        )
        error = error_of(resp, 413)
        assert error["code"] == "payload_too_large"
    # A new connection: the refused one may have been closed.
    async with service.client(await service.new_key("alice")) as client:
        webhook_id = await create(client)
        resp = await client.put(
            f"/api/webhooks/{webhook_id}",
            content=oversized_body(),
            headers={"Content-Type": "application/json"},
        )
        error_of(resp, 413)
    async with service.client(await service.new_key("alice")) as client:
        assert await list_ids(client) == [webhook_id]


async def test_chunked_body_over_one_mib_is_413(service: Any) -> None:
    body = oversized_body()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    async with service.client(await service.new_key("alice")) as client:
        resp = await client.post(
            "/api/webhooks", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert "content-length" not in resp.request.headers
        error = error_of(resp, 413)
    assert error["code"] == "payload_too_large"


async def test_body_just_under_the_limit_is_not_413(service: Any) -> None:
    async with service.client(await service.new_key("alice")) as client:
        prefix = json.dumps({"url": HOOK, "events": ["post.created"], "description": ""})
        filler = "y" * (ONE_MIB - len(prefix) - 1)
        body = json.dumps({"url": HOOK, "events": ["post.created"], "description": filler})
        assert len(body) <= ONE_MIB
        resp = await client.post(
            "/api/webhooks", content=body.encode(), headers={"Content-Type": "application/json"}
        )
        error = error_of(resp, 422)  # read and validated: the description is too long
    assert any(d.get("field") == "description" for d in error["details"]), error


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
async def test_non_json_body_is_415(service: Any, content_type: str | None) -> None:
    valid = json.dumps({"url": HOOK, "events": ["post.created"]}).encode()
    headers = {"Content-Type": content_type} if content_type else {}
    async with service.client(await service.new_key("alice")) as client:
        webhook_id = await create(client)
        for method, path in (
            ("POST", "/api/webhooks"),
            ("PUT", f"/api/webhooks/{webhook_id}"),
            ("PATCH", f"/api/webhooks/{webhook_id}"),
        ):
            resp = await client.request(method, path, content=valid, headers=headers)
            if content_type is None:
                assert "content-type" not in resp.request.headers
            error = error_of(resp, 415)
            assert error["code"] == "unsupported_media_type", (method, path)
        assert await list_ids(client) == [webhook_id]


@pytest.mark.parametrize(
    "raw",
    [b'{"url": ', b"{", b"{'url': 'x'}", b'{"url": "x",}', b'{"url": "x"} trailing', b"\xff\xfe"],
)
async def test_malformed_json_is_400(service: Any, raw: bytes) -> None:
    async with service.client(await service.new_key("alice")) as client:
        webhook_id = await create(client)
        for method, path in (("POST", "/api/webhooks"), ("PUT", f"/api/webhooks/{webhook_id}")):
            resp = await client.request(
                method, path, content=raw, headers={"Content-Type": "application/json"}
            )
            error = error_of(resp, 400)
            assert error["code"] == "malformed_json", (method, path)
        assert await list_ids(client) == [webhook_id]


async def test_malformed_json_is_refused_for_the_key_first(service: Any) -> None:
    # FastAPI parses JSON before any dependency runs; the key is still checked first,
    # so a caller without one learns nothing about how its body was read.
    raw, json_type = b"{", {"Content-Type": "application/json"}
    async with service.client() as anon:
        error = error_of(await anon.post("/api/webhooks", content=raw, headers=json_type), 401)
        assert error["code"] == "unauthorized"
        assert error_of(await anon.post("/api/events", content=raw, headers=json_type), 401)
    async with service.client("bhk_wrong_key") as wrong:
        error_of(await wrong.post("/api/webhooks", content=raw, headers=json_type), 401)
    async with service.client(await service.new_key("alice")) as alice:
        # /api/events is for admin keys: the 403 comes before the body's 400.
        error = error_of(await alice.post("/api/events", content=raw, headers=json_type), 403)
        assert error["code"] == "forbidden"
        error = error_of(await alice.post("/api/webhooks", content=raw, headers=json_type), 400)
        assert error["code"] == "malformed_json"
    async with service.client(await service.new_key("admin", admin=True)) as admin:
        error = error_of(await admin.post("/api/events", content=raw, headers=json_type), 400)
        assert error["code"] == "malformed_json"


async def test_json_with_charset_is_accepted(service: Any) -> None:
    body = json.dumps({"url": HOOK, "events": ["post.created"]}).encode()
    async with service.client(await service.new_key("alice")) as client:
        resp = await client.post(
            "/api/webhooks",
            content=body,
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
    assert resp.status_code == 201, resp.text


# --- OpenAPI and docs -----------------------------------------------------------------------


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        schema = spec["components"]["schemas"][name]
    return schema


def assert_error_envelope_schema(spec: dict[str, Any], response: dict[str, Any]) -> None:
    schema = resolve(spec, response["content"]["application/json"]["schema"])
    props = schema["properties"]
    assert {"success", "error"} <= set(props), schema
    assert "detail" not in props
    error = resolve(spec, props["error"])
    assert {"code", "message", "details"} <= set(error["properties"]), error


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op) for path, item in spec["paths"].items() for method, op in item.items()
    ]


@pytest.fixture
async def openapi(service: Any) -> dict[str, Any]:
    async with service.client() as anon:
        resp = await anon.get("/openapi.json")
    assert resp.status_code == 200, resp.text
    spec: dict[str, Any] = resp.json()
    return spec


async def test_openapi_documents_bearer_auth(openapi: dict[str, Any]) -> None:
    schemes = openapi["components"]["securitySchemes"]
    bearer = [
        name
        for name, s in schemes.items()
        if s.get("type") == "http" and s.get("scheme", "").lower() == "bearer"
    ]
    assert bearer, schemes
    for path, method, op in operations(openapi):
        if path.startswith("/api/"):
            names = {name for requirement in op.get("security", []) for name in requirement}
            assert names & set(bearer), (method, path)


async def test_openapi_has_the_webhook_paths(openapi: dict[str, Any]) -> None:
    paths = openapi["paths"]
    assert {"get", "post"} <= set(paths["/api/webhooks"])
    item = [p for p in paths if p.startswith("/api/webhooks/{") and p.count("/") == 3]
    assert len(item) == 1, paths.keys()
    assert {"get", "put", "patch", "delete"} <= set(paths[item[0]])
    assert "get" in paths[item[0] + "/secret"]
    assert "get" in paths["/api/event-types"]
    assert "get" in paths["/healthz"]
    assert "201" in paths["/api/webhooks"]["post"]["responses"]


async def test_openapi_documents_errors_with_the_envelope(openapi: dict[str, Any]) -> None:
    paths = openapi["paths"]
    item = next(p for p in paths if p.startswith("/api/webhooks/{") and p.count("/") == 3)
    for path in ("/api/webhooks", item, item + "/secret"):
        for method, op in paths[path].items():
            responses = op["responses"]
            assert "401" in responses, (method, path)
            error_codes = [c for c in responses if c[0] in "45"]
            for code in error_codes:
                assert_error_envelope_schema(openapi, responses[code])
            if path != "/api/webhooks":
                assert "404" in responses, (method, path)
    for method in ("post", "put", "patch"):
        path = "/api/webhooks" if method == "post" else item
        assert "422" in paths[path][method]["responses"], (method, path)
    schemas = openapi["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    for _path, _method, op in operations(openapi):
        for code, response in op["responses"].items():
            if code[0] in "45":
                assert_error_envelope_schema(openapi, response)


async def test_openapi_documents_401_on_every_api_route(openapi: dict[str, Any]) -> None:
    for path, method, op in operations(openapi):
        if path.startswith("/api/"):
            assert "401" in op["responses"], (method, path)
            assert_error_envelope_schema(openapi, op["responses"]["401"])


async def test_openapi_success_schemas_use_the_envelope(openapi: dict[str, Any]) -> None:
    for path, method, op in operations(openapi):
        ok = [c for c in op["responses"] if c.startswith("2")]
        assert ok, (method, path)
        content = op["responses"][ok[0]]["content"]
        if path == "/metrics":  # Prometheus's text format, the one answer not in JSON
            assert [c.split(";")[0] for c in content] == ["text/plain"]
            continue
        schema = resolve(openapi, content["application/json"]["schema"])
        assert "success" in schema["properties"], (method, path)


async def test_docs_page_is_html(service: Any) -> None:
    async with service.client() as anon:
        resp = await anon.get("/docs")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    assert "<html" in resp.text.lower()
    assert "openapi.json" in resp.text


async def test_healthz(service: Any) -> None:
    async with service.client() as anon:
        resp = await anon.get("/healthz")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["success"] is True
    assert body["data"]["status"] == "ok"
